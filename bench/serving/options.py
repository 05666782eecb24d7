"""The command-line options `turnout bench` and `turnout bench compare` share: the target, the workload,
the load levels and the output, and their checks (a bad value exits 2 quoting it)."""

from __future__ import annotations

import argparse
import json
import math

from bench.serving.load_shapes import LoadShape
from bench.serving.metrics import SLO_NAMES
from bench.serving.request import ENDPOINTS
from bench.serving.workloads import WORKLOADS

DEFAULT_OUTPUT_LEN = 64


def add_request_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("requests")
    g.add_argument("--endpoint", choices=ENDPOINTS, default="completions",
                   help="completions: POST /v1/completions; chat: POST /v1/chat/completions (the prompt as one "
                        "user message)")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="stream (SSE); TTFT, TPOT and ITL exist only when streaming")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature sent with every request (0: greedy)")
    g.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                   help="send ignore_eos (vLLM's and turnout's extension) so every request generates exactly "
                        "its max_tokens; --no-ignore-eos lets the model stop early (reported as short outputs)")
    g.add_argument("--token-ids", action="store_true",
                   help="send completions prompts as token ids (exact lengths; needs a server that takes them)")
    g.add_argument("--extra-body", type=json.loads, default=None, metavar="JSON",
                   help='JSON object merged into every request body, e.g. \'{"top_p": 0.9}\'')
    g.add_argument("--api-key", default=None,
                   help="sent as Authorization: Bearer KEY; default: $OPENAI_API_KEY, else none")
    g.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="extra request header (repeatable)")
    g.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds one request may take before it counts as failed (timeout)")


def add_workload_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload", "what is sent; prompt text is cut from the Python docs shipped with "
                             "Python unless it comes from a file")
    g.add_argument("--dataset", choices=WORKLOADS, default="random",
                   help="random: prompts and outputs of (ranged) lengths; shared-prefix: N prefixes x M "
                        "suffixes (prefix caching); conversations: a local JSONL/JSON file of conversations")
    g.add_argument("--num-prompts", type=_positive_int, default=64,
                   help="requests per load level (random and conversations)")
    g.add_argument("--input-len", type=_positive_int, default=128, help="random: prompt tokens (mean)")
    g.add_argument("--output-len", type=_positive_int, default=None,
                   help=f"max_tokens per request (mean for random); default {DEFAULT_OUTPUT_LEN}, or for "
                        "conversations the length of each conversation's answer")
    g.add_argument("--range-ratio", type=float, default=0.0,
                   help="random: lengths drawn uniformly from [len x (1-r), len x (1+r)]; 0: fixed")
    g.add_argument("--prefix-len", type=_positive_int, default=256, help="shared-prefix: tokens per prefix")
    g.add_argument("--suffix-len", type=_positive_int, default=32, help="shared-prefix: tokens per suffix")
    g.add_argument("--num-prefixes", type=_positive_int, default=4, help="shared-prefix: N distinct prefixes")
    g.add_argument("--prompts-per-prefix", type=_positive_int, default=16,
                   help="shared-prefix: M prompts per prefix (N x M requests per level)")
    g.add_argument("--dataset-path", default=None, metavar="FILE",
                   help="conversations: JSONL (or a JSON list) of ShareGPT `conversations` or OpenAI `messages`")
    g.add_argument("--shuffle", action="store_true", help="conversations: take them in a seeded random order")
    g.add_argument("--max-total-len", type=_positive_int, default=None, metavar="N",
                   help="conversations: skip those whose prompt + answer exceed N tokens")
    g.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="the model's tokenizer directory, for token counts; default: the server's /tokenize")
    g.add_argument("--seed", type=int, default=0, help="seed for lengths, shuffles and arrival times")


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load", "one run per level; give a list to sweep (closed loop or open loop, "
                             "not both)")
    g.add_argument("--concurrency", type=_positive_int, nargs="+", default=None, metavar="C",
                   help="closed loop: keep C requests in flight (default: 8)")
    g.add_argument("--request-rate", type=_rate, nargs="+", default=None, metavar="R",
                   help="open loop: R requests per second on average (inf: all at once)")
    g.add_argument("--burstiness", type=float, default=1.0,
                   help="open loop: gamma shape of the gaps (1: Poisson; <1 burstier; >1 more regular)")
    g.add_argument("--max-concurrency", type=_positive_int, default=None, metavar="N",
                   help="open loop: at most N requests in flight")
    g.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="untimed requests first (their own prompts), at the first level's concurrency")


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--result-dir", default=None, metavar="DIR",
                   help="where the JSON files and PNG plots go; default: bench-results/<date-time>")
    g.add_argument("--label", default=None, help="a name for this run in its result files")
    g.add_argument("--percentiles", type=_percentiles, default=[90.0, 99.0], metavar="Q,Q",
                   help="latency percentiles to report besides mean and median, e.g. 50,90,99,99.9")
    g.add_argument("--goodput", nargs="+", default=[], metavar="NAME:MS",
                   help=f"SLOs for goodput, names {', '.join(SLO_NAMES)}: e.g. --goodput ttft:500 tpot:50; a "
                        "request is good when it meets all of them")
    g.add_argument("--save-detailed", action="store_true",
                   help="also keep per-request lists in each JSON (input_lens, output_lens, ttfts, itls, "
                        "latencies, start_times, errors, generated_texts), as vLLM's --save-detailed")
    g.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="write PNG plots (needs matplotlib, in turnout[bench])")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar on stderr while each level runs")


def run_settings(args: argparse.Namespace, environ: dict) -> tuple[list[LoadShape], dict[str, float], dict]:
    """What a run (or each side of a compare) takes from the command line, checked: (load shapes, goodput
    SLOs, request headers). Raises ValueError saying what is wrong."""
    check(args)
    return load_shapes(args), goodput_slos(args.goodput, args.stream), headers(args, environ)


def load_shapes(args: argparse.Namespace) -> list[LoadShape]:
    """The levels the flags name; ValueError for a contradictory set."""
    if args.concurrency and args.request_rate:
        raise ValueError("give --concurrency (closed loop) or --request-rate (open loop), not both; "
                         "--max-concurrency caps an open loop")
    if args.request_rate:
        return [LoadShape(request_rate=r, burstiness=args.burstiness, max_concurrency=args.max_concurrency)
                for r in args.request_rate]
    if args.max_concurrency is not None:
        raise ValueError("--max-concurrency caps an open loop: give --request-rate too, or use --concurrency")
    return [LoadShape(concurrency=c) for c in (args.concurrency or [8])]


def goodput_slos(values: list[str], stream: bool) -> dict[str, float]:
    slos = {}
    for value in values:
        name, sep, limit = value.partition(":")
        if not sep or name not in SLO_NAMES:
            raise ValueError(f"--goodput takes NAME:MS with NAME one of {SLO_NAMES}, got {value!r}")
        try:
            slos[name] = float(limit)
        except ValueError:
            raise ValueError(f"--goodput {value!r}: {limit!r} is not a number of milliseconds") from None
        if slos[name] < 0:
            raise ValueError(f"--goodput {value!r}: a limit cannot be negative")
    if not stream and {"ttft", "tpot"} & slos.keys():
        raise ValueError("--goodput ttft/tpot need streaming (TTFT is not measured with --no-stream)")
    return slos


def check(args: argparse.Namespace) -> None:
    """Checks across flags, and defaults that depend on the workload."""
    if not 0 <= args.range_ratio < 1:
        raise ValueError(f"--range-ratio must be in [0, 1), got {args.range_ratio}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.dataset == "conversations" and not args.dataset_path:
        raise ValueError("--dataset conversations needs --dataset-path FILE")
    if args.endpoint == "chat" and args.token_ids:
        raise ValueError("--token-ids works with --endpoint completions only (chat messages are text)")
    if args.output_len is None and args.dataset != "conversations":
        args.output_len = DEFAULT_OUTPUT_LEN


def headers(args: argparse.Namespace, environ: dict) -> dict:
    result = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--header takes NAME=VALUE, got {item!r}")
        result[name.strip()] = value.strip()
    key = args.api_key or environ.get("OPENAI_API_KEY")
    if key:
        result["Authorization"] = f"Bearer {key}"
    return result


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 requests/s (or inf), got {text}")
    return math.inf if math.isinf(value) else value


def _percentiles(text: str) -> list[float]:
    try:
        values = [float(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None
    if not values or not all(0 < q < 100 for q in values):
        raise argparse.ArgumentTypeError(f"percentiles must be in (0, 100), got {text!r}")
    return values
