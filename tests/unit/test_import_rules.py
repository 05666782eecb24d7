"""The layout's import rules, read from the source (every import statement, function-level ones too):

- `backends` imports neither `server` nor `tools`: engines know nothing of the front ends or offline tools
  (what both sides share, like the artifact manifest's checks, lives in `backends`);
- no backend imports another backend's package or module: what two backends share (the detokenizer, stop
  strings, tokenizing) lives at `backends/` level. Only the registry names them all.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "backends"
BACKEND_NAMES = {"hf", "openai", "tgi", "trtllm", "vllm"}
"""The backends (a package or a module each); every other module of `backends` is shared."""


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def backend_of(path: Path) -> str | None:
    """Which backend a file of `backends/` belongs to, or None for a shared module."""
    part = path.relative_to(BACKENDS).parts[0].removesuffix(".py")
    return part if part in BACKEND_NAMES else None


def test_every_backend_is_listed_here():
    present = {p.name.removesuffix(".py") for p in BACKENDS.iterdir() if p.is_dir() or p.suffix == ".py"}
    shared = {"__init__", "__pycache__", "base", "types", "errors", "validation", "tokenizing", "detokenizer",
              "stop_strings", "artifact", "registry", "embeddings"}
    assert present - shared == BACKEND_NAMES, "a new module in backends/: a backend (BACKEND_NAMES) or shared?"


def test_backends_import_neither_server_nor_tools():
    offending = [(str(path.relative_to(ROOT)), name) for path in BACKENDS.rglob("*.py")
                 for name in imported_modules(path) if name.split(".")[0] in ("server", "tools")]
    assert not offending


def test_no_backend_imports_another_backend():
    offending = []
    for path in BACKENDS.rglob("*.py"):
        if path.name == "registry.py" and path.parent == BACKENDS:
            continue  # the one table of every backend
        own = backend_of(path)
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "backends" and len(parts) > 1 and parts[1] in BACKEND_NAMES and parts[1] != own:
                offending.append((str(path.relative_to(ROOT)), name))
    assert not offending
