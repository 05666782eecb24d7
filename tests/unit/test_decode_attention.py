"""The C++ decode-attention kernel computes what SDPA computes over the slot cache, and rejects what it
cannot read."""

import pytest
import torch
import torch.nn.functional as F

from backends.hf import decode_attention


@pytest.fixture(scope="module")
def kernel():
    built = decode_attention.load()
    assert built is not None, "the kernel must build where the test suite runs (a C++ compiler is present)"
    return built


def cache_views(batch, length, kv_heads, head_dim, slots=6, max_len=40):
    """Keys and values as the runner hands them over: views into a larger [slot, position, head, dim] cache."""
    torch.manual_seed(0)
    keys = torch.randn(slots, max_len + 1, kv_heads, head_dim)
    values = torch.randn(slots, max_len + 1, kv_heads, head_dim)
    return keys[1 : 1 + batch, :length], values[1 : 1 + batch, :length]


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (8, 2)])
def test_kernel_equals_sdpa_with_a_length_mask(kernel, q_heads, kv_heads):
    batch, length, head_dim = 5, 23, 16
    k, v = cache_views(batch, length, kv_heads, head_dim)
    # q as a strided view, as it comes out of the fused q/k/v projection.
    q = torch.randn(batch, q_heads + 2 * kv_heads, head_dim)[:, :q_heads]
    lengths = torch.tensor([23, 1, 7, 16, 22])
    got = decode_attention.decode_attention(kernel, q, k, v, lengths, 0.25)
    allowed = (torch.arange(length).view(1, length) < lengths.view(batch, 1)).view(batch, 1, 1, length)
    expected = F.scaled_dot_product_attention(q.unsqueeze(2), k.transpose(1, 2), v.transpose(1, 2),
                                              attn_mask=allowed, scale=0.25, enable_gqa=q_heads != kv_heads)
    assert torch.allclose(got, expected.squeeze(2), atol=1e-5)


def test_a_row_reads_only_its_own_length(kernel):
    """Whatever lies beyond a row's length (another sequence's old keys, the pad column) changes nothing."""
    k, v = cache_views(2, 12, 2, 8)
    q = torch.randn(2, 2, 8)
    lengths = torch.tensor([5, 12])
    before = decode_attention.decode_attention(kernel, q, k, v, lengths, 1.0)
    k[0, 5:] = 1e4
    v[0, 5:] = float("nan")
    after = decode_attention.decode_attention(kernel, q, k, v, lengths, 1.0)
    assert torch.equal(before, after)


@pytest.mark.parametrize("bad", ["length_zero", "length_past_cache", "float64", "int32_lengths"])
def test_bad_input_is_rejected(kernel, bad):
    k, v = cache_views(2, 10, 2, 8)
    q = torch.randn(2, 2, 8)
    lengths = torch.tensor([3, 10])
    if bad == "length_zero":
        lengths = torch.tensor([0, 10])
    elif bad == "length_past_cache":
        lengths = torch.tensor([3, 11])
    elif bad == "float64":
        q, k, v = q.double(), k.double(), v.double()
    elif bad == "int32_lengths":
        lengths = lengths.int()
    with pytest.raises(RuntimeError, match="decode_attention"):
        decode_attention.decode_attention(kernel, q, k, v, lengths, 1.0)


def test_without_the_kernel_decode_uses_sdpa(random_models, monkeypatch):
    """A machine that cannot build it still serves: the lean forward falls back to SDPA, same logits."""
    from transformers import AutoModelForCausalLM

    from backends.hf import fast_llama
    from backends.hf.runner import ModelRunner
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    original_load = decode_attention.load

    def decode_logits(kernel_available: bool):
        monkeypatch.setattr(decode_attention, "load", original_load if kernel_available else lambda: None)
        model = AutoModelForCausalLM.from_pretrained(random_models["qwen2"]).eval()
        runner = ModelRunner(model, num_slots=2, max_len=32, pad_token_id=0)
        assert (runner.fast_forward.decode_kernel is not None) == kernel_available
        seqs = [Sequence("a", [5, 6, 7, 8], SamplingParams()), Sequence("b", [9, 10], SamplingParams())]
        runner.execute({s: len(s.token_ids) for s in seqs})
        for s in seqs:
            s.append_token(11)
        return runner.execute({s: 1 for s in seqs}).logits

    assert fast_llama.supports(AutoModelForCausalLM.from_pretrained(random_models["qwen2"]))
    assert torch.allclose(decode_logits(True), decode_logits(False), atol=1e-5)
