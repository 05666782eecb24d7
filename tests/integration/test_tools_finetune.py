"""`tools finetune` (lora, qlora, full) and `tools merge` on a tiny random model: a few steps each, checking
the artifacts they write (files, manifest, lineage) and that merging changes nothing about the outputs."""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from backends.hf.config import HFEngineConfig
from backends.hf.loader import load_model
from tools.cli import main as tools_main
from tools.manifest import read_manifest, verify_artifact

TRAINING = ["--max-steps", "3", "--batch-size", "4", "--max-eval", "4", "--max-new-tokens", "4", "--threads", "2",
            "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "train.jsonl"
    records = [{"messages": [{"role": "user", "content": f"Who owns project P{i}?"},
                             {"role": "assistant", "content": f"Owner: Person {i}."}]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _finetune(base, data, out, method: str, capsys) -> dict:
    report_path = out.parent / f"{method}-report.json"
    code = tools_main(["finetune", "--model", str(base), "--data", str(data), "--out", str(out),
                       "--method", method, "--report", str(report_path), *TRAINING])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report_path.read_text())
    return printed


def _check_report(report: dict, method: str) -> None:
    assert report["method"] == method and report["train"]["steps"] == 3
    for stage in ("before", "after"):
        assert report[stage]["examples"] == 2  # 10% of 24 records held out, rounded
        assert 0 <= report[stage]["exact_match"] <= 1 and report[stage]["perplexity"] > 1


@pytest.fixture(scope="module")
def lora_adapter(random_models, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "adapter"
    code = tools_main(["finetune", "--model", str(random_models["llama"]), "--data", str(data), "--out", str(out),
                       "--lora-r", "4", *TRAINING])
    assert code == 0
    return out


def test_lora_writes_an_adapter_artifact_with_lineage(lora_adapter, random_models):
    manifest = read_manifest(lora_adapter)
    assert (lora_adapter / "adapter_config.json").is_file() and not (lora_adapter / "config.json").exists()
    assert manifest["adapter"]["type"] == "lora" and manifest["adapter"]["r"] == 4
    assert manifest["base_model"] == str(random_models["llama"])  # a parent without a manifest: its path
    [step] = manifest["lineage"]
    assert step["tool"] == "finetune" and step["arguments"]["method"] == "lora"
    assert step["metrics"]["after"]["examples"] == 2 and step["command"].startswith("python -m tools finetune")
    assert verify_artifact(lora_adapter) is not None


def test_merge_gives_a_full_artifact_with_the_adapters_outputs(lora_adapter, random_models, tmp_path, capsys):
    base = random_models["llama"]
    out = tmp_path / "merged"
    assert tools_main(["merge", "--base", str(base), "--adapter", str(lora_adapter), "--out", str(out)]) == 0
    manifest = read_manifest(out)
    assert [s["tool"] for s in manifest["lineage"]] == ["finetune", "merge"]
    assert manifest["adapter"] is None and (out / "config.json").is_file()
    ids = torch.tensor([[5, 9, 17, 33, 2, 8]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
        unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), lora_adapter)(
            input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    loaded = load_model(HFEngineConfig(model=str(out)))  # verified against its manifest on the way in
    assert loaded.model.config.vocab_size == merged.shape[-1]


@pytest.fixture(scope="module")
def odd_width_llama(tokenizer_dir, tmp_path_factory):
    """A Llama whose MLP width (80) is not a multiple of 32, like the bundled model's 688: bitsandbytes' CPU
    kernel cannot repack such 4-bit layers, so evaluation must not take that path."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("odd") / "llama"
    vocab = len(PreTrainedTokenizerFast.from_pretrained(tokenizer_dir))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 bos_token_id=0, eos_token_id=0, pad_token_id=0)).save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


def test_qlora_trains_over_a_4bit_base_and_merges_into_the_float_one(odd_width_llama, data, tmp_path, capsys):
    base = odd_width_llama
    report = _finetune(base, data, tmp_path / "qlora", "qlora", capsys)
    _check_report(report, "qlora")
    assert read_manifest(tmp_path / "qlora")["adapter"]["method"] == "qlora"
    assert tools_main(["merge", "--base", str(base), "--adapter", str(tmp_path / "qlora"),
                       "--out", str(tmp_path / "merged")]) == 0


def test_full_finetune_writes_a_complete_model(random_models, data, tmp_path, capsys):
    report = _finetune(random_models["llama"], data, tmp_path / "full", "full", capsys)
    _check_report(report, "full")
    assert report["train"]["trainable_parameters"] == report["train"]["total_parameters"]
    manifest = read_manifest(tmp_path / "full")
    assert manifest["adapter"] is None and (tmp_path / "full" / "model.safetensors").is_file()


def test_bad_options_are_refused_with_the_value(random_models, data, tmp_path, capsys):
    code = tools_main(["finetune", "--model", str(random_models["llama"]), "--data", str(data),
                       "--out", str(tmp_path / "x"), "--method", "dora"])
    assert code == 2 and "'dora'" in capsys.readouterr().err
    code = tools_main(["merge", "--base", str(random_models["llama"]), "--adapter", str(tmp_path),
                       "--out", str(tmp_path / "y")])
    assert code == 2 and "adapter_config.json" in capsys.readouterr().err


def _save_fails_at_the_manifest(written: list[str]):
    """A write_manifest that fails like a full disk, half-way through the manifest, after the tool has
    written everything else; `written` gets what was in the staging directory by then."""

    def write_manifest(directory, info):
        written.extend(sorted(p.name for p in directory.iterdir()))
        (directory / "manifest.json").write_text('{"format_version": 2, "na')
        raise OSError(28, "No space left on device")

    return write_manifest


def _contents(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_a_finetune_that_fails_while_saving_leaves_the_previous_artifact(lora_adapter, random_models, data,
                                                                        tmp_path, monkeypatch):
    out = tmp_path / "adapter"
    shutil.copytree(lora_adapter, out)
    before = _contents(out)
    written: list[str] = []
    monkeypatch.setattr("tools.finetune.write_manifest", _save_fails_at_the_manifest(written))
    with pytest.raises(OSError, match="No space left"):
        tools_main(["finetune", "--model", str(random_models["llama"]), "--data", str(data), "--out", str(out),
                    "--lora-r", "4", "--no-eval-before", *TRAINING])
    assert "adapter_model.safetensors" in written  # the failure came after the new weights were written
    assert _contents(out) == before and verify_artifact(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging directory left behind


def test_a_merge_that_fails_while_saving_leaves_the_previous_artifact(lora_adapter, random_models, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "merged"
    argv = ["merge", "--base", str(random_models["llama"]), "--adapter", str(lora_adapter), "--out", str(out)]
    assert tools_main(argv) == 0
    before = _contents(out)
    written: list[str] = []
    monkeypatch.setattr("tools.merge.write_manifest", _save_fails_at_the_manifest(written))
    with pytest.raises(OSError, match="No space left"):
        tools_main(argv)
    assert "model.safetensors" in written
    assert _contents(out) == before and verify_artifact(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_finetune_and_merge_refuse_a_foreign_directory_before_any_work(lora_adapter, random_models, data, tmp_path,
                                                                      monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.setattr("tools.finetune.load_for_training", lambda *args: pytest.fail("loaded before checking --out"))
    code = tools_main(["finetune", "--model", str(random_models["llama"]), "--data", str(data),
                       "--out", str(tmp_path), *TRAINING])
    assert code == 2 and "not empty and holds no manifest.json" in capsys.readouterr().err
    code = tools_main(["merge", "--base", str(random_models["llama"]), "--adapter", str(lora_adapter),
                       "--out", str(tmp_path)])
    assert code == 2 and "not empty and holds no manifest.json" in capsys.readouterr().err
    assert _contents(tmp_path) == {"notes.txt": b"keep me"}
