"""The routing config file: which models are served, by which backend, with how many replicas.

Example (YAML)::

    router:
      policy: least_outstanding      # or round_robin, or prefix_affinity (below)
      health_check_interval: 5       # seconds between active health checks of every replica
      max_consecutive_failures: 3    # passive ejection after this many failed requests in a row
      ejection_seconds: 30           # how long an ejected replica sits out
      max_sequences_per_request: 64  # prompts x max(n, best_of, beam_width) one request may start
      max_queued_requests: 256       # waiting for a model at capacity; beyond: 429 with Retry-After
      max_queued_prompt_tokens: 262144
      request_timeout: 600           # seconds; the work is aborted then (default: none)
    models:
      - name: turnout-tiny
        backend: hf
        options: {model: server/default_model, max_num_seqs: 32}
        replicas: 2                  # or a list of option overrides, one per replica
        aliases: [tiny]
        fallback: [remote-tiny]      # tried when every replica fails before the first token
      - name: remote-tiny
        backend: openai
        options: {url: http://127.0.0.1:8001/v1, model: turnout-tiny}
      - name: llama
        backend: openai              # or tgi: the remote backends, whose `url` names one server
        options: {url: http://llama-pool.ns.svc.cluster.local:8000/v1, model: llama}
        replicas_from_dns:           # instead of `replicas`: one replica per A record of the name
          name: llama-pool.ns.svc.cluster.local  # default: the url's host (a headless Service)
          port: 8000                 # default: the url's port
          refresh_interval: 5        # seconds between resolutions

The prefix_affinity policy (server/bounded_hashing.py, server/affinity_key.py) sends requests that share a
prompt prefix, or a session id, to the same replica, so a replica's prefix cache serves them, with no
replica over `affinity_load_factor` x the average load::

    router:
      policy: prefix_affinity
      affinity_prefix_tokens: 128         # hash the prompt's first 128 tokens (512 characters of text)
      affinity_session_header: x-session-id  # a request carrying it is placed by it instead ("": off)
      affinity_load_factor: 1.25          # no replica over ceil(1.25 x the average requests in flight)

Every field is checked when the file is read; a bad value is quoted in the error.

A fallback model receives the request as the front end prepared it for the primary: chat and token-id
prompts already rendered with the primary's tokenizer. Fall back only to models that share it (replicas
of the same weights elsewhere, or a remote server of the same model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

POLICIES = ("least_outstanding", "round_robin", "prefix_affinity")

URL_BACKENDS = ("openai", "tgi")
"""The remote backends: their `url` option names one server, so a DNS name's addresses can stand in for it."""


class ConfigError(ValueError):
    pass


@dataclass
class RouterSettings:
    policy: str = "least_outstanding"
    """How a replica is picked: fewest requests in flight, strictly in turn, or by the request's prompt
    prefix or session (prefix_affinity, with bounded load)."""
    health_check_interval: float = 5.0
    """Seconds between active health checks; 0 disables them."""
    health_check_timeout: float = 2.0
    """A health check slower than this counts as failed."""
    max_consecutive_failures: int = 3
    """A replica whose requests fail this many times in a row is ejected (passive health checking)."""
    ejection_seconds: float = 30.0
    """How long an ejected replica gets no traffic before it is tried again (unless nothing else can serve
    the model: then it is tried anyway, and a success ends its ejection)."""
    max_queued_requests: int = 256
    """Requests that may wait for a model whose backends are at capacity (the line is fair across API keys);
    beyond it, a 429 with Retry-After at once."""
    max_queued_prompt_tokens: int = 262_144
    """The same bound in the waiting requests' prompt tokens (estimated: ~4 characters a token)."""
    request_timeout: float | None = None
    """Seconds a request may take, from admission to its last token (its work is aborted then); a gRPC call's
    own sooner deadline wins. Separately, each wait for output is bounded by the client's read timeout when
    it sends one (OpenAI's clients do: x-stainless-read-timeout). None: no limit."""
    max_sequences_per_request: int = 64
    """Most sequences one request may start: prompts x max(n, best_of) (or beam_width); more is a 400. The
    default fills the HF engine's running batch (max_num_seqs) once, so one request cannot queue a backlog
    that everyone after it waits for."""
    affinity_prefix_tokens: int = 128
    """prefix_affinity hashes the prompt's first this many tokens when the request carries token ids, else
    this many times 4 characters of its text (a remote backend's pool has no tokenizer to count tokens with,
    and tokenizing only to pick a replica would cost the gateway what the upstream does anyway)."""
    affinity_session_header: str = "x-session-id"
    """A request with this header (gRPC: metadata) is placed by its value instead of its prompt, so a whole
    conversation stays on one replica; "" turns it off."""
    affinity_load_factor: float = 1.25
    """Bounded load: prefix_affinity sends no replica more than ceil(factor x the average in flight over the
    replicas that can take the request); beyond it, the request goes to its next replica in hash order. 1 is
    perfect balance (affinity gives way soonest); larger keeps affinity longer under a hot prefix."""

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"router.policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("health_check_interval", "health_check_timeout", "ejection_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"router.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_queued_requests", "max_queued_prompt_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"router.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError(f"router.request_timeout must be > 0 (or null for none), got {self.request_timeout!r}")
        if self.max_sequences_per_request < 1:
            raise ConfigError(
                f"router.max_sequences_per_request must be >= 1, got {self.max_sequences_per_request!r}"
            )
        if self.max_consecutive_failures < 1:
            raise ConfigError(
                f"router.max_consecutive_failures must be >= 1, got {self.max_consecutive_failures!r}"
            )
        if not _is_int(self.affinity_prefix_tokens) or self.affinity_prefix_tokens < 1:
            raise ConfigError(f"router.affinity_prefix_tokens must be an integer >= 1, got {self.affinity_prefix_tokens!r}")
        if not isinstance(self.affinity_session_header, str):
            raise ConfigError(f"router.affinity_session_header must be a header name (or \"\"), got "
                              f"{self.affinity_session_header!r}")
        # Below 1 the bound could be under the average, and then no replica would be allowed the request.
        if not _is_number(self.affinity_load_factor) or self.affinity_load_factor < 1:
            raise ConfigError(f"router.affinity_load_factor must be a number >= 1, got {self.affinity_load_factor!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class DnsReplicasConfig:
    """A model's replicas from a DNS name (server/dns_replicas.py): one replica per A record (IPv4 only:
    a dual-stack pod's AAAA record would make it a second replica), re-resolved every refresh_interval."""

    name: str
    """The name to resolve, e.g. a headless Service's my-svc.my-namespace.svc.cluster.local."""
    port: int
    """The port every replica listens on."""
    refresh_interval: float = 5.0
    """Seconds between resolutions."""


@dataclass
class ModelConfig:
    name: str
    """The name clients send as `model`."""
    backend: str
    """Backend kind: a key of backends.registry.BACKENDS (hf, vllm, openai, tgi, trtllm)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Passed to the backend's factory; see each backend's config for the fields."""
    replicas: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    """One dict of option overrides per replica (an integer N in the file means N identical replicas)."""
    aliases: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    """Models tried in order when every replica of this one fails before producing a token."""
    replicas_from_dns: DnsReplicasConfig | None = None
    """Instead of `replicas`: the replicas are the addresses of a DNS name, each one the backend's `url`
    with its host and port replaced (openai and tgi only)."""

    def replica_options(self) -> list[dict[str, Any]]:
        return [{**self.options, **override} for override in self.replicas]


@dataclass
class ServeConfig:
    models: list[ModelConfig]
    router: RouterSettings = field(default_factory=RouterSettings)
    keys: Any = None
    """The API keys (server/keys.py KeyRing) requests must carry; None or empty: no keys needed. Set from
    the command line (--api-key, --api-keys FILE), not from the routing file."""

    def cpu_contention_warning(self) -> str | None:
        """A warning when several in-process HF engines would share this machine's CPU, else None.

        Each engine runs torch on its own thread, so each gets its own OpenMP team; once the teams' threads
        outnumber the cores, libgomp stops letting idle threads spin and every parallel op pays to wake
        them (measured on 2 cores: a [32, 256] x [256, 256] matmul took 34 us on the process's only team,
        126-184 us on a second one's)."""
        engines = [f"{model.name}/{i}" for model in self.models if model.backend == "hf"
                   for i, options in enumerate(model.replica_options())
                   if str(options.get("device", "cpu")).startswith("cpu")]
        if len(engines) < 2:
            return None
        return (f"{len(engines)} HF engines will share this process's CPU ({', '.join(engines)}). Each runs its "
                "own OpenMP team, and teams that outnumber the cores slow one another down. For throughput on "
                "CPU, serve one replica with all the threads, or run each replica as its own `turnout serve` "
                "process and route to them with the openai backend.")

    def validate(self) -> None:
        from backends.registry import BACKENDS

        self.router.validate()
        if not self.models:
            raise ConfigError("the config lists no models")
        names: set[str] = set()
        for model in self.models:
            for name in [model.name, *model.aliases]:
                if name in names:
                    raise ConfigError(f"model name {name!r} is used twice")
                names.add(name)
            if model.backend not in BACKENDS:
                raise ConfigError(
                    f"model {model.name!r}: unknown backend {model.backend!r}; known: {', '.join(sorted(BACKENDS))}"
                )
            if not model.replicas:
                raise ConfigError(f"model {model.name!r}: replicas must be at least 1")
        for model in self.models:
            for target in model.fallback:
                if target not in names:
                    raise ConfigError(f"model {model.name!r}: fallback {target!r} is not a configured model")
                if target == model.name:
                    raise ConfigError(f"model {model.name!r} cannot fall back to itself")


def _model(raw: Any, index: int) -> ModelConfig:
    where = f"models[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {raw!r}")
    known = {"name", "backend", "options", "replicas", "replicas_from_dns", "aliases", "fallback"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    for required in ("name", "backend"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise ConfigError(f"{where}.{required} must be a non-empty string, got {raw.get(required)!r}")
    replicas = raw.get("replicas", 1)
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        if replicas < 1:
            raise ConfigError(f"{where}.replicas must be >= 1, got {replicas!r}")
        replicas = [{} for _ in range(replicas)]
    elif not (isinstance(replicas, list) and all(isinstance(r, dict) for r in replicas)):
        raise ConfigError(f"{where}.replicas must be an integer or a list of option mappings, got {replicas!r}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options must be a mapping, got {options!r}")
    lists = {}
    for key in ("aliases", "fallback"):
        value = raw.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}.{key} must be a list of model names, got {value!r}")
        lists[key] = value
    dns = None
    if raw.get("replicas_from_dns") is not None:
        if "replicas" in raw:
            raise ConfigError(f"{where}: set `replicas` or `replicas_from_dns`, not both")
        dns = _dns_replicas(raw["replicas_from_dns"], f"{where}.replicas_from_dns", raw["backend"], options)
    return ModelConfig(raw["name"], raw["backend"], dict(options), replicas, lists["aliases"], lists["fallback"],
                       dns)


def _dns_replicas(raw: Any, where: str, backend: str, options: dict) -> DnsReplicasConfig:
    """`replicas_from_dns`, its name and port defaulting to the backend url's host and port."""
    if backend not in URL_BACKENDS:
        raise ConfigError(f"{where}: only the {' and '.join(URL_BACKENDS)} backends take replicas from DNS, "
                          f"not {backend!r}")
    url = options.get("url")
    if not isinstance(url, str) or not url.startswith("http://"):
        # https would reach each replica by its IP address, which the Service's certificate does not name.
        raise ConfigError(f"{where}: needs options.url to be an http:// URL (each replica is that URL with the "
                          f"address in place of its host), got {url!r}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (name, port, refresh_interval), got {raw!r}")
    known = {"name", "port", "refresh_interval"}
    if unknown := set(raw) - known:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    try:
        parts = urlsplit(url)
        url_port = parts.port or 80
    except ValueError as exc:
        raise ConfigError(f"{where}: options.url {url!r} is not a valid URL: {exc}") from None
    name = raw.get("name", parts.hostname)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name must be a DNS name, got {name!r}")
    port = raw.get("port", url_port)
    if not _is_int(port) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}.port must be a port number, got {port!r}")
    interval = raw.get("refresh_interval", 5.0)
    if not _is_number(interval) or interval <= 0:
        raise ConfigError(f"{where}.refresh_interval must be a number of seconds > 0, got {interval!r}")
    return DnsReplicasConfig(name, port, float(interval))


def parse_config(raw: Any) -> ServeConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping with a `models` list, got {raw!r}")
    unknown = set(raw) - {"models", "router"}
    if unknown:
        raise ConfigError(f"unknown top-level field(s) {', '.join(sorted(unknown))}; known: models, router")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list):
        raise ConfigError(f"`models` must be a list, got {models_raw!r}")
    router_raw = raw.get("router") or {}
    if not isinstance(router_raw, dict):
        raise ConfigError(f"`router` must be a mapping, got {router_raw!r}")
    try:
        router = RouterSettings(**router_raw)
    except TypeError as exc:
        raise ConfigError(f"router: {exc}") from None
    config = ServeConfig([_model(m, i) for i, m in enumerate(models_raw)], router)
    config.validate()
    return config


def load_config(path: str | Path) -> ServeConfig:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
