"""The repository documents itself: no file points at documents outside it (a `../shared` directory) or at
an absolute path of one developer's machine, which a clone does not have."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|/work/|/root/|/home/[a-z]")


def test_no_tracked_file_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml", "Makefile", ".ci/*"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    me = str(Path(__file__).relative_to(ROOT))
    hits = [f"{name}:{number}: {line.strip()}" for name in tracked if name != me
            for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)
