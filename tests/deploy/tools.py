"""The deploy checks' command-line tools, from the virtualenv that runs the tests (`make` installs them:
helm by its own target, hadolint and kubernetes-validate with the dev extra). A missing tool fails the
test, never skips it: CI must not pass a check it did not run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # not resolved: a venv's python is a link to the base interpreter


def tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed next to {sys.executable} nor on PATH: `make test` installs it"
    return found


def run(*args: str, timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=kwargs.pop("cwd", ROOT),
                          **kwargs)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done
