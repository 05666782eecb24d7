"""Model name -> pool of replicas. The router owns the pools' lifecycle, aliases, fallback chains and the
active health checks; the pools (server/pool.py) own replica choice, retries and ejection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from backends.base import Backend
from backends.errors import ModelNotFound
from backends.types import ModelInfo, SamplingParams
from server.admission import check_fan_out
from server.config import RouterSettings, ServeConfig
from server.pool import AdapterView, ModelPool

logger = logging.getLogger(__name__)

TGI_ANY_MODEL = ("tgi", "dummy")
"""The placeholder model names TGI's clients send (huggingface_hub's `InferenceClient(base_url=...)`: "dummy"
now, "tgi" in older releases), which a TGI server takes for whatever it serves: with one model served, they
name that model here too, on every route."""


class Router:
    def __init__(
        self,
        backends: dict[str, Backend | list[Backend]],
        aliases: dict[str, str] | None = None,
        settings: RouterSettings | None = None,
        fallbacks: dict[str, list[str]] | None = None,
    ):
        """`backends` maps each model name to its backend, or to a list of replicas."""
        if not backends:
            raise ValueError("the router needs at least one model")
        self.settings = settings or RouterSettings()
        self.pools: dict[str, ModelPool] = {
            name: ModelPool(name, replicas if isinstance(replicas, list) else [replicas], self.settings)
            for name, replicas in backends.items()
        }
        self.aliases = aliases or {}
        for alias, target in self.aliases.items():
            if target not in self.pools:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
        for name, targets in (fallbacks or {}).items():
            self.pools[name].fallbacks = [self.pools[t] for t in targets]
        self._health_task: asyncio.Task | None = None

    @classmethod
    def from_config(cls, config: ServeConfig) -> Router:
        from backends.registry import create_backend

        if warning := config.cpu_contention_warning():
            logger.warning(warning)
        backends = {
            m.name: [create_backend(m.backend, options) for options in m.replica_options()] for m in config.models
        }
        aliases = {alias: m.name for m in config.models for alias in m.aliases}
        fallbacks = {m.name: m.fallback for m in config.models if m.fallback}
        return cls(backends, aliases, config.router, fallbacks)

    @property
    def default_model(self) -> str:
        return next(iter(self.pools))

    def resolve(self, model: str | None) -> Backend:
        """What serves `model`: its pool, or for a LoRA adapter's name a view of its base model's pool that
        sets `GenerateRequest.adapter`. None picks the default (only for endpoints where model is optional), and
        so do TGI_ANY_MODEL's names when only one model is served."""
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

    def check_fan_out(self, num_prompts: int, params: SamplingParams) -> None:
        """InvalidRequest when the request would start more sequences than one request may (admission.py)."""
        check_fan_out(num_prompts, params, self.settings.max_sequences_per_request)

    def models(self) -> list[ModelInfo]:
        """Every routed model for /v1/models: models, aliases (as models of their own name), and LoRA
        adapters with their base model as `parent`."""
        infos = [pool.info for pool in self.pools.values()]
        for alias, target in self.aliases.items():
            infos.append(replace(self.pools[target].info, name=alias))
        infos += [adapter for pool in self.pools.values() for adapter in pool.adapters]
        return infos

    def replica_health(self) -> dict[str, dict[str, bool]]:
        """{model: {replica name: available (healthy and not ejected)}}, for the metrics."""
        now = time.monotonic()
        return {name: {r.name: r.available(now) for r in pool.replicas} for name, pool in self.pools.items()}

    async def start(self) -> None:
        for pool in self.pools.values():  # in turn: model loading is not thread-safe
            await pool.start()
        if self.settings.health_check_interval > 0:
            self._health_task = asyncio.create_task(self._health_loop(), name="turnout-health-checks")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))

    def dead_models(self) -> list[str]:
        """Models with a replica that can never serve again until the process restarts (Backend.dead)."""
        return [name for name, pool in self.pools.items() if pool.dead]

    async def ready(self) -> bool:
        """Every model has at least one replica that can take requests."""
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
