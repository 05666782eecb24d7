"""The synchronous engine: `step() = schedule() -> run() -> postprocess()`.

Runs on the engine thread only. Everything here is single-threaded; the asyncio side (engine.py) talks
to it through `add`, `abort` and `step` from that one thread.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from backends.detokenizer import IncrementalDetokenizer
from backends.errors import InvalidRequest
from backends.hf.beam_search import BeamGroup
from backends.hf.logprobs import prompt_logprobs, sampled_logprobs
from backends.hf.runner import ModelRunner, RunnerOutput
from backends.hf.sampler import Sampler
from backends.hf.scheduler import Scheduler, SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import FinishReason, OutputDelta, SamplingParams, TokenLogprob, Usage

logger = logging.getLogger(__name__)


class EngineBroken(Exception):
    """The engine cannot run a forward pass at all (not one request's fault): it is dead."""


@dataclass
class SequenceOutput:
    """One step's news for one sequence, addressed to its request."""

    seq: Sequence
    delta: OutputDelta


class EngineCore:
    def __init__(self, model, tokenizer, scheduler_config: SchedulerConfig, max_model_len: int,
                 eos_token_ids: list[int], pad_token_id: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = set(eos_token_ids)
        self.scheduler = Scheduler(scheduler_config)
        self.runner = ModelRunner(model, self.scheduler.blocks, pad_token_id)
        self.sampler = Sampler(eos_token_ids, ops=self.runner.ops)
        self.num_steps = 0
        self.last_step_tokens = 0
        """Tokens the last step computed (for the token-budget gauge); read from any thread."""
        self.queue_times: deque[float] = deque(maxlen=65536)
        """Seconds from arrival to first step of each newly scheduled sequence; the metrics reader pops
        them from the event loop thread (deque append/popleft are thread-safe). Bounded, so a server
        nobody scrapes does not grow; the oldest are dropped first."""
        self._by_request: dict[str, list[Sequence]] = {}
        self._token_texts: dict[int, str] = {}
        self.failures: list[tuple[str, Exception]] = []
        self._failed_this_step: set[str] = set()

    def add(self, seqs: list[Sequence]) -> None:
        try:
            params = seqs[0].sampling
            if params.use_beam_search:
                group = BeamGroup(seqs, sorted(self.eos_token_ids), params.max_tokens, params.length_penalty,
                                  params.early_stopping)
                for seq in seqs:
                    seq.beam_group = group
            for seq in seqs:
                seq.detokenizer = IncrementalDetokenizer(
                    self.tokenizer, seq.prompt_token_ids, seq.sampling.stop, seq.sampling.skip_special_tokens
                )
        except Exception as exc:
            self.failures.append((seqs[0].request_id, exc))
            return
        for seq in seqs:
            self.scheduler.add(seq)
        self._by_request.setdefault(seqs[0].request_id, []).extend(seqs)

    def abort(self, request_id: str) -> None:
        for seq in self._by_request.pop(request_id, []):
            seq.finish(FinishReason.ABORT)
            self._free(seq)

    def take_failures(self) -> list[tuple[str, Exception]]:
        """(request id, error) of each request that failed since the last call; the engine is rid of them."""
        failures, self.failures = self.failures, []
        return failures

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[SequenceOutput]:
        """One step. A fault while handling one request (an exception from its sampling, grammar, stop
        strings, beam search, or a forward that fails only with it in the batch) fails that request alone
        (`take_failures`); the rest of the batch goes on. Only a forward that fails with every sequence,
        and then with a plain probe token too, escapes as `EngineBroken`."""
        batch = self.scheduler.schedule()
        self._fail_unfittable()
        self.last_step_tokens = batch.total_tokens
        if not batch:
            return []
        self.runner.copy_blocks(batch.block_copies)
        now = time.monotonic()
        for seq in batch.sequences:
            if seq.num_computed_tokens == 0:  # its first step: it has waited since arrival
                self.queue_times.append(now - seq.arrival_time)
        ran = self._execute(batch.num_scheduled_tokens)
        self.scheduler.computed([seq for seq in batch.sequences if not seq.is_finished])
        self.num_steps += 1
        for seq, chunk_logits in ran.prompt_logits.items():
            with self._guard(seq):
                seq.prompt_logprobs.extend(prompt_logprobs(seq, chunk_logits, self._token_text))
        rows = [i for i, seq in enumerate(ran.due) if not seq.is_finished]
        if not rows:
            return []
        due = [ran.due[i] for i in rows]
        logits = ran.logits if len(rows) == len(ran.due) else ran.logits[rows]
        outputs: list[SequenceOutput] = []
        sampled_rows = [i for i, seq in enumerate(due) if seq.beam_group is None]
        if sampled_rows:
            sampled_logits = logits if len(sampled_rows) == len(due) else logits[sampled_rows]
            for seq, token, logprob in self._sample(sampled_logits, [due[i] for i in sampled_rows]):
                if not seq.is_finished:  # a sibling's failure may have failed its request meanwhile
                    with self._guard(seq):
                        outputs.append(self._postprocess(seq, token, logprob))
        for i, seq in enumerate(due):
            if seq.beam_group is not None and not seq.is_finished:
                with self._guard(seq):
                    if seq.beam_group.offer(seq, logits[i]):
                        outputs.extend(self._beam_step(seq.beam_group))
        return [out for out in outputs if out.seq.request_id not in self._failed_this_step]

    # -- fault isolation --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(self, seq: Sequence):
        """Run one sequence's part of the step; an exception fails its request instead of the step."""
        try:
            yield
        except Exception as exc:
            self._fail(seq.request_id, exc)

    def _fail(self, request_id: str, error: Exception) -> None:
        logger.error("request %s failed in the engine, the rest of the batch goes on: %s: %s",
                     request_id, type(error).__name__, error)
        self.failures.append((request_id, error))
        self._failed_this_step.add(request_id)
        self.abort(request_id)

    def _fail_unfittable(self) -> None:
        blocks = self.scheduler.blocks
        while self.scheduler.unfittable:
            seq = self.scheduler.unfittable.pop()
            if not seq.is_finished:
                self._fail(seq.request_id, InvalidRequest(
                    f"this request needs {len(seq.token_ids)} tokens of KV cache, more than the whole cache holds "
                    f"({blocks.num_tokens} tokens: raise --kv-cache-memory)", param="max_tokens"))

    def _execute(self, scheduled: dict[Sequence, int]) -> RunnerOutput:
        """The batch's forward; if it raises, each sequence again on its own, to fail only those that
        fail alone (their KV writes are redone by the retry, since positions are rewritten)."""
        self._failed_this_step = set()
        computed = {seq: seq.num_computed_tokens for seq in scheduled}
        try:
            return self.runner.execute(scheduled)
        except Exception as exc:
            batch_error = exc
        logger.warning("a forward over %d sequences failed (%s: %s); running each alone to find the cause",
                       len(scheduled), type(batch_error).__name__, batch_error)
        parts: list[RunnerOutput] = []
        for seq, count in scheduled.items():
            seq.num_computed_tokens = computed[seq]
            if seq.is_finished:  # its request already failed through a sibling
                continue
            try:
                parts.append(self.runner.execute({seq: count}))
            except Exception as exc:
                seq.num_computed_tokens = computed[seq]
                self._fail(seq.request_id, exc)
        if not parts and not self._forward_works():
            raise EngineBroken(f"every forward fails, a probe token's too: {batch_error!r}") from batch_error
        return RunnerOutput.merged(parts)

    def _forward_works(self) -> bool:
        """Whether a forward of one plain token still runs, in a spare block: when every sequence of a step
        failed alone, this tells requests that each failed on their own from an engine that cannot run."""
        blocks = self.scheduler.blocks
        probe = Sequence("probe", [self.runner.pad_token_id], SamplingParams(max_tokens=1))
        if not blocks.can_allocate(probe, 1):
            return True  # no spare block to probe with; the requests are the ones that failed
        blocks.allocate(probe, 1)
        probe.num_computed_tokens = 0
        try:
            self.runner.execute({probe: 1})
            return True
        except Exception:
            logger.exception("the engine cannot run a forward")
            return False
        finally:
            blocks.free(probe)

    def _sample(self, logits, seqs: list[Sequence]) -> list[tuple[Sequence, int, TokenLogprob | None]]:
        """The batch's next tokens and logprobs; if that raises, each row on its own (failing only those
        that fail alone)."""
        try:
            tokens = self.sampler(logits, seqs)
            return list(zip(seqs, tokens, sampled_logprobs(logits, seqs, tokens, self._token_text), strict=True))
        except Exception as exc:
            if len(seqs) == 1:
                self._fail(seqs[0].request_id, exc)
                return []
        chosen = []
        for row, seq in enumerate(seqs):
            if seq.is_finished:
                continue
            with self._guard(seq):
                row_logits = logits[row:row + 1]
                tokens = self.sampler(row_logits, [seq])
                chosen.append((seq, tokens[0], sampled_logprobs(row_logits, [seq], tokens, self._token_text)[0]))
        return chosen

    def _beam_step(self, group: BeamGroup) -> list[SequenceOutput]:
        """One lockstep of a beam group; when the search ends, its best beams are the request's choices."""
        sources = group.step()
        self.scheduler.blocks.fork(group.beams, [group.beams[i] for i in sources])
        if not group.done:
            return []
        first = group.beams[0]
        outputs = []
        for index, hypothesis in enumerate(group.results(first.sampling.n)):
            output_ids = hypothesis.token_ids[first.num_prompt_tokens:]
            reason = FinishReason.STOP if hypothesis.ended_with_eos else FinishReason.LENGTH
            text = self.tokenizer.decode(output_ids, skip_special_tokens=first.sampling.skip_special_tokens)
            delta = OutputDelta(index=index, token_ids=output_ids, text=text, finish_reason=reason,
                                usage=Usage(first.num_prompt_tokens, len(output_ids), first.num_cached_tokens),
                                cumulative_logprob=hypothesis.score)
            outputs.append(SequenceOutput(first, delta))
        for beam in group.beams:
            beam.finish(FinishReason.STOP)
            self._free(beam)
        self._by_request.pop(first.request_id, None)
        return outputs

    def _postprocess(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> SequenceOutput:
        seq.append_token(token)
        params = seq.sampling
        if seq.grammar is not None and not seq.grammar.is_terminated() and not seq.grammar.accept_token(token):
            # Only a grammar that allowed no token at all gets here (the mask was all -inf, so the sampler
            # picked an arbitrary one): stuck, it would repeat that token to max_tokens. That is the schema's
            # doing (one with no instance that the checks before compiling missed, such as a pattern nothing
            # matches), so the request's own 400, not a failure of the engine.
            raise InvalidRequest(f"response_format: the schema cannot be completed: its grammar allows no next "
                                 f"token after {seq.num_output_tokens - 1} tokens", param="response_format")
        if logprob is not None:
            seq.cumulative_logprob += logprob.logprob
        is_eos = token in self.eos_token_ids and not params.ignore_eos
        is_stop_token = token in params.stop_token_ids
        text = "" if (is_eos or is_stop_token) else seq.detokenizer.add_token(token)
        reason = None
        grammar_done = seq.grammar is not None and seq.grammar.is_terminated()
        if is_eos or is_stop_token or seq.detokenizer.stopped or grammar_done:
            reason = FinishReason.STOP
        elif seq.num_output_tokens >= params.max_tokens or len(seq.token_ids) >= self.max_model_len:
            reason = FinishReason.LENGTH
        delta = OutputDelta(index=seq.index, token_ids=[token], text=text,
                            logprobs=[logprob] if params.logprobs is not None else None)
        if seq.num_output_tokens == 1 and params.prompt_logprobs is not None:
            delta.prompt_logprobs = seq.prompt_logprobs
        if reason is not None:
            delta.text += seq.detokenizer.flush()
            delta.finish_reason = reason
            if reason is FinishReason.STOP and not is_eos:
                delta.stop_reason = token if is_stop_token else seq.detokenizer.matched_stop
            delta.usage = Usage(seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens)
            if logprob is not None:
                delta.cumulative_logprob = seq.cumulative_logprob
            seq.finish(reason)
            self._free(seq)
            siblings = self._by_request.get(seq.request_id, [])
            if all(s.is_finished for s in siblings):
                self._by_request.pop(seq.request_id, None)
        return SequenceOutput(seq, delta)

    def _token_text(self, token_id: int) -> str:
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def _free(self, seq: Sequence) -> None:
        self.scheduler.remove(seq)
        self.sampler.release(seq)
