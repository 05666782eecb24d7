"""The artifact manifest: format 2 fields, reading format 1, checksum verification and `tools inspect`."""

import json
import shutil

import pytest

from tools.cli import main as tools_main
from tools.manifest import (
    ArtifactCorrupted,
    lineage_entry,
    normalized,
    parent_record,
    read_manifest,
    verify_artifact,
    write_manifest,
)
from tools.merge import merged_lineage


def _artifact(tmp_path, **info):
    (tmp_path / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "config.json").write_text("{}")
    return write_manifest(tmp_path, {"name": "demo", **info})


def test_write_fills_format_2_defaults_and_reads_back(tmp_path):
    written = _artifact(tmp_path)
    read = read_manifest(tmp_path)
    assert read == written
    assert read["format_version"] == 2
    assert (read["base_model"], read["lineage"], read["quantization"], read["adapter"]) == (None, [], None, None)
    assert set(read["files"]) == {"weights.bin", "config.json"}


def test_child_inherits_the_parents_lineage(tmp_path):
    step = lineage_entry("pretrain", "python -m tools pretrain", {"steps": 3}, "2026-01-01T00:00:00Z", 1.23,
                         {"perplexity": 9.0})
    _artifact(tmp_path, lineage=[step])
    name, lineage = parent_record(tmp_path)
    assert name == "demo" and lineage == [step] and step["duration_s"] == 1.2


@pytest.mark.parametrize("bad", [
    {"lineage": {"tool": "x"}},
    {"lineage": [{"tool": "x"}]},
    {"adapter": {"r": 8}},
    {"quantization": "int8"},
    {"base_model": 3},
    {"name": ""},
])
def test_malformed_fields_are_refused_naming_the_key(tmp_path, bad):
    with pytest.raises(ValueError, match="manifest"):
        _artifact(tmp_path, **bad)


def test_format_1_manifest_of_the_bundled_model_reads_as_one_pretrain_step(bundled_model_dir):
    manifest = read_manifest(bundled_model_dir)
    view = normalized(manifest)
    assert view["base_model"] is None and view["adapter"] is None
    assert [step["tool"] for step in view["lineage"]] == ["pretrain"]
    assert view["lineage"][0]["metrics"]["held_out_perplexity"] > 0
    assert verify_artifact(bundled_model_dir)["name"] == manifest["name"]


def test_one_flipped_byte_is_caught_and_the_file_named(tmp_path):
    _artifact(tmp_path)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[1000] ^= 0x01
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted, match="'weights.bin'.*contents changed"):
        verify_artifact(tmp_path)


def test_missing_and_unlisted_files_are_caught(tmp_path):
    _artifact(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "extra.txt").write_text("surprise")
    with pytest.raises(ArtifactCorrupted, match="missing file 'config.json'.*unlisted file 'extra.txt'"):
        verify_artifact(tmp_path)


def test_directory_without_manifest_is_unverified_not_an_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert verify_artifact(tmp_path) is None
    assert parent_record(tmp_path) == (str(tmp_path), [])


def test_merged_lineage_does_not_repeat_the_base():
    base = [{"tool": "pretrain"}]
    adapter = [{"tool": "pretrain"}, {"tool": "finetune"}]
    assert merged_lineage(base, adapter) == adapter
    assert merged_lineage(base, [{"tool": "finetune"}]) == [*base, {"tool": "finetune"}]


def test_inspect_prints_the_manifest_and_exits_1_when_corrupted(tmp_path, bundled_model_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(bundled_model_dir, model)
    assert tools_main(["inspect", str(model)]) == 0
    text = capsys.readouterr().out
    assert "turnout-default-tiny-llama" in text and "pretrain" in text and "model.safetensors" in text
    assert "verified:      yes" in text
    assert tools_main(["inspect", str(model), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["verification"] == {"ok": True, "problems": []} and view["lineage"][0]["tool"] == "pretrain"
    with open(model / "config.json", "a") as f:
        f.write(" ")
    assert tools_main(["inspect", str(model)]) == 1
    assert "'config.json': size" in capsys.readouterr().out


def test_inspect_of_a_directory_without_manifest_is_a_clear_error(tmp_path, capsys):
    assert tools_main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
