"""`turnout tools inspect DIR`: an artifact's manifest for people (or as JSON), and whether its files match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.manifest import normalized, read_manifest, verify_digests


def _scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    """Flatten nested metrics to `key=value` for the numbers and short strings; lists are skipped."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            parts += _scalar_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{prefix}{key}={value}")
    return parts


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(manifest: dict[str, Any], problems: list[str] | None) -> str:
    m = normalized(manifest)
    lines = [
        f"name:          {m.get('name')}",
        f"format:        {m.get('format_version')}",
        f"base model:    {m['base_model'] or '(none: pretrained)'}",
        f"adapter:       {json.dumps(m['adapter']) if m['adapter'] else '(none: full model)'}",
        f"quantization:  {json.dumps(m['quantization']) if m['quantization'] else '(none)'}",
        f"lineage:       {len(m['lineage'])} step(s)",
    ]
    for i, step in enumerate(m["lineage"], 1):
        lines.append(f"  {i}. {step['tool']} at {step['started_utc']} ({step['duration_s']} s)")
        if step.get("command"):
            lines.append(f"     $ {step['command']}")
        metrics = _scalar_metrics(step.get("metrics") or {})
        if metrics:
            lines.append("     " + ", ".join(metrics[:16]) + (" ..." if len(metrics) > 16 else ""))
    files = m.get("files", {})
    total = sum(f.get("size", 0) for f in files.values())
    lines.append(f"files:         {len(files)} ({_size(total)})")
    for name, entry in files.items():
        lines.append(f"  {name:<32} {_size(entry.get('size', 0)):>10}  sha256 {str(entry.get('sha256'))[:16]}...")
    if problems is None:
        lines.append("verified:      not checked (--no-verify)")
    elif problems:
        lines.append("verified:      NO")
        lines += [f"  {p}" for p in problems]
    else:
        lines.append("verified:      yes, every file matches its sha256")
    return "\n".join(lines)


def inspect(directory: str | Path, as_json: bool, verify: bool) -> tuple[str, bool]:
    """(text to print, whether the artifact is intact); raises FileNotFoundError without a manifest."""
    manifest = read_manifest(directory)
    problems = verify_digests(directory, manifest) if verify else None
    if as_json:
        view = normalized(manifest)
        if problems is not None:
            view = {**view, "verification": {"ok": not problems, "problems": problems}}
        return json.dumps(view, indent=2), not problems
    return render(manifest, problems), not problems
