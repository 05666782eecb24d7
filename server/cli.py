"""The `turnout` command: `turnout serve ...` runs the server, `turnout tools ...` the offline tools."""

from __future__ import annotations

import argparse
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
                   help="most sequences decoding at once (KV cache slots)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="longest prompt + completion in tokens; default: the model's context length")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048,
                   help="most tokens computed per engine step; longer prompts are prefilled in chunks")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights and activations dtype")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"],
                   help="transformers attention kernel")
    p.add_argument("--num-threads", type=int, default=None, help="torch threads for the engine")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--grpc-port", type=_port_or_off, default=0,
                   help="also serve the gRPC API (turnout.v1.Generation, health, reflection) on this port, "
                        "in the same process; 0: no gRPC")
    p.add_argument("--log-format", default="text", choices=["text", "json"],
                   help="json: one JSON object per log line, with one access line per request")
    p.add_argument("--otel-traces", default=None, choices=["console", "otlp"],
                   help="OpenTelemetry spans per request (route -> backend -> stream); needs turnout[otel]")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig
    from server.app import build_app
    from server.observe import Telemetry
    from server.router import Router
    from server.tracing import Tracer, TracingUnavailable

    model_dir = args.model or default_model_dir()
    name = args.served_model_name or (None if args.model else DEFAULT_MODEL_NAME)
    try:
        config = HFEngineConfig(
            model=model_dir,
            served_model_name=name,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            attn_implementation=args.attn_implementation,
            num_threads=args.num_threads,
            device=args.device,
        )
        tracer = Tracer.create(args.otel_traces) if args.otel_traces else Tracer()
    except (ValueError, TracingUnavailable) as exc:
        print(f"turnout serve: {exc}", file=sys.stderr)
        return 2
    backend = HFBackend(config)
    app = build_app(Router({backend.info.name: backend}), Telemetry(tracer=tracer), grpc_port=args.grpc_port,
                    grpc_host=args.host)
    # Our access log (server/observe.py) replaces uvicorn's; log_config=None keeps our log format.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10,
                access_log=False, log_config=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "tools":
        from tools.cli import main as tools_main

        return tools_main(argv[1:], prog="turnout tools")
    parser = argparse.ArgumentParser(prog="turnout", description="turnout: an inference server for language models")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    sub.add_parser("tools", help="offline tools: tokenizer training, pretraining, ... (turnout tools --help)")
    args = parser.parse_args(argv)
    from server.access_log import configure_logging

    configure_logging(args.log_level, args.log_format)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
