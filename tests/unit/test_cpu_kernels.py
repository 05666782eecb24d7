"""The engine's two implementations of its ops (backends/hf/ops.py), the C++ kernels and PyTorch, compute
the same thing, each checked against the same reference; the kernels reject what they cannot read. Tests
of the PyTorch half (`ops` with "torch") and of the fallback need no C++ build."""

import pytest
import torch
import torch.nn.functional as F

from backends.hf import cpu_kernels
from backends.hf.ops import KernelOps, TorchOps, choose_ops


@pytest.fixture(scope="module")
def kernels():
    built = cpu_kernels.load()
    assert built is not None, "the kernels must build where the test suite runs (a C++ compiler is present)"
    return built


@pytest.fixture(params=["torch", "kernels"])
def ops(request):
    """Each implementation of the ops in turn; the kernels' are built only for their half."""
    return TorchOps() if request.param == "torch" else KernelOps(request.getfixturevalue("kernels"))


def cache_views(batch, length, kv_heads, head_dim, slots=6, max_len=40):
    """Keys and values as the runner hands them over: views into a larger [slot, position, head, dim] cache."""
    torch.manual_seed(0)
    keys = torch.randn(slots, max_len + 1, kv_heads, head_dim)
    values = torch.randn(slots, max_len + 1, kv_heads, head_dim)
    return keys[1 : 1 + batch, :length], values[1 : 1 + batch, :length]


def attend_prefixes(q, k, v, lengths, scale):
    """The reference for decode attention: each row's query over its own first lengths[b] positions only."""
    rows = []
    for b, length in enumerate(lengths.tolist()):
        keys, values = k[b, :length].transpose(0, 1), v[b, :length].transpose(0, 1)  # [kv_heads, length, D]
        rows.append(F.scaled_dot_product_attention(q[b].unsqueeze(1), keys, values, scale=scale,
                                                   enable_gqa=q.shape[1] != k.shape[2]).squeeze(1))
    return torch.stack(rows)


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (8, 2)])
def test_decode_attention_equals_sdpa_with_a_length_mask(ops, q_heads, kv_heads):
    batch, length, head_dim = 5, 23, 16
    k, v = cache_views(batch, length, kv_heads, head_dim)
    # q as a strided view, as it comes out of the fused q/k/v projection.
    q = torch.randn(batch, q_heads + 2 * kv_heads, head_dim)[:, :q_heads]
    lengths = torch.tensor([23, 1, 7, 16, 22])
    got = ops.decode_attention(q, k, v, lengths, 0.25)
    assert torch.allclose(got, attend_prefixes(q, k, v, lengths, 0.25), atol=1e-5)


def test_decode_attention_reads_only_a_rows_own_length(kernels):
    """Whatever lies beyond a row's length (another sequence's old keys, the pad column) changes nothing."""
    k, v = cache_views(2, 12, 2, 8)
    q = torch.randn(2, 2, 8)
    lengths = torch.tensor([5, 12])
    before = kernels.decode_attention(q, k, v, lengths, 1.0)
    k[0, 5:] = 1e4
    v[0, 5:] = float("nan")
    after = kernels.decode_attention(q, k, v, lengths, 1.0)
    assert torch.equal(before, after)


@pytest.mark.parametrize("bad", ["length_zero", "length_past_cache", "float64", "int32_lengths"])
def test_decode_attention_rejects_bad_input(kernels, bad):
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
        kernels.decode_attention(q, k, v, lengths, 1.0)


@pytest.mark.parametrize("shape", [(3, 1, 64), (2, 7, 48), (5, 256)])
def test_rms_norm_equals_torch(ops, shape):
    x = torch.randn(*shape) * 3
    weight = torch.randn(shape[-1])
    assert torch.allclose(ops.rms_norm(x, weight, 1e-6), F.rms_norm(x, (shape[-1],), weight, 1e-6), atol=1e-5)


def test_rms_norm_kernel_rejects_a_weight_of_another_width(kernels):
    with pytest.raises(RuntimeError, match="rms_norm"):
        kernels.rms_norm(torch.randn(3, 64), torch.randn(65), 1e-6)


@pytest.mark.parametrize("shape", [(3, 1, 64), (2, 7, 48)])
def test_add_rms_norm_adds_in_place_and_normalizes(ops, shape):
    hidden, delta, weight = torch.randn(*shape), torch.randn(*shape) * 2, torch.randn(shape[-1])
    expected_sum = hidden + delta
    normed = ops.add_rms_norm(hidden, delta, weight, 1e-6)
    assert torch.allclose(hidden, expected_sum, atol=1e-6)  # the residual stream now holds the sum
    assert torch.allclose(normed, F.rms_norm(expected_sum, (shape[-1],), weight, 1e-6), atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 1, 64), (2, 7, 48)])
def test_add_rms_norm_kernel_rejects_what_it_cannot_add_in_place(kernels, shape):
    hidden, delta, weight = torch.randn(*shape), torch.randn(*shape), torch.randn(shape[-1])
    with pytest.raises(RuntimeError, match="add_rms_norm"):
        kernels.add_rms_norm(hidden, torch.randn(shape[-1]), weight, 1e-6)
    strided = torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2]
    with pytest.raises(RuntimeError, match="add_rms_norm"):
        kernels.add_rms_norm(strided, delta, weight, 1e-6)


def test_silu_mul_equals_torch(ops):
    gate_up = torch.randn(4, 1, 2 * 40) * 4
    gate, up = gate_up.split(40, dim=-1)
    assert torch.allclose(ops.silu_mul(gate_up), F.silu(gate) * up, atol=1e-5)


def test_silu_mul_kernel_rejects_an_odd_width(kernels):
    with pytest.raises(RuntimeError, match="silu_mul"):
        kernels.silu_mul(torch.randn(2, 7))


def test_silu_mul_is_accurate_over_the_whole_float_range(ops):
    """The kernels' own exp (vectorized, clamped outside [-87.3, 88.37]) keeps silu exact to float rounding
    for gates from tiny to huge, both signs."""
    gate = torch.tensor([0.0, 1e-30, -1e-30, 0.5, -0.5, 3.0, -3.0, 20.0, -20.0, 87.0, -87.0, 88.5, -88.5,
                         100.0, -100.0, 1e4, -1e4, 3e38, -3e38])
    up = torch.linspace(-2.0, 2.0, gate.numel())
    got = ops.silu_mul(torch.cat([gate, up]).view(1, -1))
    expected = F.silu(gate) * up
    assert torch.allclose(got[0], expected, rtol=1e-6, atol=1e-30)


def test_decode_attention_softmax_over_extreme_scores(ops):
    """Scores hundreds apart (one key dominating, others underflowing to zero weight) stay finite and
    match SDPA."""
    k, v = cache_views(3, 17, 2, 8)
    q = torch.randn(3, 2, 8) * 60
    lengths = torch.tensor([17, 9, 2])
    got = ops.decode_attention(q, k, v, lengths, 1.0)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, attend_prefixes(q, k, v, lengths, 1.0), atol=1e-5)


def argmax_cases() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits with ties, NaN, infinities and a row of -inf, and views of them the sampler may see."""
    torch.manual_seed(0)
    logits = torch.randn(7, 1001)
    logits[1, [5, 700]] = 50.0  # a tie: the first wins
    logits[2, 600] = float("nan")
    logits[2, 3] = float("inf")
    logits[3] = float("-inf")
    logits[4, 999] = float("inf")
    return logits, [logits, logits[:, :1000], logits[:, :1], logits[:, 260:300], torch.randn(0, 5)]


def test_argmax_rows_picks_what_torch_argmax_picks(ops):
    """The first maximum (ties), the first NaN of a row with one, 0 for a row of -inf; rows as strided views
    (logits with a spare column); any width, vectorized chunks or not; and on the kernels' ops, logits the
    kernel cannot read (columns not contiguous, float64) through torch."""
    logits, views = argmax_cases()
    for view in [*views, logits.t(), logits.double()]:
        assert torch.equal(ops.argmax_rows(view), view.argmax(dim=-1))


def test_argmax_rows_kernel_rejects_what_it_cannot_read(kernels):
    """The kernel itself, below KernelOps' routing: every row's values adjacent, at least one column."""
    with pytest.raises(RuntimeError, match="argmax_rows"):
        kernels.argmax_rows(torch.randn(7, 1001).t())  # columns are not contiguous
    with pytest.raises(RuntimeError, match="argmax_rows"):
        kernels.argmax_rows(torch.randn(2, 0))


def test_greedy_sampler_on_the_kernel_picks_torchs_tokens(kernels):
    from backends.hf.sampler import Sampler
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    torch.manual_seed(1)
    logits = torch.randn(5, 300)
    logits[0, [9, 12]] = 30.0
    seqs = [Sequence(f"r{i}", [1, 2], SamplingParams(temperature=0.0, max_tokens=4)) for i in range(5)]
    with_kernel = Sampler(eos_token_ids=[0], ops=KernelOps(kernels))(logits, seqs)
    assert with_kernel == Sampler(eos_token_ids=[0])(logits, seqs) == logits.argmax(dim=-1).tolist()
    assert with_kernel[0] == 9


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


@pytest.mark.parametrize("width", [1, 3])
def test_rope_and_cache_write_rotates_and_writes_in_place(ops, width):
    """Decode (one token a row) and prefill (several a row), each row in its own slot."""
    batch, q_heads, kv_heads, head_dim = 3, 4, 2, 8
    qkv = torch.randn(batch, width, q_heads + 2 * kv_heads, head_dim)
    angles = torch.randn(batch, width, head_dim)
    cos, sin = angles.cos(), angles.sin()
    keys, values = torch.zeros(6, 20, kv_heads, head_dim), torch.zeros(6, 20, kv_heads, head_dim)
    slots = torch.tensor([2, 5, 0])
    positions = torch.tensor([[4], [0], [17]]) + torch.arange(width)  # width 3: row 2 reaches the last column
    q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, slots, positions, q_heads)
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)  # [batch, width, 1, head_dim] over the heads axis
    assert torch.allclose(q, rotate(qkv[:, :, :q_heads], c, s), atol=1e-6)
    expected_k = rotate(qkv[:, :, q_heads : q_heads + kv_heads], c, s)
    written = set()
    for b in range(batch):
        for w in range(width):
            slot, position = int(slots[b]), int(positions[b, w])
            assert torch.allclose(keys[slot, position], expected_k[b, w], atol=1e-6)
            assert torch.equal(values[slot, position], qkv[b, w, q_heads + kv_heads :])
            written.add((slot, position))
    untouched = [(i, j) for i in range(6) for j in range(20) if (i, j) not in written]
    assert not any(keys[i, j].any() or values[i, j].any() for i, j in untouched)


@pytest.mark.parametrize("bad", ["position_past_cache", "slot_past_cache", "heads_do_not_split", "int32_slots"])
def test_rope_and_cache_write_rejects_bad_input(kernels, bad):
    qkv = torch.randn(2, 1, 8, 8)
    cos = sin = torch.ones(2, 1, 8)
    keys, values = torch.zeros(4, 10, 2, 8), torch.zeros(4, 10, 2, 8)
    slots, positions, q_heads = torch.tensor([0, 1]), torch.tensor([[1], [2]]), 4
    if bad == "position_past_cache":
        positions = torch.tensor([[1], [10]])
    elif bad == "slot_past_cache":
        slots = torch.tensor([0, 4])
    elif bad == "heads_do_not_split":
        q_heads = 5
    elif bad == "int32_slots":
        slots = slots.int()
    with pytest.raises(RuntimeError, match="rope_and_cache_write"):
        kernels.rope_and_cache_write(qkv, cos, sin, keys, values, slots, positions, q_heads)
    assert not keys.any() and not values.any()


def test_without_the_kernels_the_lean_forward_uses_torch_ops(random_models, monkeypatch):
    """A machine that cannot build them still serves: same decode logits from PyTorch ops."""
    from transformers import AutoModelForCausalLM

    from backends.hf.runner import ModelRunner
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    original_load = cpu_kernels.load

    def decode_logits(kernels_available: bool):
        monkeypatch.setattr(cpu_kernels, "load", original_load if kernels_available else lambda: None)
        model = AutoModelForCausalLM.from_pretrained(random_models["qwen2"]).eval()
        runner = ModelRunner(model, num_slots=2, max_len=32, pad_token_id=0)
        assert isinstance(runner.ops, KernelOps) == kernels_available
        assert runner.mask_free_decode == kernels_available  # without the kernels: the general forward
        seqs = [Sequence("a", [5, 6, 7, 8], SamplingParams()), Sequence("b", [9, 10], SamplingParams())]
        runner.execute({s: len(s.token_ids) for s in seqs})
        logits = []
        for step in range(3):
            for s in seqs:
                s.append_token(11 + step)
            logits.append(runner.execute({s: 1 for s in seqs}).logits)
        return torch.stack(logits)

    assert torch.allclose(decode_logits(True), decode_logits(False), atol=1e-5)


def test_float32_cpu_tensors_get_the_kernels(kernels):
    assert isinstance(choose_ops(torch.device("cpu"), torch.float32), KernelOps)


def test_other_tensors_and_a_failed_build_get_torch_ops(monkeypatch):
    """PyTorch's ops for any other dtype or device (the kernels not even loaded), and for float32 on the CPU
    too where the kernels could not be built."""

    def load_must_not_be_called():
        raise AssertionError("the kernels were loaded for tensors they cannot run on")

    monkeypatch.setattr(cpu_kernels, "load", load_must_not_be_called)
    for device, dtype in [("cpu", torch.float64), ("cpu", torch.bfloat16), ("meta", torch.float32)]:
        assert isinstance(choose_ops(torch.device(device), dtype), TorchOps)
    monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    assert isinstance(choose_ops(torch.device("cpu"), torch.float32), TorchOps)
