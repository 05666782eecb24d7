"""The offline tools: corpus split, tokenizer, chat template, a tiny pretrain, the bundled model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tools import cli
from tools.build import DEFAULT_MODEL_DIR, BuildConfig, build_model
from tools.corpus import clean_text, split_corpus
from tools.evaluate import unigram_perplexity
from tools.manifest import file_digests, read_manifest, verify_digests
from tools.packing import eval_windows
from tools.pretrain import ModelShape, PretrainConfig
from tools.tokenizer import TokenizerConfig, save_tokenizer, train_tokenizer

MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What does pass do?"},
    {"role": "assistant", "content": "Nothing."},
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    split = split_corpus(seed=0)
    out = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(split.train.values(), TokenizerConfig(vocab_size=512)), out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_split_is_deterministic_disjoint_and_sized():
    a, b = split_corpus(seed=0), split_corpus(seed=0)
    assert a.train == b.train and a.held_out == b.held_out and a.digest() == b.digest()
    assert not set(a.train) & set(a.held_out)
    held = sum(map(len, a.held_out.values()))
    total = held + sum(map(len, a.train.values()))
    assert 0.03 < held / total < 0.08
    assert split_corpus(seed=1).held_out.keys() != a.held_out.keys()


def test_no_held_out_paragraph_is_in_training_text():
    split = split_corpus(seed=0)
    train_paragraphs = {p for text in split.train.values() for p in text.split("\n\n")}
    held_paragraphs = {p for text in split.held_out.values() for p in text.split("\n\n") if len(p) >= 40}
    assert held_paragraphs and not held_paragraphs & train_paragraphs


def test_split_rejects_bad_fraction_quoting_it():
    with pytest.raises(ValueError, match="0.7"):
        split_corpus(held_out_fraction=0.7)


def test_clean_text_unwraps_prose_keeps_code_and_paragraphs():
    raw = "Title\n*****\n\nSome   prose\nthat wraps.  Next.\n\n\n\n   for i in x:\n       print(i)\n"
    assert clean_text(raw) == "Title\n\nSome prose that wraps. Next.\n\n   for i in x:\n       print(i)"


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld — 日本語 🙂",
        "  leading and trailing  \n\n\ttabs\r\n",
        "def f(x):\n    return x ** 2  # ok",
        "",
    ],
)
def test_tokenizer_round_trips_exactly(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tokenizer_round_trips_random_unicode(tokenizer):
    rng = random.Random(0)
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x370, 0x3FF),
        (0x3040, 0x30FF),
        (0x4E00, 0x4FFF),
        (0x1F600, 0x1F64F),
    ]
    for _ in range(200):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 40)))
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_special_tokens_are_single_ids(tokenizer):
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]


def test_chat_template_renders_roles_and_generation_prompt(tokenizer):
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat does pass do?<|im_end|>\n"
        "<|im_start|>assistant\nNothing.<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert not tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False).endswith("assistant\n")


def test_unigram_perplexity_matches_hand_computation():
    train = torch.tensor([0, 0, 0, 1])  # counts+1 over vocab 4: [4, 2, 1, 1] / 8
    held = torch.tensor([3, 0, 1])  # scored: 0 and 1
    expected = (8 / 4 * 8 / 2) ** 0.5
    assert unigram_perplexity(train, held, vocab_size=4) == pytest.approx(expected)


def test_eval_windows_predict_every_token_once():
    stream = torch.arange(10)
    targets = torch.cat([w[1:] for w in eval_windows(stream, seq_len=4)])
    assert torch.equal(targets, stream[1:])


def test_lr_schedule_warms_up_then_decays_to_floor():
    lr_at = PretrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1).schedule().lr
    assert lr_at(0) == pytest.approx(1e-4)
    assert lr_at(10) == pytest.approx(1e-3)
    assert lr_at(60) == pytest.approx(0.55e-3)
    assert lr_at(110) == pytest.approx(1e-4)


def test_tiny_pretrain_builds_a_loadable_verified_model(tmp_path, tokenizer_dir):
    config = BuildConfig(
        name="tiny-test",
        shape=ModelShape(
            hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64
        ),
        pretrain=PretrainConfig(
            steps=4, batch_size=2, seq_len=32, warmup_steps=1, eval_every=2, max_minutes=1
        ),
    )
    out = tmp_path / "model"
    manifest = build_model(
        out, config, AutoTokenizer.from_pretrained(tokenizer_dir), "test", show_progress=False
    )

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("A list comprehension", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    assert model.generation_config.eos_token_id == [
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]

    assert read_manifest(out) == manifest
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json"} <= set(
        manifest["files"]
    )
    assert manifest["files"] == file_digests(out)
    assert manifest["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert manifest["training"]["steps_done"] == 4
    assert verify_digests(out) == []
    (out / "config.json").write_text((out / "config.json").read_text() + " ")
    assert any("config.json" in problem for problem in verify_digests(out))


def test_build_refuses_to_replace_a_foreign_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="precious|not empty"):
        build_model(tmp_path, BuildConfig(), show_progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_reports_bad_values(capsys, tmp_path):
    assert cli.main(["train-tokenizer", "--out", str(tmp_path), "--vocab-size", "100"]) == 2
    assert "100" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["build-default-model", "--help"])
    assert exc.value.code == 0
    assert "--max-minutes" in capsys.readouterr().out


def test_bundled_default_model_loads_and_beats_unigram():
    manifest = read_manifest(DEFAULT_MODEL_DIR)
    assert verify_digests(DEFAULT_MODEL_DIR, manifest) == []
    evaluation = manifest["evaluation"]
    assert evaluation["held_out_perplexity"] < 0.5 * evaluation["unigram_baseline_perplexity"]
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    assert manifest["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    size = sum(
        entry["size"]
        for entry in json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())["files"].values()
    )
    assert size < 40 * 2**20
