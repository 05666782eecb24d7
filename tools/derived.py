"""What every tool that turns a parent model into a new artifact shares.

A derived artifact (aligned, distilled, quantized) must be servable on its own, so it carries
copies of the parent's tokenizer files and chat template, and a manifest whose ``lineage`` is the
parent's lineage plus one entry for this run. Held-out perplexity is scored on the same held-out
topics and window length the parent's manifest recorded, so numbers compare across the lineage.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from tools.manifest import read_manifest, utc_now, write_manifest

# Files that make a directory a usable tokenizer with its chat template and stop tokens.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the parent's tokenizer, chat template and generation config; returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file() and not (Path(dst) / name).exists():
            shutil.copy(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def write_derived_manifest(
    out: Path,
    parent: str | Path,
    *,
    name: str,
    tool: str,
    command: str,
    arguments: dict[str, Any],
    started_utc: str,
    started: float,
    metrics: dict[str, Any],
    quantization: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out/manifest.json``: name, parent, lineage (parent's + this run), quantization, extras."""
    parent_info = parent_manifest(parent)
    lineage = list(parent_info.get("lineage") or [])
    lineage.append(
        {
            "tool": tool,
            "command": command,
            "arguments": arguments,
            "started_utc": started_utc,
            "duration_s": round(time.monotonic() - started, 1),
            "metrics": metrics,
        }
    )
    info = {
        "name": name,
        "created_utc": utc_now(),
        "base_model": parent_info.get("name") or str(Path(parent).resolve()),
        "lineage": lineage,
        "quantization": quantization,
        **(extra or {}),
    }
    return write_manifest(out, info)


def parent_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The parent's manifest, or ``{}`` when it has none (a model made elsewhere)."""
    try:
        return read_manifest(model_dir)
    except FileNotFoundError:
        return {}


def held_out_setup(parent: str | Path) -> tuple[int, float, int]:
    """(corpus seed, held-out fraction, window length) from the parent's manifest, else the defaults."""
    arguments = parent_manifest(parent).get("arguments", {})
    pretrain = arguments.get("pretrain", {})
    return (
        int(arguments.get("corpus_seed", 0)),
        float(arguments.get("held_out_fraction", 0.05)),
        int(pretrain.get("seq_len", 256)),
    )


def corpus_streams(tokenizer, parent: str | Path, chat: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(training stream, held-out stream, eval window) of the parent's corpus split, packed as pretrain did."""
    from tools.chat import chat_examples
    from tools.corpus import split_corpus
    from tools.packing import token_stream
    from tools.tokenizer import EOS

    seed, fraction, seq_len = held_out_setup(parent)
    split = split_corpus(seed=seed, held_out_fraction=fraction)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        eos_id = tokenizer.eos_token_id
    conversations = chat_examples(split.train) if chat else []
    train = token_stream(tokenizer, [*split.train.values(), *conversations], eos_id)
    held_out = token_stream(tokenizer, split.held_out.values(), eos_id)
    return train, held_out, seq_len


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a JSONL file; each must be an object with the ``required`` keys (errors quote the line)."""
    rows = []
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"data file {str(path)!r} not found")
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing {missing}")
        rows.append(row)
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    return rows


def directory_bytes(path: str | Path) -> int:
    """Size of the weight files (what a quantizer shrinks), not tokenizer or manifest."""
    root = Path(path)
    return sum(p.stat().st_size for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))


def report(path: str | Path | None, data: dict[str, Any]) -> None:
    """Print the JSON report, and write it to ``path`` when given."""
    text = json.dumps(data, indent=2)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")
    print(text)
