"""One model's replicas behind the backend contract: pick a replica, retry before the first token, eject the
failing ones.

A `ModelPool` is itself a `Backend`, so the front ends stay unaware of replicas: they resolve a model name
to something with `info`, `tokenizer` and `generate`, and the pool does the rest.

Failure rules (the same for every backend kind):
- a request's token ids are checked against the model's vocabulary before any replica sees it;
- an error the *request* caused (`InvalidRequest`, `ModelNotFound`, `RequestFailed`: a fault it triggered
  inside the engine while its batch went on) is raised at once and never counts against the replica:
  another replica would fail it too, and a poison request must not move traffic or eject anything;
- an unexpected exception from a backend (not one of our error classes, nor an OS or timeout error) is
  a fault this request triggered too: it is raised as `RequestFailed`, and counts against nothing;
- any other error before the first delta (the replica's: `EngineDead`, `UpstreamError`, a connection
  or timeout error, ...) counts against the replica and the request moves on to the next replica, then
  to the fallback models, so a client sees a failure only when nothing could serve it;
- an error after the first delta of a streamed request cannot be retried (tokens were already sent): it
  counts against the replica and reaches the front end as `StreamInterrupted`, which streams turn into an
  error event. A buffered request (`GenerateRequest.buffered`: a non-streaming response) is collected
  whole from the replica first, so a failure at any point moves it to the next replica.
- passive ejection only moves traffic to where it can go. When every replica of a model and of its
  fallbacks is ejected, a request still goes to the ejected ones that pass their active health checks
  (like Envoy's panic mode), and a success ends that replica's ejection. Otherwise a single-replica model
  would answer 503 for `ejection_seconds` after a few transient failures, even once its upstream is fine.
  A replica that fails its active health check gets no traffic at all.

Replicas can join and leave while the pool serves (server/dns_replicas.py adds and retires them as a DNS
name's addresses change): a retired replica gets no new request, and its backend is closed once the last
request it had in flight has ended, so leaving drops nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, replace

from backends.base import Backend, Tokenizer
from backends.embeddings import EmbeddingRequest, EmbeddingResult
from backends.errors import (
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RequestFailed,
    StreamInterrupted,
    TurnoutError,
    Unavailable,
)
from backends.tokenizing import Tokenizing
from backends.types import BackendStats, GenerateRequest, ModelInfo, OutputDelta, ToolSupport
from backends.validation import check_request_token_ids, check_token_ids
from server.admission import DeadlineExceeded, Draining, sequences_per_prompt
from server.admission_queue import AdmissionQueue
from server.affinity_key import affinity_key
from server.bounded_hashing import bounded_choice
from server.config import RouterSettings
from server.deadlines import Deadline
from server.rate_limits import estimate_tokens

logger = logging.getLogger(__name__)

# Errors that would recur on any replica, or are the request's own end (its deadline, a drain): not the
# replica's fault, never retried.
_REQUEST_ERRORS = (InvalidRequest, ModelNotFound, RequestFailed, DeadlineExceeded, Draining)
# Errors that say the replica (or the way to it) is in trouble.
_REPLICA_ERRORS = (TurnoutError, OSError, TimeoutError)


def _as_request_error(exc: Exception, replica: Replica) -> Exception:
    """An exception from a backend as the pool raises it: a stray one (a bug this request hit) becomes the
    request's RequestFailed; our own errors and the replica's are kept."""
    if isinstance(exc, _REQUEST_ERRORS + _REPLICA_ERRORS):
        return exc
    logger.error("replica %s raised %s for one request (counted as the request's failure): %s",
                 replica.name, type(exc).__name__, exc)
    failed = RequestFailed(f"the request failed: {type(exc).__name__}: {exc}")
    failed.__cause__ = exc
    return failed


@dataclass(eq=False)
class Replica:
    name: str
    backend: Backend
    outstanding: int = 0
    healthy: bool = True
    """Result of the last active health check."""
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    """Monotonic time before which passive ejection keeps traffic away."""

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


class ModelPool(Backend):
    def __init__(self, name: str, replicas: list[Backend], settings: RouterSettings,
                 stand_in: Backend | None = None):
        """`stand_in`: for a pool whose replicas join later (DNS), an unstarted backend of the same options
        whose `info` stands for the model while no replica has joined yet; without it, `replicas` may not be
        empty."""
        if not replicas and stand_in is None:
            raise ValueError(f"model {name!r} needs at least one replica")
        self.name = name
        self.replicas = [Replica(f"{name}/{i}", backend) for i, backend in enumerate(replicas)]
        self._stand_in = stand_in
        self._retiring: set[Replica] = set()  # retired, with requests still in flight
        self._closing: set[asyncio.Task] = set()  # retired replicas' backends being closed
        self.settings = settings
        self.fallbacks: list[ModelPool] = []
        self._turn = itertools.count()
        self.queue = AdmissionQueue(name, settings.max_queued_requests, settings.max_queued_prompt_tokens)
        self.deadlines: set[Deadline] = set()
        """The deadlines of the requests in flight here, which a drain pulls in."""

    # -- the backend contract -------------------------------------------------------------------------
    @property
    def _exemplar(self) -> Backend:
        """The backend whose info, tokenizer and adapters stand for the model's: its first replica, or when
        it has none (every address left), the last one that left, or the unstarted stand-in."""
        return self.replicas[0].backend if self.replicas else self._stand_in

    @property
    def info(self) -> ModelInfo:
        return replace(self._exemplar.info, name=self.name)

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self._exemplar.tokenizer

    @property
    def tokenizing(self) -> Tokenizing | None:
        return self._exemplar.tokenizing

    @property
    def tool_support(self) -> ToolSupport:
        return self._exemplar.tool_support

    @property
    def adapters(self) -> list[ModelInfo]:
        return [replace(a, parent=self.name) for a in self._exemplar.adapters]

    def stats(self) -> BackendStats | None:
        """The replicas' engine numbers combined: counts summed, usage ratios averaged."""
        parts = [s for r in self.replicas if (s := r.backend.stats()) is not None]
        if not parts:
            return None
        return BackendStats(
            num_running=sum(p.num_running for p in parts),
            num_waiting=sum(p.num_waiting for p in parts),
            kv_cache_usage=sum(p.kv_cache_usage for p in parts) / len(parts),
            token_budget_usage=sum(p.token_budget_usage for p in parts) / len(parts),
            queue_times=[t for p in parts for t in p.queue_times],
            prefix_cache_queries=sum(p.prefix_cache_queries for p in parts),
            prefix_cache_hits=sum(p.prefix_cache_hits for p in parts),
            num_preemptions=sum(p.num_preemptions for p in parts),
        )

    async def start(self) -> None:
        # One at a time: transformers' model loading patches torch globally and is not thread-safe.
        for replica in self.replicas:
            await replica.backend.start()
        self._update_capacity()

    def _update_capacity(self) -> None:
        batches = [r.backend.info.max_running for r in self.replicas]
        self.queue.set_capacity(None if None in batches or not batches else sum(batches))

    async def close(self) -> None:
        serving = [*self.replicas, *self._retiring]
        self._retiring.clear()
        await asyncio.gather(*(r.backend.close() for r in serving), *self._closing, return_exceptions=True)

    # -- membership: replicas joining and leaving while the pool serves ---------------------------------
    def add_replica(self, name: str, backend: Backend) -> Replica:
        """A started backend joins: it takes requests from now on."""
        replica = Replica(name, backend)
        self.replicas.append(replica)
        self._update_capacity()
        return replica

    def retire(self, replica: Replica) -> None:
        """`replica` leaves: no new request goes to it from now on, and its backend is closed once the requests
        it has in flight have ended (each bounded by its own deadline and the backend's timeouts)."""
        self.replicas.remove(replica)
        self._stand_in = replica.backend  # its info (as the upstream reported it) stands in if none is left
        self._update_capacity()
        self._retiring.add(replica)
        self._close_if_done(replica)

    def _close_if_done(self, replica: Replica) -> None:
        """Close a retired replica's backend once its last request has ended (called as each one ends)."""
        if replica not in self._retiring or replica.outstanding > 0:
            return
        self._retiring.discard(replica)

        async def close() -> None:
            try:
                await replica.backend.close()
            except Exception:  # it has left: a failure to close it must not reach any request
                logger.exception("closing retired replica %s failed", replica.name)

        task = asyncio.get_running_loop().create_task(close(), name=f"turnout-close-{replica.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def health(self) -> bool:
        """Some replica passes its active health check. Ejection does not count here: an ejected replica
        still takes requests when nothing else can (see the module doc), so the model can still serve."""
        await self.check_health()
        return any(r.healthy for r in self.replicas)

    @property
    def dead(self) -> bool:
        """Some replica can never serve again: the process must be restarted (see Backend.dead)."""
        return any(r.backend.dead for r in self.replicas)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        """The request's deltas from the first replica that can serve it, once it is through the model's
        waiting line, every wait bounded by its deadline (server/deadlines.py)."""
        check_request_token_ids(request, self.info.vocab_size)
        if request.prompt is not None and self.tokenizing is not None:
            self.tokenizing.check_size(len(request.prompt))  # before any replica spends time on it
        deadline = Deadline(request.deadline, request.patience)
        cost = sequences_per_prompt(request.sampling)
        self.deadlines.add(deadline)
        try:
            await deadline.wait(self.queue.enter(request.tenant, cost, _prompt_tokens(request)))
            try:
                async with aclosing(self._serve(request, deadline)) as served:  # closed with us: aborts the backend
                    async for delta in served:
                        yield delta
            finally:
                self.queue.leave(cost)
        finally:
            self.deadlines.discard(deadline)

    async def _serve(self, request: GenerateRequest, deadline: Deadline) -> AsyncIterator[OutputDelta]:
        tried: set[Replica] = set()
        last_error: BaseException | None = None
        key = (affinity_key(request, self.settings.affinity_prefix_tokens)
               if self.settings.policy == "prefix_affinity" else None)
        for pool, replica in self._candidates(tried, key):
            tried.add(replica)
            replica.outstanding += 1
            stream = replica.backend.generate(request)
            try:
                try:
                    opening = await deadline.wait(_opening(stream, request.buffered))
                except _REQUEST_ERRORS:
                    raise
                except Overloaded as exc:  # busy, not broken: try another, count nothing against it
                    last_error = exc
                    continue
                except _REPLICA_ERRORS as exc:
                    logger.warning("replica %s failed before anything was sent (%s); trying another",
                                   replica.name, exc)
                    pool._record(replica, exc)
                    last_error = exc
                    continue
                except Exception as exc:
                    raise _as_request_error(exc, replica) from exc
                for delta in opening:
                    yield delta
                if opening and not request.buffered:
                    try:
                        while True:
                            try:
                                delta = await deadline.wait(anext(stream))
                            except StopAsyncIteration:
                                break
                            yield delta
                    except _REQUEST_ERRORS:
                        raise
                    except _REPLICA_ERRORS as exc:
                        pool._record(replica, exc)
                        raise StreamInterrupted(
                            f"model {self.name!r}: replica {replica.name} failed after the stream started: {exc}"
                        ) from exc
                    except Exception as exc:
                        raise _as_request_error(exc, replica) from exc
                pool._record(replica, None)
                return
            finally:
                replica.outstanding -= 1
                try:
                    await stream.aclose()
                finally:
                    pool._close_if_done(replica)
        if last_error is None:
            raise Unavailable(f"model {self.name!r} has no healthy replica")
        if isinstance(last_error, TurnoutError):  # keep its status: overloaded, engine dead, upstream error
            raise last_error
        raise Unavailable(f"model {self.name!r}: every replica failed; last error: {last_error!r}") from last_error

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """The request's embeddings from the first replica that can serve it, with generation's checks before
        (token ids against the vocabulary, text sizes against the context), its waiting line (an embedding
        request takes one place, as one sequence) and its failure rules."""
        vocab = self.info.vocab_size
        for item in request.inputs:
            if isinstance(item, str):
                if self.tokenizing is not None:
                    self.tokenizing.check_size(len(item), "input")
            elif vocab is not None:
                check_token_ids(item, vocab, "input")
            elif bad := [t for t in item if t < 0]:
                raise InvalidRequest(f"input: token ids must be >= 0, got {bad[0]}", param="input")
        deadline = Deadline(request.deadline, request.patience)
        tokens = estimate_tokens([i for i in request.inputs if isinstance(i, str)],
                                 [i for i in request.inputs if isinstance(i, list)])
        self.deadlines.add(deadline)
        try:
            await deadline.wait(self.queue.enter(request.tenant, 1, tokens))
            try:
                return await deadline.wait(self._embed(request))
            finally:
                self.queue.leave(1)
        finally:
            self.deadlines.discard(deadline)

    async def _embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        tried: set[Replica] = set()
        last_error: BaseException | None = None
        for pool, replica in self._candidates(tried, None):
            tried.add(replica)
            replica.outstanding += 1
            try:
                result = await replica.backend.embed(request)
            except _REQUEST_ERRORS:
                raise
            except Overloaded as exc:
                last_error = exc
                continue
            except _REPLICA_ERRORS as exc:
                logger.warning("replica %s failed an embedding request (%s); trying another", replica.name, exc)
                pool._record(replica, exc)
                last_error = exc
                continue
            except Exception as exc:
                raise _as_request_error(exc, replica) from exc
            finally:
                replica.outstanding -= 1
                pool._close_if_done(replica)
            pool._record(replica, None)
            return result
        if last_error is None:
            raise Unavailable(f"model {self.name!r} has no healthy replica")
        if isinstance(last_error, TurnoutError):
            raise last_error
        raise Unavailable(f"model {self.name!r}: every replica failed; last error: {last_error!r}") from last_error

    # -- replica choice and bookkeeping ---------------------------------------------------------------
    def _chain(self) -> list[ModelPool]:
        return [self, *self.fallbacks]

    def _candidates(self, tried: set[Replica], key: bytes | None) -> Iterator[tuple[ModelPool, Replica]]:
        """(pool, replica) to try, in order: available replicas of this model, then of each fallback; when
        there were none at all, the ejected replicas that pass their health checks (see the module doc).
        `key`: what prefix_affinity places the request by (None under the other policies)."""
        for ignore_ejection in (False, True):
            if ignore_ejection:
                if tried or not any(pool.replicas for pool in self._chain()):  # none at all: not an ejection
                    return
                logger.warning("every replica of model %r (and of its fallbacks) is ejected; trying them anyway",
                               self.name)
            for pool in self._chain():
                while (replica := pool._pick(tried, ignore_ejection, key)) is not None:
                    yield pool, replica

    def _pick(self, exclude: set[Replica], ignore_ejection: bool = False, key: bytes | None = None) -> Replica | None:
        now = time.monotonic()
        candidates = [r for r in self.replicas
                      if r not in exclude and (r.healthy if ignore_ejection else r.available(now))]
        if not candidates:
            return None
        if key is not None:  # prefix_affinity: the key's best-ranked replica within the load bound
            return bounded_choice(key, candidates, self.settings.affinity_load_factor)
        turn = next(self._turn)
        if self.settings.policy == "round_robin":
            return candidates[turn % len(candidates)]
        # Least outstanding; ties go round robin so idle replicas share the work.
        fewest = min(r.outstanding for r in candidates)
        tied = [r for r in candidates if r.outstanding == fewest]
        return tied[turn % len(tied)]

    def _record(self, replica: Replica, error: BaseException | None) -> None:
        if error is None:
            replica.consecutive_failures = 0
            replica.ejected_until = 0.0  # it served a request (only an ejected replica tried anyway can be)
            return
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.settings.max_consecutive_failures:
            replica.ejected_until = time.monotonic() + self.settings.ejection_seconds
            logger.warning("replica %s ejected for %.0f s after %d consecutive failures (last: %s)",
                           replica.name, self.settings.ejection_seconds, replica.consecutive_failures, error)

    async def check_health(self) -> None:
        """One round of active health checks over every replica."""

        async def check(replica: Replica) -> None:
            try:
                ok = await asyncio.wait_for(replica.backend.health(), self.settings.health_check_timeout)
            except Exception:
                ok = False
            if ok != replica.healthy:
                logger.warning("replica %s is now %s", replica.name, "healthy" if ok else "unhealthy")
            replica.healthy = ok

        await asyncio.gather(*(check(r) for r in list(self.replicas)))  # a copy: replicas may join meanwhile


def _prompt_tokens(request: GenerateRequest) -> int:
    if request.prompt_token_ids is not None:
        return len(request.prompt_token_ids)
    text = request.prompt or "".join(m.get("content") or "" for m in request.messages or ())
    return estimate_tokens([text])


async def _opening(stream: AsyncIterator[OutputDelta], buffered: bool) -> list[OutputDelta]:
    """What must arrive before anything is sent, so a failure up to here can move to another replica: the
    whole answer of a buffered request, else the first delta (nothing when the stream is empty)."""
    if buffered:
        return [delta async for delta in stream]
    try:
        return [await anext(stream)]
    except StopAsyncIteration:
        return []


class AdapterView(Backend):
    """A LoRA adapter served by its base model's pool: the same replicas, with `adapter` set on requests."""

    def __init__(self, pool: ModelPool, adapter: ModelInfo):
        self.pool = pool
        self._info = adapter

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self.pool.tokenizer

    @property
    def tokenizing(self) -> Tokenizing | None:
        return self.pool.tokenizing

    @property
    def tool_support(self) -> ToolSupport:
        return self.pool.tool_support

    async def start(self) -> None:  # the pool's lifecycle is the router's business
        pass

    async def close(self) -> None:
        pass

    async def health(self) -> bool:
        return await self.pool.health()

    @property
    def dead(self) -> bool:
        return self.pool.dead

    def generate(self, request: GenerateRequest) -> AsyncIterator[OutputDelta]:
        return self.pool.generate(replace(request, adapter=self._info.name))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        raise InvalidRequest(f"the LoRA adapter `{self._info.name}` does not serve embeddings; its base model "
                             f"`{self.pool.name}` may", param="model")
