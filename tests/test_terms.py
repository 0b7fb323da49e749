"""Pixel loss terms: values from their formulas, per scene, and the one-pass L1 against autograd's
graph of the same expression."""

from __future__ import annotations

import torch

from triangulate_ai.loss.terms import L1, L2


def _batch(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(3, 3, 7, 5, generator=g, dtype=dtype)
    target = torch.rand(3, 3, 7, 5, generator=g, dtype=dtype)
    return pred, target


def test_l1_is_the_mean_absolute_error_of_each_scene():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[0, 0, 0, 0] = 1.2   # scene 0: one pixel off by 1.2 of 12 values
    target[1] = -0.5           # scene 1: every value off by 0.5
    assert torch.allclose(L1()(pred, target), torch.tensor([0.1, 0.5]))
    assert torch.allclose(L2()(pred, target), torch.tensor([0.12, 0.25]))


def test_l1_matches_autograd_of_abs_mean_in_value_and_gradient():
    pred, target = _batch()
    pred.requires_grad_(True)
    weights = torch.tensor([0.3, -2.0, 1.0])
    loss = L1()(pred, target)
    (fast,) = torch.autograd.grad((loss * weights).sum(), pred)
    reference = (pred - target).abs().flatten(1).mean(dim=1)
    (slow,) = torch.autograd.grad((reference * weights).sum(), pred)
    assert torch.allclose(loss, reference, rtol=1e-6, atol=0)
    assert torch.equal(fast, slow)


def test_l1_gradients_pass_finite_differences_for_prediction_and_target():
    pred, target = _batch(1, torch.float64)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: L1()(p, t), (pred, target))


def test_l1_where_prediction_equals_target_has_zero_gradient_as_abs_does():
    pred, target = _batch()
    pred[0] = target[0]
    pred.requires_grad_(True)
    L1()(pred, target).sum().backward()
    assert torch.count_nonzero(pred.grad[0]) == 0
    assert torch.count_nonzero(pred.grad[1:]) == pred.grad[1:].numel()


def test_l1_with_a_mask_or_a_broadcast_target_takes_the_general_path():
    pred, target = _batch(2)
    mask = torch.zeros(3, 1, 7, 5)
    mask[:, :, :3] = 1.0
    masked = L1()(pred, target, mask)
    assert torch.allclose(masked, (pred - target).abs()[:, :, :3].flatten(1).mean(dim=1))
    one_target = target[:1]
    assert torch.allclose(L1()(pred, one_target), (pred - one_target).abs().flatten(1).mean(dim=1))
