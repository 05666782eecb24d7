"""Constrained decoding for `response_format` (json_object / json_schema) with xgrammar.

xgrammar compiles a JSON schema against the tokenizer's vocabulary once, then a per-sequence matcher
gives a bitmask of the tokens allowed next (about 0.2 ms per step on CPU for a 4k vocabulary). Masked
logits go to the ordinary sampler, so every sampling rule still applies inside the grammar. Output is
compact JSON (no free whitespace): small models otherwise spend their budget on blank space.

xgrammar lets raw control characters (U+0000-U+001F) through inside strings, which JSON forbids; compact
JSON never needs one, so tokens whose text contains one are masked too.

Compiling is the dangerous part: its cost grows much faster than the schema, so one hostile schema could
hold CPU and gigabytes for minutes. `GrammarCompiler` bounds it (see its docstring); plain requests never
touch any of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from backends.errors import Overloaded
from backends.hf.config import HFEngineConfig
from backends.hf.grammar_cache import GrammarCache
from backends.hf.grammar_process import NICENESS
from backends.hf.grammar_worker import CompileLimits, CompileWorker
from backends.hf.schema_check import PARAM, check_schema_refs, schema_text

JSON_OBJECT = {"type": "object"}
"""json_object mode (an empty schema) means "any JSON object", not any JSON value."""


class GrammarCompiler:
    """The grammars of one tokenizer's `response_format` requests.

    Made at backend start, where it costs nothing; `await constraints(schema, n)` per request; `close()` at
    shutdown. The first request builds xgrammar's tokenizer info and the json_object grammar, on a thread
    of its own (a fixed schema, a few milliseconds to compile; it is then shared by every json_object
    request, so those never wait behind other schemas), and starts the compiler processes in the background.
    Any other schema:

    1. is within the size and depth limits (`schema_check.schema_text`), or is a 400;
    2. is looked up in the cache, by its compact JSON text;
    3. else joins the compile of the same text already under way, or, once its `$ref`s resolve and it has a
       finite instance (`schema_check.check_schema_refs`, else a 400), starts one; one more than
       `grammar_compile_workers + grammar_compile_queue` distinct compiles at once is Overloaded (503,
       retry later: the queue is full of other people's schemas, and waiting longer helps no one);
    4. is tried in a `CompileWorker` process, within its CPU time, wall time and memory limits (past them:
       a 400, or Overloaded for wall time, which only a busy machine runs out of). When every request
       waiting for it has left (their clients went away), the trial is killed;
    5. passed, is compiled again here, on one of `grammar_compile_workers` threads at the compilers'
       lower CPU priority (grammar_worker.py says why a second compile beats moving the grammar).
    """

    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int], config: HFEngineConfig):
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        self._config = config
        self._setup_thread = ThreadPoolExecutor(1, thread_name_prefix="grammar-setup")
        self._compile_threads = ThreadPoolExecutor(config.grammar_compile_workers, thread_name_prefix="grammar",
                                                   initializer=_lower_priority)
        self._setup: Future | None = None
        self._cache = GrammarCache(config.grammar_cache_mb << 20)
        self._flights: dict[str, _Flight] = {}
        self._workers: list[CompileWorker] = []
        self._idle: asyncio.Queue[CompileWorker] | None = None
        self.num_compiles = 0
        """Trials started in a worker process (cache hits and joined compiles start none)."""

    @property
    def num_in_flight(self) -> int:
        """Distinct schemas compiling or waiting for a worker."""
        return len(self._flights)

    @property
    def worker_pids(self) -> list[int | None]:
        return [worker.pid for worker in self._workers]

    async def constraints(self, schema: dict, count: int) -> list[JsonConstraint]:
        """`count` fresh matchers for `schema` ({} means any JSON object); InvalidRequest for a schema that is
        bad or past a limit, Overloaded when too many others are compiling."""
        import xgrammar

        setup = await self._ready()
        self._pool()  # a server that sees response_format once will see a schema: start the workers now
        compiled = setup.json_object if not schema else await self._compiled(schema)
        return [JsonConstraint(xgrammar.GrammarMatcher(compiled), setup.banned) for _ in range(count)]

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
        self._setup_thread.shutdown(wait=False, cancel_futures=True)
        self._compile_threads.shutdown(wait=False, cancel_futures=True)

    async def _ready(self) -> _Setup:
        if self._setup is None:
            self._setup = self._setup_thread.submit(self._prepare)
        try:
            return await asyncio.shield(asyncio.wrap_future(self._setup))  # one leaving must not cancel it
        except Exception:
            self._setup = None  # not cached: the next request tries again
            raise

    def _prepare(self) -> _Setup:
        import xgrammar

        # Every end-of-sequence id is a stop token: otherwise xgrammar takes e.g. <|im_end|> for text
        # and lets it end the sequence in the middle of a JSON string.
        info = xgrammar.TokenizerInfo.from_huggingface(
            self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids
        )
        banned = torch.zeros(self._vocab_size, dtype=torch.bool)
        for token_id in range(min(len(self._tokenizer), self._vocab_size)):
            text = self._tokenizer.decode([token_id])
            if any(ord(ch) < 0x20 for ch in text):
                banned[token_id] = True
        # No xgrammar cache: ours is by schema text, in front of it.
        local = xgrammar.GrammarCompiler(info, max_threads=self._config.grammar_compile_threads, cache_enabled=False)
        json_object = local.compile_json_schema(json.dumps(JSON_OBJECT), any_whitespace=False)
        return _Setup(info.serialize_json(), local, banned, json_object)

    async def _compiled(self, schema):
        config = self._config
        text = schema_text(schema, config.grammar_max_schema_bytes, config.grammar_max_schema_depth)
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        flight = self._flights.get(text)
        if flight is None:
            check_schema_refs(schema)
            limit = config.grammar_compile_workers + config.grammar_compile_queue
            if len(self._flights) >= limit:
                raise Overloaded(f"{len(self._flights)} JSON schemas are already compiling or waiting to "
                                 f"(grammar_compile_workers={config.grammar_compile_workers}, "
                                 f"grammar_compile_queue={config.grammar_compile_queue}); retry later",
                                 param=PARAM)
            flight = self._flights[text] = _Flight(asyncio.ensure_future(self._compile(text)))
            flight.task.add_done_callback(lambda task: self._forget(text, task))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():  # everyone waiting for it has left
                flight.task.cancel()
                self._forget(text, flight.task)

    def _forget(self, text: str, task: asyncio.Task) -> None:
        flight = self._flights.get(text)
        if flight is not None and flight.task is task:
            del self._flights[text]

    async def _compile(self, text: str):
        idle = self._pool()
        worker = await idle.get()
        try:  # the worker stays taken until the compile here is done: workers bound both
            self.num_compiles += 1
            await worker.trial(text)
            local = self._setup.result().compiler
            compiled = await asyncio.wrap_future(
                self._compile_threads.submit(local.compile_json_schema, text, any_whitespace=False))
        finally:
            idle.put_nowait(worker)
        self._cache.put(text, compiled)
        return compiled

    def _pool(self) -> asyncio.Queue[CompileWorker]:
        """The worker processes, started at the first response_format request."""
        if self._idle is None:
            setup, config = self._setup.result(), self._config
            limits = CompileLimits(cpu_seconds=config.grammar_compile_timeout_s,
                                   memory_bytes=config.grammar_compile_memory_mb << 20,
                                   max_compiled_bytes=config.grammar_max_compiled_mb << 20,
                                   threads=config.grammar_compile_threads)
            self._workers = [CompileWorker(setup.info_json, limits)
                             for _ in range(config.grammar_compile_workers)]
            self._idle = asyncio.Queue()
            for worker in self._workers:
                worker.start()
                self._idle.put_nowait(worker)
        return self._idle


@dataclass
class _Flight:
    """One compile under way, and how many requests wait for it."""

    task: asyncio.Task
    waiters: int = 0


@dataclass(frozen=True)
class _Setup:
    info_json: str
    """The serialized xgrammar.TokenizerInfo, for the worker processes."""
    compiler: object
    """The xgrammar.GrammarCompiler here, for json_object and schemas that passed their trial."""
    banned: torch.Tensor
    """Tokens whose text has a control character (see the module docstring)."""
    json_object: object
    """The json_object mode's CompiledGrammar."""


def _lower_priority() -> None:
    """Linux gives each thread its own nice value: run this compile thread (and the threads xgrammar starts
    from it) at the worker processes' priority, so decoding still wins the CPU."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


class JsonConstraint:
    """One sequence's grammar state plus the tokens JSON text may never contain."""

    def __init__(self, matcher, banned: torch.Tensor):
        self.matcher = matcher
        self.banned = banned

    def accept_token(self, token_id: int) -> bool:
        return self.matcher.accept_token(token_id)

    def is_terminated(self) -> bool:
        return self.matcher.is_terminated()


def apply_grammar_masks(logits: torch.Tensor, constraints: list) -> torch.Tensor:
    """Set the logits of tokens a row's grammar forbids to -inf (rows with None are untouched)."""
    rows = [i for i, c in enumerate(constraints) if c is not None]
    if not rows:
        return logits
    import xgrammar

    vocab = logits.shape[-1]
    bitmask = xgrammar.allocate_token_bitmask(len(rows), vocab)
    for j, i in enumerate(rows):
        constraints[i].matcher.fill_next_token_bitmask(bitmask, j)
    masked = logits[rows].contiguous()
    xgrammar.apply_token_bitmask_inplace(masked, bitmask)
    banned = constraints[rows[0]].banned
    masked[:, : banned.shape[0]].masked_fill_(banned[:vocab], float("-inf"))
    logits = logits.clone()
    logits[rows] = masked
    return logits
