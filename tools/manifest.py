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

import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(directory: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256": hex, "size": bytes}}`` for every file but the manifest.

    Sorted by path so the manifest is stable. Hidden files and ``__pycache__`` are skipped.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"not a directory: {str(root)!r}")
    digests: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.as_posix() == MANIFEST_NAME:
            continue
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        digests[rel.as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return digests


def verify_digests(directory: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Problems found comparing ``directory`` with its manifest's ``files``; empty means intact."""
    root = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(root)
    expected: dict[str, dict[str, Any]] = manifest.get("files", {})
    actual = file_digests(root)
    problems = [f"missing file {name!r}" for name in sorted(set(expected) - set(actual))]
    problems += [f"unlisted file {name!r}" for name in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        if expected[name] != actual[name]:
            want, got = expected[name], actual[name]
            if want.get("size") != got["size"]:
                problems.append(f"{name!r}: size {got['size']} bytes, manifest says {want.get('size')}")
            else:
                problems.append(f"{name!r}: sha256 {got['sha256'][:16]}..., manifest says "
                                f"{str(want.get('sha256'))[:16]}... (contents changed)")
    return problems


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


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest as stored (any format version); see ``normalized`` for a uniform view."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {str(Path(directory))!r}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{str(path)!r} is not a turnout manifest (no 'files' table)")
    version = manifest.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{str(path)!r} has format_version {version!r}; this turnout reads 1 and {FORMAT_VERSION}")
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


class ArtifactCorrupted(ValueError):
    """The directory's files do not match its manifest."""


def verify_artifact(directory: str | Path) -> dict[str, Any] | None:
    """Check ``directory`` against its manifest; return the manifest, or None when there is none.

    Raises ArtifactCorrupted naming every file that is missing, unlisted or has changed.
    """
    root = Path(directory)
    if not (root / MANIFEST_NAME).is_file():
        return None
    manifest = read_manifest(root)
    problems = verify_digests(root, manifest)
    if problems:
        raise ArtifactCorrupted(
            f"model directory {str(root)!r} does not match its {MANIFEST_NAME} (corrupted or partly "
            f"copied): " + "; ".join(problems)
        )
    return manifest
