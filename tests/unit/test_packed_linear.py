"""Packed projections compute F.linear (to float rounding) at every batch shape the runner uses."""

import pytest
import torch
import torch.nn.functional as F

from backends.hf import packed_linear


@pytest.mark.parametrize("shape", [(1, 1, 64), (7, 1, 64), (3, 19, 64), (2048, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_equals_dense(shape, with_bias):
    torch.manual_seed(0)
    weight = torch.randn(96, 64)
    bias = torch.randn(96) if with_bias else None
    projection = packed_linear.linear(weight, bias)
    assert projection.packed  # the CPU build pinned by the project has oneDNN
    x = torch.randn(*shape)
    assert torch.allclose(projection(x), F.linear(x, weight, bias), atol=1e-4)
    # A strided view (the runner's last-position slice) is read correctly too.
    if x.dim() == 3 and x.shape[1] > 1:
        last = x[:, -1:]
        assert torch.allclose(projection(last), F.linear(last, weight, bias), atol=1e-4)


def test_without_onednn_the_weight_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(packed_linear, "_onednn_available", lambda: False)
    weight = torch.randn(8, 4)
    projection = packed_linear.linear(weight)
    assert not projection.packed and projection.weight is weight
    x = torch.randn(2, 4)
    assert torch.equal(projection(x), F.linear(x, weight))


def test_dtypes_onednn_does_not_take_stay_dense():
    weight = torch.randn(8, 4, dtype=torch.float64)
    assert not packed_linear.linear(weight).packed
