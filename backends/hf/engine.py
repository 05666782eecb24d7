"""The asyncio face of the engine: one queue per request, fed by a step loop on its own thread.

The step loop never runs on the event loop, so a forward pass does not stall HTTP handling. Requests
and aborts cross to the engine thread through a locked inbox; each step's outputs cross back in one
`call_soon_threadsafe` call. Closing a request's stream (client gone, task cancelled) aborts it, and the
engine drops it before its next step.

The engine thread also builds the engine (loads the model, prepares its weights): every torch call of
the engine runs on that one thread. Each thread that runs a parallel torch op gets its own OpenMP team,
and once a process has more OpenMP threads than CPUs, libgomp stops letting idle team threads spin and
puts them to sleep, so every op pays to wake them. Measured on 2 cores: a [32, 256] x [256, 256] matmul
took 34 us on the only team and 126-184 us on a second thread's; a server whose model was prepared on
another thread streamed 1,975 instead of 2,340 tok/s at concurrency 32.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable

from backends.errors import EngineDead, RequestFailed, TurnoutError
from backends.hf.core import EngineCore, SequenceOutput
from backends.hf.embedding_queue import EmbeddingQueue
from backends.hf.sequence import Sequence
from backends.types import BackendStats, OutputDelta

logger = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(self, setup: Callable[[], EngineCore]):
        self._setup = setup
        self.core: EngineCore | None = None
        """Built by `setup` on the engine thread; set once `start` has returned."""
        self._wakeup = threading.Condition()
        self._inbox: list[list[Sequence]] = []
        self._aborts: list[str] = []
        self._queues: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.error: BaseException | None = None
        self._ids = itertools.count()
        self.embeddings = EmbeddingQueue()
        """Embedding requests; the step loop runs one bounded batch of them between generation steps."""

    # Read by health checks and tests; plain ints, safe to read from any thread.
    @property
    def num_running(self) -> int:
        return self.core.scheduler.num_running

    @property
    def num_waiting(self) -> int:
        return self.core.scheduler.num_waiting

    @property
    def num_steps(self) -> int:
        return self.core.num_steps

    def stats(self) -> BackendStats:
        """Counters read without locking: each is one int or a thread-safe deque, good enough for gauges."""
        core = self.core
        queue_times = []
        while core.queue_times:
            queue_times.append(core.queue_times.popleft())
        return BackendStats(
            num_running=core.scheduler.num_running,
            num_waiting=core.scheduler.num_waiting + sum(len(seqs) for seqs in self._inbox),
            kv_cache_usage=core.scheduler.blocks.usage,
            # The step loop sleeps while idle, so the last step's count would otherwise linger.
            token_budget_usage=(core.last_step_tokens / core.scheduler.config.max_num_batched_tokens
                                if core.has_work() else 0.0),
            queue_times=queue_times,
            prefix_cache_queries=core.scheduler.blocks.stats.queries,
            prefix_cache_hits=core.scheduler.blocks.stats.hits,
            num_preemptions=core.scheduler.num_preemptions,
        )

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def dead(self) -> bool:
        """Failed for good: its step loop crashed or its thread is gone without being stopped. Only a
        restart of the process brings it back."""
        started = self._thread is not None and self.core is not None
        return self.error is not None or (started and not self._thread.is_alive() and not self._stopping)

    async def start(self) -> None:
        """Start the engine thread, which builds the core with `setup` and then runs the step loop; return
        once the core is built (raising what `setup` raised, if it failed)."""
        self._loop = asyncio.get_running_loop()
        built = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(built,), name="turnout-engine", daemon=True)
        self._thread.start()
        await built

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def generate(self, seqs: list[Sequence], num_choices: int | None = None) -> AsyncIterator[OutputDelta]:
        """Yield the deltas of one request (all its sequences, which end as `num_choices` finished
        choices, one per sequence by default); abort it if the consumer stops early."""
        if not self.alive:
            raise EngineDead(f"engine is not running: {self.error!r}")
        # Clients may reuse request ids (X-Request-Id); the engine keys requests by a unique one.
        request_id = f"{seqs[0].request_id}#{next(self._ids)}"
        for seq in seqs:
            seq.request_id = request_id
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = queue
        unfinished = num_choices or len(seqs)
        with self._wakeup:
            self._inbox.append(seqs)
            self._wakeup.notify()
        try:
            while unfinished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    unfinished -= 1
                yield item
        finally:
            self._queues.pop(request_id, None)
            if unfinished:
                self.abort(request_id)

    async def embed(self, inputs: list[list[int]], dimensions: int | None) -> list[list[float]]:
        """The inputs' normalised embeddings, computed on the engine thread in batches that alternate with
        generation steps (embedding_queue.py); leaving early drops the inputs not yet started."""
        if not self.alive:
            raise EngineDead(f"engine is not running: {self.error!r}")
        job = self.embeddings.submit(inputs, dimensions)
        with self._wakeup:
            self._wakeup.notify()
        try:
            return await job.future
        except TurnoutError:
            raise
        except Exception as exc:
            raise _request_error(exc) from exc
        finally:
            self.embeddings.cancel(job)

    def abort(self, request_id: str) -> None:
        with self._wakeup:
            self._aborts.append(request_id)
            self._wakeup.notify()

    def _run(self, built: asyncio.Future) -> None:
        try:
            self.core = self._setup()
        except BaseException as exc:
            self.error = exc
            self._loop.call_soon_threadsafe(_settle, built, exc)
            return
        self._loop.call_soon_threadsafe(_settle, built, None)
        try:
            while True:
                with self._wakeup:
                    while not (self._inbox or self._aborts or self.core.has_work() or self.embeddings.pending
                               or self._stopping):
                        self._wakeup.wait()
                    if self._stopping:
                        self.embeddings.fail_all(EngineDead("the engine was stopped"))
                        return
                    inbox, self._inbox = self._inbox, []
                    aborts, self._aborts = self._aborts, []
                for request_id in aborts:
                    self.core.abort(request_id)
                for seqs in inbox:
                    if seqs[0].request_id not in aborts:
                        self.core.add(seqs)
                outputs = self.core.step()
                failures = self.core.take_failures()
                if outputs or failures:
                    self._loop.call_soon_threadsafe(self._dispatch, outputs, failures)
                self.embeddings.run_batch()  # one bounded batch, then generation's next step
        except BaseException as exc:  # the engine is dead: fail every waiting request, loudly
            logger.exception("engine step loop crashed")
            self.error = exc
            self._loop.call_soon_threadsafe(self._fail_all, f"engine failed: {exc!r}")
            self.embeddings.fail_all(EngineDead(f"engine failed: {exc!r}"))

    def _dispatch(self, outputs: list[SequenceOutput], failures: list[tuple[str, Exception]]) -> None:
        for out in outputs:
            queue = self._queues.get(out.seq.request_id)
            if queue is not None:
                queue.put_nowait(out.delta)
        for request_id, error in failures:
            queue = self._queues.get(request_id)
            if queue is not None:
                queue.put_nowait(_request_error(error))

    def _fail_all(self, message: str) -> None:
        for queue in self._queues.values():
            queue.put_nowait(EngineDead(message))


def _request_error(error: Exception) -> TurnoutError:
    """What the client of a request that failed alone is told: the error itself when it is one of ours
    (a grammar the request's schema made, say), else a RequestFailed naming it."""
    if isinstance(error, TurnoutError):
        return error
    failed = RequestFailed(f"the request failed in the engine: {type(error).__name__}: {error}")
    failed.__cause__ = error
    return failed


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():  # the awaiting start() was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
