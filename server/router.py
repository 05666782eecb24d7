"""Model name -> pool of replicas. The router owns the pools' lifecycle, aliases, fallback chains, the
active health checks and the DNS refreshes of pools whose replicas come from a name (server/dns_replicas.py);
the pools (server/pool.py) own replica choice, retries and ejection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

from backends.base import Backend
from backends.errors import ModelNotFound
from backends.types import ModelInfo, SamplingParams
from server.admission import Draining, PermissionDenied, check_fan_out
from server.config import RouterSettings, ServeConfig
from server.dns_replicas import DnsReplicas, DnsReplicaSource, Resolver, url_at
from server.keys import ApiKey, KeyRing
from server.pool import AdapterView, ModelPool
from server.rate_limits import RateLimiter
from server.telemetry import RequestRecord

logger = logging.getLogger(__name__)

TGI_ANY_MODEL = ("tgi", "dummy")
"""The placeholder model names TGI's clients send (huggingface_hub's `InferenceClient(base_url=...)`: "dummy"
now, "tgi" in older releases), which a TGI server takes for whatever it serves: with one model served, they
name that model here too, on every route."""


DRAIN_RETRY_AFTER_S = 2.0
"""What a draining server tells new requests: another replica takes them once the load balancer has moved on."""


@dataclass(frozen=True)
class Admitted:
    """What an admitted request's GenerateRequests carry (backends.types.GenerateRequest fields)."""

    tenant: str
    deadline: float | None
    patience: float | None


class Router:
    def __init__(
        self,
        backends: dict[str, Backend | list[Backend] | DnsReplicaSource],
        aliases: dict[str, str] | None = None,
        settings: RouterSettings | None = None,
        fallbacks: dict[str, list[str]] | None = None,
        keys: KeyRing | None = None,
        resolver: Resolver | None = None,
    ):
        """`backends` maps each model name to its backend, to a list of replicas, or to a DNS name's replicas;
        `keys`, when given and not empty, are the API keys requests must carry (server/keys.py); `resolver`
        answers the DNS names (default: the system's; tests pass their own)."""
        if not backends:
            raise ValueError("the router needs at least one model")
        self.settings = settings or RouterSettings()
        self.keys = keys or KeyRing([])
        self.limiter = RateLimiter()
        self.draining = False
        self.pools: dict[str, ModelPool] = {}
        self.dns: dict[str, DnsReplicas] = {}
        for name, replicas in backends.items():
            if isinstance(replicas, DnsReplicaSource):
                self.pools[name] = ModelPool(name, [], self.settings, stand_in=replicas.stand_in)
                self.dns[name] = DnsReplicas(self.pools[name], replicas, resolver)
            else:
                self.pools[name] = ModelPool(name, replicas if isinstance(replicas, list) else [replicas],
                                             self.settings)
        self.aliases = aliases or {}
        for alias, target in self.aliases.items():
            if target not in self.pools:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
        for name, targets in (fallbacks or {}).items():
            self.pools[name].fallbacks = [self.pools[t] for t in targets]
        self._health_task: asyncio.Task | None = None
        self._dns_tasks: list[asyncio.Task] = []

    @classmethod
    def from_config(cls, config: ServeConfig, resolver: Resolver | None = None) -> Router:
        from backends.registry import create_backend

        if warning := config.cpu_contention_warning():
            logger.warning(warning)
        backends: dict[str, list[Backend] | DnsReplicaSource] = {}
        for m in config.models:
            if m.replicas_from_dns is None:
                backends[m.name] = [create_backend(m.backend, options) for options in m.replica_options()]
                continue

            def backend_at(address: str, m=m) -> Backend:
                url = url_at(m.options["url"], address, m.replicas_from_dns.port)
                return create_backend(m.backend, {**m.options, "url": url})

            # The stand-in is built now so that bad options fail at start, not at the first address.
            backends[m.name] = DnsReplicaSource(m.replicas_from_dns, backend_at, create_backend(m.backend, m.options))
        aliases = {alias: m.name for m in config.models for alias in m.aliases}
        fallbacks = {m.name: m.fallback for m in config.models if m.fallback}
        return cls(backends, aliases, config.router, fallbacks, config.keys, resolver)

    @property
    def default_model(self) -> str:
        return next(iter(self.pools))

    def resolve(self, model: str | None, key: ApiKey | None = None) -> Backend:
        """What serves `model`: its pool, or for a LoRA adapter's name a view of its base model's pool that
        sets `GenerateRequest.adapter`. None picks the default (only for endpoints where model is optional), and
        so do TGI_ANY_MODEL's names when only one model is served. With `key`, a model the key may not use is
        PermissionDenied (under the name the client used, or the model it stands for)."""
        backend = self._resolve(model)
        if key is not None and not (key.may_use(backend.info.name) or (model is not None and key.may_use(model))):
            raise PermissionDenied(f"this API key ({key.name}) may not use the model `{model or backend.info.name}`",
                                   param="model")
        return backend

    def _resolve(self, model: str | None) -> Backend:
        name = self.default_model if model is None else self.aliases.get(model, model)
        pool = self.pools.get(name)
        if pool is not None:
            return pool
        if name in TGI_ANY_MODEL and len(self.pools) == 1:
            return self.pools[self.default_model]
        for pool in self.pools.values():
            for adapter in pool.adapters:
                if adapter.name == name:
                    return AdapterView(pool, adapter)
        raise ModelNotFound(
            f"The model `{model}` does not exist. Available models: {', '.join(i.name for i in self.models())}",
            param="model",
        )

    def admit(self, record: RequestRecord | None, num_prompts: int, params: SamplingParams, prompt_tokens: int,
              *, patience: float | None = None, call_timeout: float | None = None) -> Admitted:
        """Admission of one request as a whole (server/admission.py), before any backend work: none while
        draining (Draining), at most max_sequences_per_request sequences (InvalidRequest), within its key's
        rate limits (RateLimited). Its rate ticket rides on `record`, so that the request's real usage settles
        its tokens when it ends. Returns what its GenerateRequests carry: tenant, deadline (the sooner of
        --request-timeout and `call_timeout`, a gRPC call's) and `patience` (the client's read timeout)."""
        if self.draining:
            raise Draining("the server is shutting down and takes no new requests; retry on another replica",
                           retry_after=DRAIN_RETRY_AFTER_S)
        check_fan_out(num_prompts, params, self.settings.max_sequences_per_request)
        key = record.api_key if record is not None else None
        if record is not None:
            record.rate_ticket = self.limiter.admit(key, prompt_tokens)
        timeouts = [t for t in (self.settings.request_timeout, call_timeout) if t is not None and t > 0]
        deadline = time.monotonic() + min(timeouts) if timeouts else None
        return Admitted(tenant=key.name if key else "", deadline=deadline, patience=patience)

    def start_drain(self, ends_at: float, drain_timeout: float) -> None:
        """Take no new requests, and end those in flight by `ends_at` (monotonic): streams still running then
        end with an error event (Draining) rather than a silent cut."""
        self.draining = True

        def cut() -> Draining:
            return Draining(f"the server is shutting down and its drain timeout ({drain_timeout:g} s) passed before "
                            "this request finished", retry_after=DRAIN_RETRY_AFTER_S)

        for pool in self.pools.values():
            for deadline in list(pool.deadlines):
                deadline.pull_in(ends_at, cut)

    @property
    def in_flight(self) -> int:
        return sum(len(pool.deadlines) for pool in self.pools.values())

    def models(self, key: ApiKey | None = None) -> list[ModelInfo]:
        """Every routed model for /v1/models: models, aliases (as models of their own name), and LoRA
        adapters with their base model as `parent`; with `key`, only those the key may use."""
        infos = [pool.info for pool in self.pools.values()]
        for alias, target in self.aliases.items():
            infos.append(replace(self.pools[target].info, name=alias))
        infos += [adapter for pool in self.pools.values() for adapter in pool.adapters]
        if key is not None:
            infos = [info for info in infos if key.may_use(info.name) or key.may_use(self.aliases.get(info.name, ""))]
        return infos

    def replica_health(self) -> dict[str, dict[str, bool]]:
        """{model: {replica name: available (healthy and not ejected)}}, for the metrics."""
        now = time.monotonic()
        return {name: {r.name: r.available(now) for r in pool.replicas} for name, pool in self.pools.items()}

    async def start(self) -> None:
        for pool in self.pools.values():  # in turn: model loading is not thread-safe
            await pool.start()
        # The first resolution before the server is ready, so the replicas there already are serve at once;
        # a name that does not resolve yet leaves its model unready (503) until one joins.
        await asyncio.gather(*(dns.refresh() for dns in self.dns.values()))
        self._dns_tasks = [asyncio.create_task(dns.run(), name=f"turnout-dns-{name}") for name, dns in self.dns.items()]
        if self.settings.health_check_interval > 0:
            self._health_task = asyncio.create_task(self._health_loop(), name="turnout-health-checks")

    async def close(self) -> None:
        for task in [self._health_task, *self._dns_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))

    def dead_models(self) -> list[str]:
        """Models with a replica that can never serve again until the process restarts (Backend.dead)."""
        return [name for name, pool in self.pools.items() if pool.dead]

    async def ready(self) -> bool:
        """Every model has at least one replica that can take requests, and the server is not draining."""
        if self.draining:
            return False
        for pool in self.pools.values():
            if not await pool.health():
                return False
        return True

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_check_interval)
            try:
                await asyncio.gather(*(pool.check_health() for pool in self.pools.values()))
            except Exception:  # a bug in one check must not stop the others for good
                logger.exception("health check round failed")
