"""The artifact manifest: how a model directory was made, how good it is, and what it contains.

``manifest.json`` sits next to the weights. Its ``files`` table (sha256 and size of every other
file) lets the server refuse a corrupted or half-copied model before loading it; the rest
(command line, arguments, seeds, tool versions, perplexities) lets a person rebuild and judge it.

Format 2 (what every tool writes now) adds the artifact's family tree::

    name          the artifact's name
    base_model    name (or path) of the artifact it was made from; null for a pretrained model
    lineage       one entry per tool run, the parent's entries first:
                  {"tool", "command", "arguments", "started_utc", "duration_s", "metrics"}
    quantization  null, or a dict describing how the weights were quantized
    adapter       null, or {"type": "lora", "base_model": ..., "r": ..., ...} for an adapter artifact
    files         {relative path: {"sha256", "size"}}

Format 1 manifests (the bundled model's) stay readable: ``normalized`` gives them the format-2 keys,
with one lineage entry made from their top-level record.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Reading and checking the format is shared with the backends' model loaders; tools use it from here.
from backends.artifact import FORMAT_VERSION as FORMAT_VERSION
from backends.artifact import MANIFEST_NAME as MANIFEST_NAME
from backends.artifact import ArtifactCorrupted as ArtifactCorrupted
from backends.artifact import file_digests as file_digests
from backends.artifact import read_manifest as read_manifest
from backends.artifact import sha256_file as sha256_file
from backends.artifact import verify_artifact as verify_artifact
from backends.artifact import verify_digests as verify_digests


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the bytes of a model."""
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_manifest(directory: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``info`` plus the format version, tool versions and file table; return the manifest.

    The format-2 keys ``info`` leaves out get their neutral values (no parent, empty lineage, not
    quantized, not an adapter); those it gives are checked (ValueError naming the key).
    """
    root = Path(directory)
    info = {**ARTIFACT_DEFAULTS, **info}
    check_artifact_fields(info)
    manifest = {
        "format_version": FORMAT_VERSION,
        **info,
        "versions": tool_versions(),
        "files": file_digests(root),
    }
    (root / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    return manifest



ARTIFACT_DEFAULTS: dict[str, Any] = {"base_model": None, "lineage": [], "quantization": None, "adapter": None}
LINEAGE_KEYS = ("tool", "command", "arguments", "started_utc", "duration_s", "metrics")


def check_artifact_fields(info: dict[str, Any]) -> None:
    """Raise ValueError when a format-2 key has the wrong shape."""
    if not isinstance(info.get("name"), str) or not info["name"]:
        raise ValueError(f"manifest 'name' must be a non-empty string, got {info.get('name')!r}")
    if info["base_model"] is not None and not isinstance(info["base_model"], str):
        raise ValueError(f"manifest 'base_model' must be a string or null, got {info['base_model']!r}")
    if not isinstance(info["lineage"], list):
        raise ValueError(f"manifest 'lineage' must be a list, got {info['lineage']!r}")
    for i, entry in enumerate(info["lineage"]):
        missing = [k for k in LINEAGE_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"manifest lineage entry {i} lacks {missing}: {entry!r}")
    if info["quantization"] is not None and not isinstance(info["quantization"], dict):
        raise ValueError(f"manifest 'quantization' must be a dict or null, got {info['quantization']!r}")
    adapter = info["adapter"]
    if adapter is not None and not (isinstance(adapter, dict) and adapter.get("type") and "base_model" in adapter):
        raise ValueError(f"manifest 'adapter' must be null or a dict with 'type' and 'base_model', got {adapter!r}")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lineage_entry(tool: str, command: str, arguments: dict[str, Any], started_utc: str, duration_s: float,
                  metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """One tool run, as it appears in ``lineage``."""
    return {"tool": tool, "command": command, "arguments": arguments, "started_utc": started_utc,
            "duration_s": round(duration_s, 1), "metrics": metrics or {}}


def normalized(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with every format-2 key; a format-1 manifest gets a lineage entry of its own build."""
    if manifest.get("format_version", 1) >= 2:
        return {**ARTIFACT_DEFAULTS, **manifest}
    entry = lineage_entry(
        tool="pretrain",
        command=manifest.get("command", ""),
        arguments=manifest.get("arguments", {}),
        started_utc=manifest.get("created_utc", ""),
        duration_s=float((manifest.get("durations_seconds") or {}).get("total", 0.0)),
        metrics=manifest.get("evaluation", {}),
    )
    return {**ARTIFACT_DEFAULTS, **manifest, "lineage": [entry]}


def parent_record(directory: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """What a child artifact inherits from the artifact in ``directory``: the parent's name (its
    manifest's, or the directory path when it has no manifest) and its lineage."""
    root = Path(directory)
    if not (root / MANIFEST_NAME).is_file():
        return str(root), []
    manifest = normalized(read_manifest(root))
    return manifest.get("name") or str(root), list(manifest["lineage"])
