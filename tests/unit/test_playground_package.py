"""The playground's files ship in the package (a non-editable install serves them too): each file under
server/playground/static/ is named by pyproject.toml's package data, and is one the server serves."""

import fnmatch
import tomllib
from pathlib import Path

from server.playground.routes import FILES

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "server" / "playground" / "static"


def test_every_static_file_is_package_data_and_served():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["server"]
    files = sorted(path.relative_to(STATIC.parent.parent).as_posix() for path in STATIC.iterdir())
    assert files and "playground/static/index.html" in files
    assert [name for name in files if not any(fnmatch.fnmatch(name, glob) for glob in globs)] == []
    assert sorted(FILES) == sorted(path.name for path in STATIC.iterdir())
