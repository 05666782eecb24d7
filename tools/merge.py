"""Fold a LoRA adapter into its base model: a full artifact every backend can load without peft."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from tools.artifact import check_out_dir, require_adapter_dir, require_model_dir, staged_output
from tools.manifest import lineage_entry, parent_record, utc_now, write_manifest


def merged_lineage(base: list[dict], adapter: list[dict]) -> list[dict]:
    """The base's runs, then the adapter's own. An adapter made from this base already starts with the
    base's lineage; it is not repeated."""
    if adapter[: len(base)] == base:
        return list(adapter)
    return [*base, *adapter]


def merge(base_dir: str | Path, adapter_dir: str | Path, out: str | Path, command: str = "") -> dict[str, Any]:
    """Write base + adapter (peft merge_and_unload) into ``out``; return its manifest."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = require_model_dir(base_dir, "--base")
    adapter_path = require_adapter_dir(adapter_dir, "--adapter")
    out_dir = check_out_dir(out)
    started_utc, started = utc_now(), time.monotonic()
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_path).merge_and_unload()
    # The adapter directory carries the tokenizer it was trained with (the base's); prefer it.
    tokenizer_source = adapter_path if (adapter_path / "tokenizer_config.json").is_file() else base_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)

    base_name, base_lineage = parent_record(base_path)
    adapter_name, adapter_lineage = parent_record(adapter_path)
    with staged_output(out_dir) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        entry = lineage_entry("merge", command, {"base": str(base_path), "adapter": str(adapter_path)}, started_utc,
                              time.monotonic() - started,
                              {"parameters": sum(p.numel() for p in model.parameters()), "adapter": adapter_name})
        manifest = write_manifest(staging, {
            "name": out_dir.name,
            "base_model": base_name,
            "lineage": [*merged_lineage(base_lineage, adapter_lineage), entry],
        })
    return manifest
