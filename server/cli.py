"""The `turnout` command: `turnout serve ...` runs the server, `turnout tools ...` the offline tools."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources

DEFAULT_MODEL_NAME = "turnout-tiny"


def default_model_dir() -> str:
    """The bundled model, shipped as package data, so `turnout serve` works from any directory."""
    return str(resources.files("server") / "default_model")


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
    p.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                   help="serve a LoRA adapter next to the model, as model NAME (repeatable); requests for "
                        "adapters and the base share batches")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _name_and_dir(spec: str) -> tuple[str, str]:
    name, sep, directory = spec.partition("=")
    if not sep or not name or not directory:
        raise ValueError(f"--lora takes NAME=DIR, got {spec!r}")
    return name, directory


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig
    from server.app import build_app
    from server.router import Router

    model_dir = args.model or default_model_dir()
    name = args.served_model_name or (None if args.model else DEFAULT_MODEL_NAME)
    try:
        adapters = tuple(_name_and_dir(spec) for spec in args.lora)
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
            adapters=adapters,
        )
    except ValueError as exc:
        print(f"turnout serve: {exc}", file=sys.stderr)
        return 2
    backend = HFBackend(config)
    app = build_app(Router({backend.info.name: backend}))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
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
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
