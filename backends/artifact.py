"""Reading and checking an artifact's manifest: the contract between the offline tools that write model
directories (tools/manifest.py documents the whole format and writes it) and the backends that load them.

``manifest.json`` sits next to the weights; its ``files`` table (sha256 and size of every other file) lets
a backend refuse a corrupted or half-copied model before loading it.
"""

from __future__ import annotations

import hashlib
import json
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
