"""`--kv-cache-memory` and `--block-size`: what they accept, and the clear errors for what they do not."""

import pytest
import torch
from transformers import LlamaConfig

from backends.hf.config import HFEngineConfig
from backends.hf.kv_budget import budget, kv_bytes_per_token, parse_memory

CONFIG = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
PER_TOKEN = 2 * 2 * 2 * 16 * 4  # key and value, 2 layers, 2 kv heads, head_dim 16, float32


@pytest.mark.parametrize("text,parsed", [
    ("4GiB", ("bytes", 4 * 2**30)), ("512MiB", ("bytes", 512 * 2**20)), ("2e9", ("bytes", 2e9)),
    ("1500000000", ("bytes", 1.5e9)), (" 64 kb ", ("bytes", 64e3)), (1500000000, ("bytes", 1.5e9)),
    ("0.3", ("fraction", 0.3)), (0.25, ("fraction", 0.25)), ("1", ("fraction", 1.0)),
])
def test_bytes_and_fractions(text, parsed):
    assert parse_memory(text) == parsed


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "0.0", "4 parsecs", "1.5.2GB", "nan", "inf", "1e400x", "1e400", float("inf"),
                                  "0.5b", True, -3, "GiB"])
def test_anything_else_is_a_value_error_quoting_it(text):
    with pytest.raises(ValueError) as caught:
        parse_memory(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("block_size", [0, -16, 1025, 16.0, True, "16"])
def test_block_size_outside_1_to_1024_is_refused(block_size):
    with pytest.raises(ValueError, match="block_size"):
        HFEngineConfig(model="m", block_size=block_size)


def test_bad_kv_cache_memory_is_refused_at_config_time():
    with pytest.raises(ValueError, match="kv_cache_memory"):
        HFEngineConfig(model="m", kv_cache_memory="lots")


def test_budget_counts_whole_blocks_and_refuses_less_than_one():
    assert kv_bytes_per_token(CONFIG, torch.float32) == PER_TOKEN
    got = budget(f"{PER_TOKEN * 16 * 10 + 5}", CONFIG, torch.float32, torch.device("cpu"), 16, 4, 128)
    assert (got.num_blocks, got.num_tokens) == (10, 160) and "--kv-cache-memory" in got.describe(128)
    with pytest.raises(ValueError, match="not even one block"):
        budget(f"{PER_TOKEN * 16 - 1}", CONFIG, torch.float32, torch.device("cpu"), 16, 4, 128)


def test_default_is_the_old_worst_case_when_memory_allows():
    got = budget(None, CONFIG, torch.float32, torch.device("cpu"), 16, 4, 128)
    assert got.num_tokens == 4 * 128 and "max_num_seqs x max_model_len" in got.how
