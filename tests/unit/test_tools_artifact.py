"""How every tool writes an artifact (tools/artifact.py): checked first, staged beside the destination,
swapped in only when complete; a failure leaves the previous artifact as it was and no staging behind."""

import pytest

from tools.artifact import check_out_dir, staged_output
from tools.manifest import read_manifest, verify_artifact, write_manifest


def _artifact(path, text: str) -> None:
    path.mkdir(parents=True)
    (path / "weights.bin").write_text(text)
    write_manifest(path, {"name": path.name})


def _siblings(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_a_finished_block_replaces_the_previous_artifact(tmp_path):
    out = tmp_path / "model"
    _artifact(out, "old")
    with staged_output(out) as staging:
        assert staging.parent == tmp_path and staging != out
        (staging / "weights.bin").write_text("new")
        write_manifest(staging, {"name": "model"})
        assert (out / "weights.bin").read_text() == "old"  # nothing visible until the block ends
    assert (out / "weights.bin").read_text() == "new" and verify_artifact(out) is not None
    assert _siblings(out) == []
    assert (out.stat().st_mode & 0o777, (out / "weights.bin").stat().st_mode & 0o777) == (0o755, 0o644)


def test_a_failed_block_leaves_the_previous_artifact_and_no_staging(tmp_path):
    out = tmp_path / "model"
    _artifact(out, "old")
    before = read_manifest(out)
    with pytest.raises(OSError, match="disk full"):
        with staged_output(out) as staging:
            (staging / "weights.bin").write_text("half")
            raise OSError("disk full")
    assert read_manifest(out) == before and verify_artifact(out) is not None
    assert _siblings(out) == []


def test_a_failed_first_build_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "model"
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out) as staging:
            (staging / "weights.bin").write_text("half")
            raise KeyboardInterrupt
    assert not out.exists() and _siblings(out) == []


def test_a_failed_swap_puts_the_previous_artifact_back(tmp_path, monkeypatch):
    out = tmp_path / "model"
    _artifact(out, "old")
    real_rename = type(out).rename

    def rename(self, target):
        if self.name.startswith(".model.") and not self.name.endswith(".old"):
            raise OSError("rename failed")  # the staging directory cannot take the artifact's place
        return real_rename(self, target)

    monkeypatch.setattr(type(out), "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        with staged_output(out) as staging:
            (staging / "weights.bin").write_text("new")
    assert (out / "weights.bin").read_text() == "old" and verify_artifact(out) is not None
    assert _siblings(out) == []


def test_a_directory_that_is_not_an_artifact_is_refused_before_any_work(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty and holds no manifest.json"):
        check_out_dir(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        with staged_output(tmp_path):
            pytest.fail("the block must not run")
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
    with pytest.raises(FileExistsError, match="is not a directory"):
        check_out_dir(tmp_path / "precious.txt")


def test_an_empty_or_missing_directory_may_be_written(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_out_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()
    assert check_out_dir(tmp_path / "missing") == (tmp_path / "missing").resolve()
