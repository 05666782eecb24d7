"""`turnout serve` checks a model's files against its manifest before serving it."""

import logging
import shutil
import subprocess
import sys

from backends.hf.config import HFEngineConfig
from backends.hf.loader import load_model
from tests.server_thread import free_port


def test_serve_refuses_a_model_with_one_flipped_byte(tmp_path, bundled_model_dir):
    model = tmp_path / "model"
    shutil.copytree(bundled_model_dir, model)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a tensor: the file still parses, only the checksum can tell
    weights.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--model", str(model), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "'model.safetensors'" in r.stderr and "does not match its manifest.json" in r.stderr


def test_directory_without_manifest_loads_with_an_unverified_log_line(random_models, caplog):
    with caplog.at_level(logging.WARNING, logger="backends.hf.loader"):
        loaded = load_model(HFEngineConfig(model=str(random_models["llama"])))
    assert loaded.model is not None
    assert any("unverified" in record.getMessage() for record in caplog.records)


def test_serve_refuses_a_malformed_or_missing_lora_adapter(tmp_path, capsys):
    from server.cli import main

    for spec, message in (("no-equals-sign", "NAME=DIR"), (f"x={tmp_path}", "not a LoRA adapter directory")):
        assert main(["serve", "--lora", spec]) == 2
        assert message in capsys.readouterr().err
