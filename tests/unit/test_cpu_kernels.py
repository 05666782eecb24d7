"""The engine's two implementations of its ops (backends/hf/ops.py), the C++ kernels and PyTorch, compute
the same thing, each checked against the same reference; the kernels reject what they cannot read. Tests
of the PyTorch half (`ops` with "torch") and of the fallback need no C++ build.

bfloat16: the references are computed in float64 from the same bf16 inputs. The kernels compute in float32
and round each output once, so they must be within half a bf16 ulp of the exact value (plus float32's own
error, ~1e-6 of the output's scale); torch's bf16 ops round after each op, and are held only to what that
gives (`assert_bf16_close`)."""

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


def assert_bf16_close(got: torch.Tensor, exact: torch.Tensor, rounded_once: bool):
    """got (bfloat16) against the exact value (float64). rounded_once (the kernels): within half an ulp of
    bf16 at each value, up to float32 error (1e-6 of the largest magnitude). Otherwise (torch's op-by-op bf16):
    within 2^-7 of the largest magnitude, two roundings' worth; near-zero results of a cancellation (RoPE, an
    attention average) can be many of their own ulps away."""
    assert got.dtype == torch.bfloat16 and got.shape == exact.shape
    exact = exact.double()
    error = (got.double() - exact).abs()
    largest = exact.abs().max().item()
    if rounded_once:
        spacing = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(1e-30))) - 7)  # bf16: 7 stored bits
        assert (error <= 0.5 * spacing + 1e-6 * largest).all(), (error / spacing).max()
    else:
        assert (error <= 2**-7 * largest).all(), error.max() / largest


def implementation_rounds_once(ops) -> bool:
    return isinstance(ops, KernelOps)


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
    from backends.hf.scheduler import Scheduler, SchedulerConfig
    from backends.hf.sequence import Sequence
    from backends.types import SamplingParams

    original_load = cpu_kernels.load

    def decode_logits(kernels_available: bool):
        monkeypatch.setattr(cpu_kernels, "load", original_load if kernels_available else lambda: None)
        model = AutoModelForCausalLM.from_pretrained(random_models["qwen2"]).eval()
        sched = Scheduler(SchedulerConfig(max_num_seqs=2, num_blocks=8, block_size=4))
        runner = ModelRunner(model, sched.blocks, pad_token_id=0)
        assert isinstance(runner.ops, KernelOps) == kernels_available
        seqs = [Sequence("a", [5, 6, 7, 8], SamplingParams()), Sequence("b", [9, 10], SamplingParams())]
        for s in seqs:
            sched.add(s)
        runner.execute(sched.schedule().num_scheduled_tokens)
        logits = []
        for step in range(3):
            for s in seqs:
                s.append_token(11 + step)
            logits.append(runner.execute(sched.schedule().num_scheduled_tokens).logits)
        return torch.stack(logits)

    assert torch.allclose(decode_logits(True), decode_logits(False), atol=1e-5)


def test_float32_and_bfloat16_cpu_tensors_get_the_kernels(kernels):
    assert isinstance(choose_ops(torch.device("cpu"), torch.float32), KernelOps)
    assert isinstance(choose_ops(torch.device("cpu"), torch.bfloat16), KernelOps)


def test_other_tensors_and_a_failed_build_get_torch_ops(monkeypatch):
    """PyTorch's ops for any other dtype or device (the kernels not even loaded), and for float32 and
    bfloat16 on the CPU too where the kernels could not be built."""

    def load_must_not_be_called():
        raise AssertionError("the kernels were loaded for tensors they cannot run on")

    monkeypatch.setattr(cpu_kernels, "load", load_must_not_be_called)
    for device, dtype in [("cpu", torch.float64), ("cpu", torch.float16), ("meta", torch.float32),
                          ("meta", torch.bfloat16)]:
        assert isinstance(choose_ops(torch.device(device), dtype), TorchOps)
    monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    assert isinstance(choose_ops(torch.device("cpu"), torch.float32), TorchOps)
    assert isinstance(choose_ops(torch.device("cpu"), torch.bfloat16), TorchOps)


# --- bfloat16 ---------------------------------------------------------------------------------------------

BF16 = torch.bfloat16


@pytest.mark.parametrize("shape", [(3, 1, 64), (5, 768)])
def test_rms_norm_bf16_rounds_the_exact_norm_once(ops, shape):
    x, weight = (torch.randn(*shape) * 3).to(BF16), torch.randn(shape[-1]).to(BF16)
    got = ops.rms_norm(x, weight, 1e-6)
    assert got.dtype == BF16
    assert_bf16_close(got, F.rms_norm(x.double(), (shape[-1],), weight.double(), 1e-6), implementation_rounds_once(ops))


def test_add_rms_norm_bf16_stores_the_rounded_sum_and_normalizes_it(ops):
    """The residual stream holds hidden + delta rounded to bf16 (as torch's add_ does, bit for bit), and the
    norm is of that stored sum, as the next layer reads it."""
    hidden, delta, weight = torch.randn(4, 768).to(BF16), torch.randn(4, 768).to(BF16), torch.randn(768).to(BF16)
    expected_sum = hidden + delta  # torch: computed in float, rounded once
    normed = ops.add_rms_norm(hidden, delta, weight, 1e-6)
    assert torch.equal(hidden, expected_sum)
    assert_bf16_close(normed, F.rms_norm(expected_sum.double(), (768,), weight.double(), 1e-6),
                      implementation_rounds_once(ops))


def test_silu_mul_bf16(ops):
    gate_up = (torch.randn(6, 2 * 2048) * 4).to(BF16)
    gate, up = gate_up.double().chunk(2, dim=-1)
    got = ops.silu_mul(gate_up)
    assert got.dtype == BF16 and got.shape == (6, 2048)
    assert_bf16_close(got, F.silu(gate) * up, implementation_rounds_once(ops))


def test_bf16_kernels_round_as_torch_rounds_float_to_bf16(kernels):
    """float32 -> bf16 as torch's .to() rounds it, bit for bit: ties to even either way, overflow to inf,
    NaN to a NaN. Through rope_and_cache_write with x = 1, sin = 0 and float32 cos (accepted with
    bf16 qkv): each output is 1 * cos + (-x2) * 0 = cos exactly in float32, then rounded."""
    values = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 1.0 + 2**-8 + 2**-20, 3.3e38, 3.4e38,
                           float("inf"), float("-inf"), float("nan"), 1e-39, -0.0, 0.1])
    n = values.numel()
    qkv = torch.ones(1, 1, 3, 2 * n, dtype=BF16)
    cos = torch.cat([values, torch.ones(n)]).view(1, 1, 2 * n)
    keys = torch.zeros(1, 1, 1, 2 * n, dtype=BF16)
    q = kernels.rope_and_cache_write(qkv, cos, torch.zeros_like(cos), keys, torch.zeros_like(keys),
                                     torch.tensor([0]), torch.tensor([[0]]), 1)
    got, expected = q[0, 0, 0, :n], values.to(BF16)
    number = ~values.isnan()
    assert torch.equal(got[number].view(torch.int16), expected[number].view(torch.int16))
    # Any NaN is a NaN (torch's own vectorized and scalar conversions write different ones: 0xFFFF, 0x7FC0).
    assert got[~number].isnan().all()


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (12, 12), (8, 2)])
def test_decode_attention_bf16(ops, q_heads, kv_heads):
    batch, length, head_dim = 5, 40, 64
    k, v = (t.to(BF16) for t in cache_views(batch, length, kv_heads, head_dim, max_len=length))
    q = torch.randn(batch, q_heads + 2 * kv_heads, head_dim).to(BF16)[:, :q_heads]
    lengths = torch.tensor([40, 1, 7, 33, 16])
    got = ops.decode_attention(q, k, v, lengths, 0.125)
    assert got.dtype == BF16
    exact = attend_prefixes(q.double(), k.double(), v.double(), lengths, 0.125)
    assert_bf16_close(got, exact, implementation_rounds_once(ops))


def test_rope_and_cache_write_bf16(ops):
    batch, width, q_heads, kv_heads, head_dim = 3, 2, 8, 2, 64
    qkv = torch.randn(batch, width, q_heads + 2 * kv_heads, head_dim).to(BF16)
    angles = torch.randn(batch, width, head_dim)
    cos, sin = angles.cos().to(BF16), angles.sin().to(BF16)
    keys, values = torch.zeros(4, 10, kv_heads, head_dim, dtype=BF16), torch.zeros(4, 10, kv_heads, head_dim, dtype=BF16)
    slots, positions = torch.tensor([0, 3, 1]), torch.tensor([[0, 1], [5, 6], [8, 9]])
    q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, slots, positions, q_heads)
    c, s = cos.double().unsqueeze(2), sin.double().unsqueeze(2)
    exact = rotate(qkv.double(), c, s)
    assert_bf16_close(q, exact[:, :, :q_heads], implementation_rounds_once(ops))
    rows = slots.unsqueeze(1)
    assert_bf16_close(keys[rows, positions], exact[:, :, q_heads : q_heads + kv_heads], implementation_rounds_once(ops))
    assert torch.equal(values[rows, positions], qkv[:, :, q_heads + kv_heads :])  # values are copied as they are


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_rope_and_cache_write_into_a_paged_cache_one_token_a_row(ops, dtype):
    """The paged cache's use: the pool viewed as [num_blocks, block_size, kv_heads, D], one row per new
    token (W = 1), slots = each token's block, positions = its offset in the block. Token t lands at
    (block[t], offset[t]) and nowhere else."""
    tokens, q_heads, kv_heads, head_dim, num_blocks, block_size = 7, 4, 2, 16, 5, 4
    qkv = torch.randn(tokens, 1, q_heads + 2 * kv_heads, head_dim).to(dtype)
    angles = torch.randn(tokens, 1, head_dim)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    keys = torch.zeros(num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    values = torch.zeros_like(keys)
    block = torch.tensor([3, 3, 0, 4, 1, 3, 0])
    offset = torch.tensor([[0], [1], [3], [2], [0], [3], [0]])
    q = ops.rope_and_cache_write(qkv, cos, sin, keys, values, block, offset, q_heads)
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    exact_k = rotate(qkv.double(), c.double(), s.double())[:, 0, q_heads : q_heads + kv_heads]
    if dtype == BF16:
        assert_bf16_close(q, rotate(qkv.double(), c.double(), s.double())[:, :, :q_heads],
                          implementation_rounds_once(ops))
    else:
        assert torch.allclose(q, rotate(qkv[:, :, :q_heads], c, s), atol=1e-6)
    written = set()
    for t in range(tokens):
        cell = (int(block[t]), int(offset[t, 0]))
        written.add(cell)
        if dtype == BF16:
            assert_bf16_close(keys[cell], exact_k[t], implementation_rounds_once(ops))
        else:
            assert torch.allclose(keys[cell].double(), exact_k[t], atol=1e-5)
        assert torch.equal(values[cell], qkv[t, 0, q_heads + kv_heads :])
    for cell in {(i, j) for i in range(num_blocks) for j in range(block_size)} - written:
        assert not keys[cell].any() and not values[cell].any()


# --- paged decode attention ---------------------------------------------------------------------------------

def paged_layout(lengths, kv_heads, head_dim, block_size, dtype, spare_blocks=3, max_blocks=None, seed=0):
    """The same keys and values twice: contiguous [B, L, kv_heads, D] (L the longest length) and in a block
    pool [num_blocks, block_size, kv_heads, D] at shuffled block ids, with the block tables (int32, -1 past
    each row's blocks) and spare blocks full of garbage that no row owns."""
    gen = torch.Generator().manual_seed(seed)
    batch, longest = len(lengths), max(lengths)
    k = torch.randn(batch, longest, kv_heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, longest, kv_heads, head_dim, generator=gen).to(dtype)
    needed = [-(-n // block_size) for n in lengths]
    max_blocks = max_blocks or max(needed)
    num_blocks = sum(needed) + spare_blocks
    ids = torch.randperm(num_blocks, generator=gen).tolist()
    key_cache = torch.full((num_blocks, block_size, kv_heads, head_dim), float("nan")).to(dtype)
    value_cache = torch.full((num_blocks, block_size, kv_heads, head_dim), float("nan")).to(dtype)
    tables = torch.full((batch, max_blocks), -1, dtype=torch.int32)
    for b, n in enumerate(lengths):
        for i in range(needed[b]):
            block = ids.pop()
            tables[b, i] = block
            stop = min(n, (i + 1) * block_size)
            key_cache[block, : stop - i * block_size] = k[b, i * block_size : stop]
            value_cache[block, : stop - i * block_size] = v[b, i * block_size : stop]
    return k, v, key_cache, value_cache, tables


PAGED_CASES = [  # (q_heads, kv_heads, block_size, lengths)
    (4, 4, 16, [1, 16, 17, 48, 33]),
    (8, 2, 16, [128, 1, 96, 100]),  # GQA
    (12, 12, 5, [23, 1, 5, 11]),  # a block size that is not a power of two
    (6, 3, 3, [7]),
]


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("q_heads,kv_heads,block_size,lengths", PAGED_CASES)
def test_paged_decode_attention_equals_attention_over_the_contiguous_layout(ops, dtype, q_heads, kv_heads,
                                                                            block_size, lengths):
    """Against the exact attention of each row over its own prefix. The spare and unused cells hold NaN, as
    a fresh (torch.empty) pool may: any read of them that reaches the result shows."""
    head_dim = 64 if q_heads != 6 else 8
    k, v, key_cache, value_cache, tables = paged_layout(lengths, kv_heads, head_dim, block_size, dtype)
    q = torch.randn(len(lengths), q_heads + 2 * kv_heads, head_dim).to(dtype)[:, :q_heads]  # strided, as from qkv
    lengths = torch.tensor(lengths)
    got = ops.paged_decode_attention(q, key_cache, value_cache, tables, lengths, 0.125)
    assert got.dtype == dtype and got.shape == q.shape
    exact = attend_prefixes(q.double(), k.double(), v.double(), lengths, 0.125)
    if dtype == BF16:
        assert_bf16_close(got, exact, implementation_rounds_once(ops))
    else:
        assert torch.allclose(got.double(), exact, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("q_heads,kv_heads,block_size,lengths", PAGED_CASES)
def test_paged_kernel_is_bit_for_bit_the_contiguous_kernel(kernels, dtype, q_heads, kv_heads, block_size, lengths):
    """One row routine for both layouts: reading through block tables changes nothing, not even rounding.
    The first two cases have a row whose length fills its whole table (no -1 entry)."""
    head_dim = 64 if q_heads != 6 else 8
    k, v, key_cache, value_cache, tables = paged_layout(lengths, kv_heads, head_dim, block_size, dtype)
    q = torch.randn(len(lengths), q_heads, head_dim).to(dtype)
    lengths = torch.tensor(lengths)
    paged = kernels.paged_decode_attention(q, key_cache, value_cache, tables, lengths, 0.3)
    assert torch.equal(paged, kernels.decode_attention(q, k, v, lengths, 0.3))


def test_paged_decode_attention_reads_nothing_past_a_rows_length(kernels):
    """Table entries past a row's blocks may be anything (here out of range), and the cells of its last
    block past its length may hold anything: the result is the same."""
    lengths = [5, 12]
    k, v, key_cache, value_cache, tables = paged_layout(lengths, 2, 8, 4, torch.float32, max_blocks=6)
    q = torch.randn(2, 4, 8)
    before = kernels.paged_decode_attention(q, key_cache, value_cache, tables, torch.tensor(lengths), 1.0)
    tables[0, 2:] = 10**6
    tables[1, 3:] = -7
    key_cache[tables[0, 1], 1:] = float("inf")
    after = kernels.paged_decode_attention(q, key_cache, value_cache, tables, torch.tensor(lengths), 1.0)
    assert torch.equal(before, after)


@pytest.mark.parametrize("bad", ["block_id_past_pool", "negative_block_id", "length_past_table", "length_zero",
                                 "int64_tables", "dtype_mismatch", "float16", "strided_cache", "head_dim",
                                 "heads_do_not_divide", "tables_rows"])
def test_paged_decode_attention_rejects_bad_input(kernels, bad):
    lengths = [5, 12]
    _, _, key_cache, value_cache, tables = paged_layout(lengths, 2, 8, 4, torch.float32, max_blocks=4)
    q = torch.randn(2, 4, 8)
    lengths = torch.tensor(lengths)
    if bad == "block_id_past_pool":
        tables[1, 2] = key_cache.shape[0]  # row 1 reads its blocks 0..2
    elif bad == "negative_block_id":
        tables[0, 1] = -1  # row 0 reads its blocks 0..1
    elif bad == "length_past_table":
        lengths = torch.tensor([5, 17])  # 4 blocks of 4
    elif bad == "length_zero":
        lengths = torch.tensor([0, 12])
    elif bad == "int64_tables":
        tables = tables.long()
    elif bad == "dtype_mismatch":
        q = q.to(BF16)
    elif bad == "float16":
        q, key_cache, value_cache = q.half(), key_cache.half(), value_cache.half()
    elif bad == "strided_cache":
        key_cache = key_cache.transpose(1, 2)
    elif bad == "head_dim":
        q = torch.randn(2, 4, 16)
    elif bad == "heads_do_not_divide":
        q = torch.randn(2, 3, 8)
    elif bad == "tables_rows":
        tables = tables[:1]
    with pytest.raises(RuntimeError, match="paged_decode_attention"):
        kernels.paged_decode_attention(q, key_cache, value_cache, tables, lengths, 1.0)
