"""Embedding requests waiting for the engine thread, and the bounded batches it runs them in.

The step loop (engine.py) runs one batch of pending embedding inputs between generation steps, so the two
alternate: a flood of embeddings delays each generation step by at most one batch, and generation never
holds embeddings back by more than one step. A batch is bounded like a generation step, by the token
budget (max_num_batched_tokens, counting the padding: rows x the longest row), and takes inputs first come
first served, across requests, so a request of 2,048 inputs runs in several batches with others' between.

Jobs are submitted and cancelled from the event loop, and taken from the engine thread, under one lock.
Results go back to each job's future through its loop's call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

from backends.hf.embedding import Embedder, normalized

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class EmbeddingJob:
    inputs: list[list[int]]
    dimensions: int | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    vectors: list[list[float]] = field(default_factory=list)
    """Finished vectors, in input order (inputs are taken in order)."""
    taken: int = 0
    """Inputs handed to batches so far."""
    cancelled: bool = False
    """Its caller went away: the engine drops what it has not started."""


class EmbeddingQueue:
    def __init__(self):
        self.embedder: Embedder | None = None
        """Set on the engine thread once the model is loaded (HFBackend's setup)."""
        self.max_batch_tokens = 2048
        self._jobs: deque[EmbeddingJob] = deque()
        self._lock = threading.Lock()

    def configure(self, embedder: Embedder, max_batch_tokens: int) -> None:
        self.embedder = embedder
        self.max_batch_tokens = max_batch_tokens

    @property
    def pending(self) -> bool:
        return bool(self._jobs)

    def submit(self, inputs: list[list[int]], dimensions: int | None) -> EmbeddingJob:
        loop = asyncio.get_running_loop()
        job = EmbeddingJob(inputs, dimensions, loop, loop.create_future())
        with self._lock:
            self._jobs.append(job)
        return job

    def cancel(self, job: EmbeddingJob) -> None:
        job.cancelled = True

    def _take_batch(self) -> list[tuple[EmbeddingJob, list[int]]]:
        """The next inputs, in order, while rows x longest row stays within the budget (at least one)."""
        batch: list[tuple[EmbeddingJob, list[int]]] = []
        longest = 0
        with self._lock:
            while self._jobs:
                job = self._jobs[0]
                if job.cancelled:
                    self._jobs.popleft()
                    continue
                ids = job.inputs[job.taken]
                wider = max(longest, len(ids))
                if batch and wider * (len(batch) + 1) > self.max_batch_tokens:
                    break
                batch.append((job, ids))
                longest = wider
                job.taken += 1
                if job.taken == len(job.inputs):
                    self._jobs.popleft()
        return batch

    def run_batch(self) -> None:
        """Embed one batch (engine thread). A failure fails the requests in the batch alone."""
        batch = self._take_batch()
        if not batch:
            return
        try:
            pooled = self.embedder([ids for _, ids in batch])
            start = 0
            while start < len(batch):  # each job's run of rows, normalised to its own dimensions
                job = batch[start][0]
                end = start
                while end < len(batch) and batch[end][0] is job:
                    end += 1
                job.vectors.extend(normalized(pooled[start:end], job.dimensions))
                if len(job.vectors) == len(job.inputs):
                    job.loop.call_soon_threadsafe(_settle, job.future, job.vectors, None)
                start = end
        except Exception as exc:
            logger.error("an embedding batch of %d inputs failed; its requests fail, the engine goes on: %s: %s",
                         len(batch), type(exc).__name__, exc)
            self._fail({job for job, _ in batch}, exc)

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting job (the engine stopped or died)."""
        with self._lock:
            jobs, self._jobs = set(self._jobs), deque()
        self._fail(jobs, error)

    def _fail(self, jobs: set[EmbeddingJob], error: BaseException) -> None:
        with self._lock:
            for job in jobs:
                job.cancelled = True  # its remaining inputs are dropped when they come up
        for job in jobs:
            job.loop.call_soon_threadsafe(_settle, job.future, None, error)


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
