"""`turnout tools dpo` and `distill` on tiny models: the loss goes down, the artifact serves, lineage chains."""

import json

import pytest
import torch

from tools.cli import main
from tools.distill import DistillOptions, StudentShape, distill_loss, student_config
from tools.examples.preferences.make_preferences import SIGN_OFF, follows_preference, make_preferences
from tools.manifest import read_manifest, verify_digests


@pytest.fixture(scope="session")
def preferences(tmp_path_factory):
    out = tmp_path_factory.mktemp("prefs")
    counts = make_preferences(out, per_topic=1)
    assert counts["train"] > 20 and counts["held_out"] > 5
    return out


@pytest.fixture(scope="session")
def dpo_artifact(random_models, preferences, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "aligned"
    argv = ["dpo", "--model", str(random_models["llama"]), "--data", str(preferences / "train.jsonl"),
            "--held-out", str(preferences / "held_out.jsonl"), "--out", str(out), "--steps", "6",
            "--batch-size", "4", "--lr", "5e-3", "--max-length", "96", "--quiet",
            "--report", str(out.parent / "report.json")]
    assert main(argv) == 0
    return out


def test_preference_rows_differ_only_by_the_checkable_sign_off(preferences):
    rows = [json.loads(line) for line in (preferences / "train.jsonl").read_text().splitlines()]
    assert all(follows_preference(r["chosen"]) and not follows_preference(r["rejected"]) for r in rows)
    assert all(r["chosen"] == f"{r['rejected']} {SIGN_OFF}" for r in rows)


def test_dpo_lowers_the_loss_and_writes_an_artifact(dpo_artifact):
    manifest = read_manifest(dpo_artifact)
    assert verify_digests(dpo_artifact, manifest) == []
    [entry] = manifest["lineage"]
    assert entry["tool"] == "dpo" and manifest["quantization"] is None
    losses = [h["loss"] for h in entry["metrics"]["loss_history"]]
    assert losses[-1] < losses[0]
    after = entry["metrics"]["held_out_after"]
    assert {"logprob_accuracy", "reward_accuracy", "pairs"} <= set(after)
    assert (dpo_artifact / "chat_template.jinja").is_file()
    assert "lora" not in json.dumps(sorted(p.name for p in dpo_artifact.iterdir())).lower()  # merged


def test_quantizing_an_aligned_model_extends_its_lineage(dpo_artifact, tmp_path):
    out = tmp_path / "aligned-int8"
    assert main(["quantize", "--model", str(dpo_artifact), "--out", str(out), "--method", "int8", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert [e["tool"] for e in manifest["lineage"]] == ["dpo", "quantize"]
    assert manifest["base_model"] == "aligned"


def test_distill_lowers_the_loss_and_makes_a_smaller_student(random_models, tmp_path):
    out = tmp_path / "student"
    argv = ["distill", "--model", str(random_models["llama"]), "--out", str(out), "--steps", "8",
            "--eval-every", "4", "--batch-size", "4", "--seq-len", "64", "--warmup-steps", "1", "--quiet"]
    assert main(argv) == 0
    manifest = read_manifest(out)
    assert verify_digests(out, manifest) == []
    metrics = manifest["lineage"][-1]["metrics"]
    assert metrics["student_parameters"] < metrics["teacher_parameters"] / 2
    first, last = metrics["history"][0], metrics["history"][-1]
    assert last["loss"] < first["loss"] and last["held_out_perplexity"] < first["held_out_perplexity"]
    assert manifest["model"]["hidden_size"] == 32 and manifest["model"]["num_hidden_layers"] == 1


def test_distill_loss_is_cross_entropy_at_alpha_zero_and_kl_vanishes_for_a_perfect_student():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(distill_loss(logits, None, targets, 0.0, 2.0), ce)
    assert torch.allclose(distill_loss(logits, logits, targets, 1.0, 2.0), torch.tensor(0.0), atol=1e-6)
    assert distill_loss(logits, logits.flip(-1), targets, 1.0, 2.0) > 0


def test_student_shape_is_derived_from_the_teacher_or_given(random_models):
    from transformers import AutoConfig

    teacher = AutoConfig.from_pretrained(random_models["llama"])
    derived = student_config(teacher, StudentShape())
    assert (derived.hidden_size, derived.num_hidden_layers, derived.head_dim) == (32, 1, 16)
    assert derived.intermediate_size % 32 == 0
    given = student_config(teacher, StudentShape(layers=2, hidden_size=48, heads=3))
    assert (given.hidden_size, given.num_attention_heads, given.num_hidden_layers) == (48, 3, 2)
    with pytest.raises(ValueError, match="not divisible"):
        student_config(teacher, StudentShape(hidden_size=50, heads=3))
    with pytest.raises(ValueError, match="alpha"):
        DistillOptions(alpha=1.5).validate()
