"""The lean Llama-family forward computes what transformers' forward computes, on the paged KV cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from backends.hf import cpu_kernels, fast_llama, packed_linear
from backends.hf.ops import KernelOps, TorchOps
from backends.hf.runner import ModelRunner
from backends.hf.scheduler import Scheduler, SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import SamplingParams

# oneDNN accumulates in another order than MKL: logits of these random models differ by ~1e-5.
ATOL = 1e-4


def load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


# The lean forward's ops: on the C++ kernels, and on PyTorch ops (as where the kernels cannot be built).
PATHS = ["kernels", "torch"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_fast_forward_logits_equal_transformers(random_models, kind, path, monkeypatch):
    if path != "kernels":
        monkeypatch.setattr(cpu_kernels, "load", lambda: None)
    model, reference = load(random_models[kind]), load(random_models[kind])
    assert fast_llama.supports(model)
    prompts = [[5, 9, 33, 7], [11, 3], [40, 41, 42, 43, 44, 45]]
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, num_blocks=8, block_size=4, enable_prefix_caching=False))
    runner = ModelRunner(model, sched.blocks, pad_token_id=0)
    assert runner.fast_forward is not None
    assert isinstance(runner.ops, KernelOps if path == "kernels" else TorchOps)
    seqs = [Sequence(str(i), p, SamplingParams()) for i, p in enumerate(prompts)]
    for seq in seqs:
        sched.add(seq)
    ran = runner.execute(sched.schedule().num_scheduled_tokens)
    with torch.no_grad():
        for seq, row in zip(ran.due, ran.logits, strict=True):
            expected = reference(torch.tensor([seq.prompt_token_ids])).logits[0, -1]
            assert torch.allclose(row, expected, atol=ATOL), seq.request_id
    # Three decode steps through the block tables (crossing into new blocks): each row's next logits still
    # match a full forward of its tokens; then one step mixing a decode row with a new prompt.
    for step in range(3):
        for seq in seqs:
            seq.append_token(60 + step)
        ran = runner.execute(sched.schedule().num_scheduled_tokens)
        with torch.no_grad():
            for seq, row in zip(ran.due, ran.logits, strict=True):
                expected = reference(torch.tensor([seq.token_ids])).logits[0, -1]
                assert torch.allclose(row, expected, atol=ATOL), (seq.request_id, step)
    late = Sequence("late", [7, 8, 9, 10, 11], SamplingParams())
    sched.add(late)
    seqs[0].append_token(70)
    sched.remove(seqs[1])
    sched.remove(seqs[2])
    scheduled = sched.schedule().num_scheduled_tokens
    assert scheduled == {seqs[0]: 1, late: 5}
    ran = runner.execute(scheduled)
    with torch.no_grad():
        for seq, row in zip(ran.due, ran.logits, strict=True):
            expected = reference(torch.tensor([seq.token_ids])).logits[0, -1]
            assert torch.allclose(row, expected, atol=ATOL), seq.request_id


def test_packed_projections_leave_the_model(random_models):
    """On CPU the projections are reordered for oneDNN and the plain weights are dropped: the model's
    parameters are then only the embedding and the norms, and its own forward refuses to run."""
    model = load(random_models["qwen2"])  # q, k and v have biases
    forward = fast_llama.FastLlamaForward(model)
    assert forward.qkv[0].packed and forward.qkv[0].bias is not None
    names = {name for name, _ in model.named_parameters()}
    assert names and all("norm" in name or "embed_tokens" in name for name in names), names
    with pytest.raises(RuntimeError, match="packed copy"):
        model(torch.tensor([[1, 2, 3]]))


def test_dense_fusing_keeps_one_copy_of_the_weights(random_models, monkeypatch):
    """Where nothing is packed, the fused matrices are the model's own storage."""
    monkeypatch.setattr(packed_linear, "_onednn_available", lambda: False)
    model = load(random_models["qwen2"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    forward = fast_llama.FastLlamaForward(model)
    attn = model.model.layers[0].self_attn
    projection = forward.qkv[0]
    assert not projection.packed and projection.bias is not None
    assert attn.q_proj.weight.untyped_storage().data_ptr() == projection.weight.untyped_storage().data_ptr()
    assert attn.v_proj.bias.untyped_storage().data_ptr() == projection.bias.untyped_storage().data_ptr()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_unsupported_models_use_the_transformers_forward(random_models):
    model = load(random_models["gpt2"])
    assert not fast_llama.supports(model)
    blocks = Scheduler(SchedulerConfig(num_blocks=4)).blocks
    assert ModelRunner(model, blocks, pad_token_id=0).fast_forward is None


def test_packed_forward_lets_the_checkpoint_file_unmap(random_models, tmp_path):
    """The weights left in the model get memory of their own, so the checkpoint's memory map (the
    projections' plain weights, still counted in the resident set) closes."""
    import gc
    import shutil

    model_dir = shutil.copytree(random_models["llama"], tmp_path / "llama")  # a file no other test maps

    def mapped() -> bool:
        with open("/proc/self/maps") as maps:
            return any(str(model_dir) in line for line in maps)

    model = load(model_dir)
    assert mapped()  # transformers maps safetensors checkpoints
    forward = fast_llama.FastLlamaForward(model)
    gc.collect()
    assert not mapped()
    assert forward.embed is model.model.embed_tokens.weight
