"""The `turnout` command: `turnout serve ...` runs the server, `turnout tools ...` the offline tools,
`turnout bench ...` the serving benchmark (bench/serving/)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

DEFAULT_MODEL_NAME = "turnout-tiny"


def default_model_dir() -> str:
    """The bundled model, shipped as package data, so `turnout serve` works from any directory."""
    return str(resources.files("server") / "default_model")


def _port_or_off(text: str) -> int:
    port = int(text)
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or in 1..65535, got {port}")
    return port


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the OpenAI-compatible HTTP server",
        description="Serve a local transformers causal LM over the OpenAI HTTP API "
        "(/v1/completions, /v1/chat/completions, /v1/models, /health, /ready, /tokenize, /detokenize).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=None,
                   help="local model directory (config.json, weights, tokenizer); default: the bundled model")
    p.add_argument("--served-model-name", default=None,
                   help=f"name clients use in `model`; default: directory name, or {DEFAULT_MODEL_NAME!r} "
                        "for the bundled model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8000, help="TCP port to bind")
    p.add_argument("--max-num-seqs", type=int, default=64,
                   help="most sequences decoding at once")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="longest prompt + completion in tokens; default: the model's context length")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="most tokens computed per engine step; longer prompts are prefilled in chunks")
    p.add_argument("--kv-cache-memory", default=None, metavar="SIZE",
                   help="hf: the KV cache's memory, as bytes (4GiB, 512MiB, 2e9) or a fraction of the free memory "
                        "(0.3); default: max-num-seqs x max-model-len tokens, at most a quarter of free memory "
                        "(80%% of free GPU memory on CUDA). The start-up log says how many tokens it holds")
    p.add_argument("--block-size", type=int, default=16,
                   help="hf: token positions per KV-cache block (the unit of allocation and prefix caching)")
    p.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_false",
                   help="hf: compute every prompt in full instead of reusing the KV cache of earlier requests "
                        "that began with the same tokens")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights and activations dtype")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"],
                   help="transformers attention kernel")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads for the engine")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--embedding-pooling", default=None, choices=["mean", "last"],
                   help="how POST /v1/embeddings pools the final hidden states (hf backend); default: the model "
                        "directory's sentence-transformers pooling config, else mean")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                   help="serve a LoRA adapter next to the model, as model NAME (repeatable); requests for "
                        "adapters and the base share batches")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai", "tgi", "trtllm"],
                   help="engine for --model: hf (our continuous-batching engine), vllm or trtllm (in process), "
                        "openai or tgi (a remote server; give its url with --backend-option url=...)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra backend option, repeatable (e.g. url=http://127.0.0.1:8001/v1, "
                        "kv_cache_space_gib=2); see the backend's config class for the names")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML routing config (several models, replicas, aliases, fallback; see server/config.py); "
                        "replaces --model/--backend and the engine flags")
    p.add_argument("--grpc-port", type=_port_or_off, default=0,
                   help="also serve the gRPC API (turnout.v1.Generation, health, reflection) on this port, "
                        "in the same process; 0: no gRPC")
    p.add_argument("--max-sequences-per-request", type=int, default=None, metavar="N",
                   help="most sequences one request may start (prompts x max(n, best_of, beam_width)); more is "
                        "a 400; default: the config file's router setting, else 64")
    p.add_argument("--max-queued-requests", type=int, default=None, metavar="N",
                   help="requests that may wait for a model at capacity (fair across API keys); beyond it a 429 "
                        "with Retry-After; default: the config file's router setting, else 256")
    p.add_argument("--max-queued-prompt-tokens", type=int, default=None, metavar="N",
                   help="the same bound in prompt tokens; default 262144")
    p.add_argument("--request-timeout", type=float, default=None, metavar="S",
                   help="seconds a request may take before its work is aborted (a 504, or an error event); "
                        "default: no limit (a client's read timeout still bounds each wait for output)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM/SIGINT: /ready turns 503, new requests get 503, and requests in flight get "
                        "this long to finish before streams still running end with an error event; then the "
                        "process exits 0 (a second signal stops at once; 0: stop at once)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require this API key (Authorization: Bearer KEY, or x-api-key) on every route but "
                        "/health, /ready and /metrics; also read from TURNOUT_API_KEY")
    p.add_argument("--api-keys", default=None, metavar="FILE",
                   help="YAML file of API keys, stored as hashes, each with a name, optional allowed models and "
                        "its own rate limits (format in server/keys.py; `turnout keys hash` makes a hash)")
    p.add_argument("--api-key-for-ops", action="store_true",
                   help="require a key on /health, /ready and /metrics too")
    p.add_argument("--no-playground", action="store_true",
                   help="do not serve the playground page at /playground (nor send browsers from / to it)")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="json: one JSON object per log line, with one access line per request")
    p.add_argument("--no-access-log", action="store_true",
                   help="write no access line per request (each costs the event loop ~0.1 ms on a small "
                        "machine, which a client's next request waits for); metrics still count every request")
    p.add_argument("--otel-traces", default=None, choices=["console", "otlp"],
                   help="OpenTelemetry spans per request (route -> backend -> stream); needs turnout[otel]")
    add_limit_flags(p)


def add_limit_flags(p) -> None:
    """What a connection and a request may cost (server/http/limits.py, where each is explained)."""
    from server.http.limits import HttpLimits

    default = HttpLimits()
    limits = p.add_argument_group("limits", "what one connection or request may cost the server")
    limits.add_argument("--max-body-bytes", type=int, default=default.max_body_bytes, metavar="N",
                        help="largest request body; a larger one is a 413, refused before it is read")
    limits.add_argument("--max-header-bytes", type=int, default=default.max_header_bytes, metavar="N",
                        help="largest request head (request line and headers); larger is a 431")
    limits.add_argument("--max-header-count", type=int, default=default.max_header_count, metavar="N",
                        help="most header lines in a request; more is a 431")
    limits.add_argument("--header-timeout", type=float, default=default.header_timeout, metavar="SECONDS",
                        help="time a request head may take to arrive; slower is a 408 and the connection closes")
    limits.add_argument("--body-timeout", type=float, default=default.body_timeout, metavar="SECONDS",
                        help="time a request body may take to arrive after its head; slower is a 408")
    limits.add_argument("--keep-alive-timeout", type=float, default=default.keep_alive_timeout,
                        metavar="SECONDS", help="how long an idle keep-alive connection stays open")
    limits.add_argument("--max-connections", type=int, default=default.max_connections, metavar="N",
                        help="most connections open at once; at the limit the longest idle one is closed for a "
                             "new one, and when none is idle new requests get a 503")
    limits.add_argument("--allowed-origins", action="append", default=[], metavar="ORIGIN[,ORIGIN...]",
                        help="web origins whose pages may call the API (CORS), comma-separated or repeated, "
                             "e.g. http://localhost:3000; default: none (CORS off)")


def http_limits(args: argparse.Namespace):
    """The flags' HttpLimits; a bad value is a ValueError quoting it."""
    from server.http.limits import HttpLimits

    return HttpLimits(max_body_bytes=args.max_body_bytes, max_header_bytes=args.max_header_bytes,
                      max_header_count=args.max_header_count, header_timeout=args.header_timeout,
                      body_timeout=args.body_timeout, keep_alive_timeout=args.keep_alive_timeout,
                      max_connections=args.max_connections)


def allowed_origins(values: list[str]) -> list[str]:
    return [origin.strip() for value in values for origin in value.split(",") if origin.strip()]


def _backend_options(pairs: list[str]) -> dict:
    """`--backend-option KEY=VALUE` pairs; values are read as YAML scalars (8 -> int, true -> bool)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--backend-option takes KEY=VALUE, got {pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value) if value else ""
    return options


def single_model_config(args: argparse.Namespace):
    """The config file equivalent of `turnout serve --model X --backend K ...` (one model, one replica)."""
    from server.config import ModelConfig, ServeConfig

    kind = args.backend
    if kind == "openai":
        if not args.model:
            raise ValueError("--backend openai needs --model (the upstream's model name)")
        options = {"model": args.model, "served_model_name": args.served_model_name}
        name = args.served_model_name or args.model
    elif kind == "tgi":  # a TGI server serves one model; --model only names it here
        name = args.served_model_name or args.model or "tgi"
        options = {"served_model_name": name}
    else:
        model_dir = args.model or default_model_dir()
        name = args.served_model_name or (DEFAULT_MODEL_NAME if not args.model else
                                          os.path.basename(os.path.normpath(model_dir)))
        options = {"model": model_dir, "served_model_name": name, "dtype": args.dtype,
                   "max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
                   "max_num_batched_tokens": args.max_num_batched_tokens}
        if kind == "hf":
            options.update(attn_implementation=args.attn_implementation, num_threads=args.num_threads,
                           device=args.device, kv_cache_memory=args.kv_cache_memory, block_size=args.block_size,
                           enable_prefix_caching=args.prefix_caching, embedding_pooling=args.embedding_pooling)
        if args.lora:
            options["adapters"] = dict(_name_and_dir(spec) for spec in args.lora)
    options.update(_backend_options(args.backend_option))
    config = ServeConfig([ModelConfig(name, kind, options)])
    config.validate()
    return config


def _name_and_dir(spec: str) -> tuple[str, str]:
    name, sep, directory = spec.partition("=")
    if not sep or not name or not directory:
        raise ValueError(f"--lora takes NAME=DIR, got {spec!r}")
    return name, directory


def _key_ring(args: argparse.Namespace):
    """The keys requests must carry: --api-keys FILE, else --api-key (or TURNOUT_API_KEY), else none."""
    from server.keys import KeyRing

    single = args.api_key or os.environ.get("TURNOUT_API_KEY")
    if args.api_keys and single:
        raise ValueError("give --api-key (or TURNOUT_API_KEY) or --api-keys FILE, not both")
    if args.api_keys:
        return KeyRing.from_file(args.api_keys)
    return KeyRing.single(single) if single else KeyRing([])


def _keys_command(argv: list[str]) -> int:
    """`turnout keys hash [KEY]` (the key from stdin when not given) and `turnout keys new`."""
    from server.keys import hash_key, new_key

    parser = argparse.ArgumentParser(prog="turnout keys", description="API keys for --api-keys FILE")
    sub = parser.add_subparsers(dest="action", required=True)
    hashed = sub.add_parser("hash", help="print the hash of a key, for the keys file (the key: argument or stdin)")
    hashed.add_argument("key", nargs="?", help="the key; omit it to read it from stdin (keeps it out of shell history)")
    sub.add_parser("new", help="make a new random key and print it and its hash")
    args = parser.parse_args(argv)
    if args.action == "new":
        key = new_key()
        print(f"key:  {key}\nhash: {hash_key(key)}")
        return 0
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("turnout keys hash: no key given", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _bench_command(argv: list[str]) -> int:
    """`turnout bench ...`, imported only when asked for: it needs the `bench` extra (aiohttp, matplotlib)."""
    try:
        from bench.serving.cli import main as bench_main
    except ImportError as exc:
        print(f"turnout bench: {exc}; install it with pip install 'turnout[bench]'", file=sys.stderr)
        return 2
    return bench_main(argv, prog="turnout bench")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.access_log import configure_logging
    from server.app import build_app
    from server.config import ConfigError, load_config
    from server.drain import DrainingServer
    from server.http.transport import http_protocol
    from server.router import Router
    from server.telemetry import Telemetry
    from server.tracing import Tracer, TracingUnavailable

    try:
        config = load_config(args.config) if args.config else single_model_config(args)
        for name in ("max_sequences_per_request", "max_queued_requests", "max_queued_prompt_tokens",
                     "request_timeout"):
            if getattr(args, name) is not None:
                setattr(config.router, name, getattr(args, name))
        config.router.validate()
        if args.drain_timeout < 0:
            raise ValueError(f"--drain-timeout must be >= 0, got {args.drain_timeout}")
        config.keys = _key_ring(args)
        limits = http_limits(args)
        router = Router.from_config(config)
        tracer = Tracer.create(args.otel_traces) if args.otel_traces else Tracer()
    except (ValueError, ConfigError, TracingUnavailable) as exc:
        print(f"turnout serve: {exc}", file=sys.stderr)
        return 2
    # Only once the command line holds: a refused one leaves the caller's logging alone.
    configure_logging(args.log_level, args.log_format)
    telemetry = Telemetry(tracer=tracer, access_log=not args.no_access_log)
    app = build_app(router, telemetry, grpc_port=args.grpc_port, grpc_host=args.host,
                    keys_for_ops=args.api_key_for_ops, limits=limits,
                    allowed_origins=allowed_origins(args.allowed_origins), playground=not args.no_playground)
    # Our access log (server/telemetry.py) replaces uvicorn's; log_config=None keeps our log format. The drain
    # has already let requests finish when uvicorn's own graceful shutdown starts. The connection limit is our
    # protocol's (transport.py), not uvicorn's limit_concurrency.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=5, access_log=False, log_config=None,
                            http=http_protocol(limits), timeout_keep_alive=limits.keep_alive_timeout)
    DrainingServer(config, router, args.drain_timeout).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    from tools.quiet import quiet_import_warnings

    quiet_import_warnings()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "tools":
        from tools.cli import main as tools_main

        return tools_main(argv[1:], prog="turnout tools")
    if argv and argv[0] == "keys":
        return _keys_command(argv[1:])
    if argv and argv[0] == "bench":
        return _bench_command(argv[1:])
    parser = argparse.ArgumentParser(prog="turnout", description="turnout: an inference server for language models")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    sub.add_parser("tools", help="offline tools: tokenizer training, pretraining, ... (turnout tools --help)")
    sub.add_parser("keys", help="API keys: `turnout keys hash`, `turnout keys new` (turnout keys --help)")
    sub.add_parser("bench", help="serving benchmark against any OpenAI-compatible server, with vLLM's metrics, "
                                 "JSON and plots; `turnout bench compare` for two servers (turnout bench --help)")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
