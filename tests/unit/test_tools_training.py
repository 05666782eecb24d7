"""The training loop and schedule shared by pretrain, distill and finetune (tools/training.py)."""

import time

import pytest
import torch

from tools.training import CosineSchedule, adamw_without_decay_on_vectors, optimizer_steps


def test_schedule_warms_up_linearly_then_decays_to_the_floor_and_stays():
    schedule = CosineSchedule(peak_lr=1.0, total_steps=12, warmup_steps=2, floor_ratio=0.1)
    assert [schedule.lr(step) for step in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert schedule.lr(7) == pytest.approx(0.55)  # half-way through the decay
    assert schedule.lr(12) == pytest.approx(0.1) and schedule.lr(50) == pytest.approx(0.1)
    decay = [schedule.lr(step) for step in range(2, 13)]
    assert decay == sorted(decay, reverse=True)
    assert CosineSchedule(1.0, 10, 0, 0.0).lr(0) == 1.0  # no warmup: starts at the peak


def _quadratic():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    inputs = torch.randn(8, 4)
    return model, lambda step: (model(inputs) ** 2).mean()


def test_each_step_runs_in_training_mode_at_its_scheduled_rate():
    model, loss_of = _quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    schedule = CosineSchedule(peak_lr=0.01, total_steps=5, warmup_steps=2, floor_ratio=0.0)
    seen = []

    def batch_loss(step):
        assert model.training
        seen.append((step, optimizer.param_groups[0]["lr"]))
        return loss_of(step)

    losses = []
    for done, loss in optimizer_steps(model, optimizer, schedule, batch_loss, steps=5, grad_clip=None):
        model.eval()  # as a caller's evaluation would
        losses.append((done, loss.item()))
    assert seen == [(step, schedule.lr(step)) for step in range(5)]
    assert [done for done, _ in losses] == [1, 2, 3, 4, 5]
    assert losses[-1][1] < losses[0][1]


def test_gradients_are_clipped_to_the_given_norm_or_not_at_all():
    for grad_clip in (1e-3, None):
        model, loss_of = _quadratic()
        before = torch.cat([p.detach().clone().flatten() for p in model.parameters()])
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the gradient itself
        list(optimizer_steps(model, optimizer, CosineSchedule(1.0, 1, 0, 1.0), loss_of, 1, grad_clip))
        update = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item()
        if grad_clip is None:
            assert update > 1e-2
        else:
            assert update == pytest.approx(grad_clip, rel=1e-3)


def test_no_step_starts_after_the_deadline_and_the_caller_can_stop():
    model, loss_of = _quadratic()
    optimizer = adamw_without_decay_on_vectors(model, lr=1e-3, weight_decay=0.1)
    schedule = CosineSchedule(1e-3, 10, 0, 0.1)
    assert list(optimizer_steps(model, optimizer, schedule, loss_of, 10, 1.0, deadline=time.monotonic())) == []
    for done, _ in optimizer_steps(model, optimizer, schedule, loss_of, 10, 1.0):
        if done == 3:
            break
    assert optimizer.state[model.weight]["step"] == 3


def test_adamw_decays_matrices_but_not_biases():
    model = torch.nn.Linear(4, 2)
    groups = adamw_without_decay_on_vectors(model, lr=1e-3, weight_decay=0.1).param_groups
    assert [(group["weight_decay"], [p.shape for p in group["params"]]) for group in groups] == [
        (0.1, [torch.Size([2, 4])]), (0.0, [torch.Size([2])])]


def test_pretrain_says_why_it_stopped():
    from tools.pretrain import ModelShape, PretrainConfig, pretrain

    torch.manual_seed(0)
    stream = torch.randint(0, 50, (400,))
    shape = ModelShape(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=32)
    config = PretrainConfig(steps=4, batch_size=2, seq_len=16, warmup_steps=1, eval_every=2)
    result = pretrain(shape, config, stream, stream[:100], 50, 0, show_progress=False)
    assert (result.steps_done, result.stop_reason, [h["step"] for h in result.history]) == (4, "steps", [2, 4])
    out_of_time = PretrainConfig(steps=4, batch_size=2, seq_len=16, max_minutes=1e-9)
    result = pretrain(shape, out_of_time, stream, stream[:100], 50, 0, show_progress=False)
    assert (result.steps_done, result.stop_reason, result.best_step) == (0, "max_minutes", 0)
