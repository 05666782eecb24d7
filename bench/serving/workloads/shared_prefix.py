"""`--num-prefixes` N prefixes of `--prefix-len` tokens, each followed by `--prompts-per-prefix` M distinct
suffixes of `--suffix-len` tokens: N x M prompts in a shuffled order (seeded). A server with prefix caching
computes each prefix once; one without computes it M times, which shows in TTFT and total throughput.
vLLM's `prefix_repetition` workload is the same shape (with random token ids instead of text).

Each load level gets its own prefixes, so a level does not find the previous level's prefixes cached. The
number of requests per level is N x M (`--num-prompts` is ignored for this workload)."""

from __future__ import annotations

import random

from bench.serving.workloads import Sample
from bench.serving.workloads.corpus import CorpusWindows


def per_set(options) -> int:
    return options.num_prefixes * options.prompts_per_prefix


async def build_sets(options, tokenizer, num_sets: int, _per_set: int) -> list[list[Sample]]:
    n, m = options.num_prefixes, options.prompts_per_prefix
    if n < 1 or m < 1:
        raise ValueError(f"--num-prefixes and --prompts-per-prefix must be >= 1, got {n} and {m}")
    needed = num_sets * n * (options.prefix_len + m * options.suffix_len)
    corpus = await CorpusWindows.tokenized_by(tokenizer, needed)
    rng = random.Random(options.seed)
    sets = []
    for _ in range(num_sets):
        samples = []
        for _ in range(n):
            prefix = corpus.take(options.prefix_len)
            for _ in range(m):
                ids = prefix + corpus.take(options.suffix_len)
                samples.append(Sample(await tokenizer.decode(ids), ids, len(ids), options.output_len))
        rng.shuffle(samples)
        sets.append(samples)
    return sets
