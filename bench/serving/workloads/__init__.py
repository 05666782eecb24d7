"""What a benchmark sends: a list of `Sample`s, each a prompt and how many tokens to ask for.

  random_lengths   prompts of a fixed or ranged token count cut from the corpus, fixed or ranged outputs
  shared_prefix    N prefixes x M suffixes: what prefix caching is for
  conversations    the first user turn of each conversation in a local JSONL (or JSON) file, ShareGPT's
                   format or OpenAI messages; the answer's length is the output length

`build_sets` makes one list per load level, each from fresh text, so no level is served from a cache the
level before filled (conversations repeat only when the file has too few).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    text: str
    """The prompt as text: what the chat endpoint sends, and the completions endpoint by default."""
    token_ids: list[int] | None
    """The prompt as token ids (sent to /v1/completions with --token-ids, so its length is exact)."""
    prompt_len: int
    """Its tokens by the model's tokenizer, special tokens not counted (the server's `usage` replaces it)."""
    output_len: int
    """max_tokens for this request."""

    def prompt(self, as_token_ids: bool) -> str | list[int]:
        return self.token_ids if as_token_ids and self.token_ids is not None else self.text


WORKLOADS = ("random", "shared-prefix", "conversations")


async def build_sets(options, tokenizer, num_sets: int, per_set: int) -> list[list[Sample]]:
    """`num_sets` lists of `per_set` samples for the workload `options.dataset` names."""
    from bench.serving.workloads import conversations, random_lengths, shared_prefix

    if options.dataset == "random":
        return await random_lengths.build_sets(options, tokenizer, num_sets, per_set)
    if options.dataset == "shared-prefix":
        return await shared_prefix.build_sets(options, tokenizer, num_sets, per_set)
    if options.dataset == "conversations":
        return await conversations.build_sets(options, tokenizer, num_sets, per_set)
    raise ValueError(f"unknown workload {options.dataset!r}; one of {WORKLOADS}")
