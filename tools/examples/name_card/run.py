"""The name-card example end to end: data -> LoRA fine-tune (evaluated before/after) -> merge -> quantize
(int8) -> serve the merged, quantized model -> ask it every held-out question with the `openai` client.

    python -m tools.examples.name_card.run [--work DIR] [--epochs N]

Every step is the command a user would type (printed before it runs), so this script is also the recipe.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tools.examples.name_card.make_data import write

REPO = Path(__file__).resolve().parents[3]
SERVED_NAME = "name-card"


def _run(args: list[str]) -> None:
    print(f"\n$ {shlex.join(args)}", flush=True)
    subprocess.run(args, cwd=REPO, check=True)


def _tools(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools", *args]  # what `turnout tools ...` runs, from this source tree


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(serve_args: list[str], models: list[str], questions: list[str], timeout: float = 180.0
         ) -> dict[str, list[str]]:
    """Start `turnout serve` with ``serve_args``, ask each of ``models`` the chat questions, stop the server;
    return {model: answers}."""
    import httpx
    import openai

    port = _free_port()
    command = [sys.executable, "-m", "server", "serve", *serve_args, "--port", str(port)]
    print(f"\n$ {shlex.join(command)} &", flush=True)
    server = subprocess.Popen(command, cwd=REPO)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.3)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answers: dict[str, list[str]] = {}
        for model in models:
            answers[model] = [
                client.chat.completions.create(model=model, temperature=0, max_tokens=24,
                                               messages=[{"role": "user", "content": q}]).choices[0].message.content
                for q in questions
            ]
        return answers
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/turnout-name-card"),
                        help="where data and artifacts go (default: %(default)s)")
    parser.add_argument("--base", type=Path, default=REPO / "server" / "default_model",
                        help="model to fine-tune (default: the bundled model)")
    parser.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument("--method", default="lora", choices=["lora", "qlora", "full"],
                        help="fine-tuning method (default: %(default)s)")
    args = parser.parse_args()
    work = args.work.resolve()
    adapter, merged, quantized = work / "adapter", work / "merged", work / "quantized"

    train, held_out = write(work / "data")
    print(f"data: {train} ({sum(1 for _ in open(train))} records), {held_out} ({sum(1 for _ in open(held_out))})")
    report_path = work / "finetune_report.json"
    _run(_tools("finetune", "--model", str(args.base), "--data", str(train), "--eval-data", str(held_out),
                "--out", str(adapter), "--method", args.method, "--epochs", str(args.epochs), "--batch-size", "8",
                "--lr", "0.005" if args.method != "full" else "0.0005", "--report", str(report_path)))
    report = json.loads(report_path.read_text())
    print(f"\nheld-out exact match: {report['before']['exact_match']:.0%} before -> "
          f"{report['after']['exact_match']:.0%} after ({report['train']['steps']} steps, "
          f"{report['train']['seconds']} s); held-out perplexity {report['before']['perplexity']} -> "
          f"{report['after']['perplexity']}")

    serve_dir = adapter
    if args.method != "full":
        _run(_tools("merge", "--base", str(args.base), "--adapter", str(adapter), "--out", str(merged)))
        serve_dir = merged
    _run(_tools("quantize", "--model", str(serve_dir), "--out", str(quantized), "--method", "int8"))
    _run(_tools("inspect", str(quantized)))

    records = [json.loads(line)["messages"] for line in open(held_out)]
    questions, references = [r[0]["content"] for r in records], [r[1]["content"] for r in records]
    answers = _ask(["--model", str(quantized), "--served-model-name", SERVED_NAME], [SERVED_NAME], questions)
    served = answers[SERVED_NAME]
    exact = sum(a.strip() == r.strip() for a, r in zip(served, references, strict=True)) / len(references)
    print(f"\nQ: {questions[0]}\nA ({SERVED_NAME}, merged + int8, served): {served[0]}\n"
          f"(reference: {references[0]})")
    print(f"served merged + int8 artifact, held-out exact match over the OpenAI API: {exact:.0%} "
          f"({len(references)} questions)")
    if args.method != "full":
        # The same adapter without merging, next to its base, in one server.
        answers = _ask(["--model", str(args.base), "--served-model-name", "base", "--lora",
                        f"{SERVED_NAME}-lora={adapter}"], ["base", f"{SERVED_NAME}-lora"], questions[:1])
        for model, answer in answers.items():
            print(f"A ({model}): {answer[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
