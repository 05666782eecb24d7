"""Headless Chromium for the browser tests: Debian's `chromium` driven by pip's `playwright`, which is never
asked to download a browser of its own (`make chromium` installs Debian's; CI runs it through `make test`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("TURNOUT_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def launch(playwright):
    """The browser, or a skip where it is missing, except under CI (which must have it: `make test` installs it)."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: run `make chromium` (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def screenshot_dir(tmp_path_factory) -> Path:
    """TURNOUT_SCREENSHOTS when set (a folder to keep), else a fresh folder under pytest's tmp path."""
    wanted = os.environ.get("TURNOUT_SCREENSHOTS")
    path = Path(wanted) if wanted else tmp_path_factory.mktemp("playground-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()
