"""Balancers: effective weights against autograd, and each method against its formula."""

from __future__ import annotations

import math

import pytest
import torch

from triangulate_ai.config import load_config
from triangulate_ai.loss.balance import BalanceContext, build_balancer, ramp_factor
from triangulate_ai.loss.balance.cov import CoVBalancer
from triangulate_ai.loss.balance.dwa import DWABalancer
from triangulate_ai.loss.balance.dynamic import DynamicBalancer
from triangulate_ai.loss.balance.geometric_mean import GeometricMeanBalancer
from triangulate_ai.loss.balance.gradnorm import GradNormBalancer
from triangulate_ai.loss.balance.uncertainty import UncertaintyBalancer

TYPES = ["fixed", "scale_norm", "geometric_mean", "uncertainty", "gradnorm", "cov", "dynamic", "dwa", "hybrid"]
TWO_TERMS = ["loss.terms.vgg={weights: random}"]


def _losses(*vals):
    names = ["l1", "vgg", "lpips"][: len(vals)]
    return {n: torch.tensor(float(v), requires_grad=True) for n, v in zip(names, vals)}


@pytest.mark.parametrize("kind", TYPES)
def test_reported_weights_are_the_gradient_of_the_total(kind):
    """For every method and several steps: get_loss_weights()[term] == d total / d L_term."""
    extra = ["loss.warmup_steps=0"] if kind == "gradnorm" else []
    extra += ["loss.baseline_iterations=50"] if kind == "dynamic" else []
    cfg = load_config(None, [f"loss.type={kind}", *TWO_TERMS, *extra])
    balancer = build_balancer(cfg.loss)
    shared = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ctx = BalanceContext(shared_params=[shared])
    for step, (a, b) in enumerate([(0.5, 2.0), (0.4, 2.5), (0.3, 1.0), (0.35, 0.8), (0.2, 0.9)]):
        losses = {"l1": a * shared.sum() / 3, "vgg": b * (shared**2).sum() / 5}
        total = balancer(losses, step, ctx)
        reported = balancer.get_loss_weights()
        grads = torch.autograd.grad(total, list(losses.values()))
        for name, g in zip(losses, grads):
            assert reported[name] == pytest.approx(g.item(), rel=1e-6, abs=1e-12), (kind, step, name)


def test_geometric_mean_weights_are_inverse_losses():
    balancer = GeometricMeanBalancer(["l1", "vgg", "lpips"], epsilon=1e-8, min_loss_value=0.0)
    losses = _losses(1.0, 2.0, 3.0)
    total = balancer(losses, 0, BalanceContext())
    assert total.item() == pytest.approx(math.log(6.0))
    weights = balancer.get_loss_weights()
    assert [weights[n] for n in losses] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-7)


def test_normalized_geometric_mean_and_dynamic_epsilon():
    balancer = GeometricMeanBalancer(["l1", "vgg", "lpips"], epsilon=0.0 + 1e-12, min_loss_value=0.0, normalized=True)
    losses = _losses(1.0, 2.0, 4.0)
    total = balancer(losses, 0, BalanceContext())
    assert total.item() == pytest.approx(2.0)  # (1*2*4)^(1/3)
    weights = balancer.get_loss_weights()
    assert [weights[n] for n in losses] == pytest.approx([2 / 3, 1 / 3, 1 / 6], rel=1e-6)  # G / (T L_i)
    dynamic = GeometricMeanBalancer(["l1", "vgg"], dynamic_epsilon=True, min_loss_value=0.0)
    dynamic(_losses(0.5, 2.0), 0, BalanceContext())
    assert dynamic.current_epsilon({"l1": 0.5, "vgg": 2.0}) == 0.005
    assert dynamic.get_loss_weights()["l1"] == pytest.approx(1 / 0.505)


def test_regulariser_adds_exactly_its_formula_below_min_loss_value():
    m, w = 1e-2, 0.5
    balancer = GeometricMeanBalancer(["l1", "vgg"], epsilon=1e-8, min_loss_value=m, regularization_weight=w)
    losses = _losses(0.004, 0.02)  # only l1 is below m
    total = balancer(losses, 0, BalanceContext())
    logs = math.log(0.004 + 1e-8) + math.log(0.02 + 1e-8)
    assert total.item() == pytest.approx(logs + w * (m - 0.004) ** 2, rel=1e-6)
    weights = balancer.get_loss_weights()
    assert weights["l1"] == pytest.approx(1 / (0.004 + 1e-8) - 2 * w * (m - 0.004), rel=1e-6)
    assert weights["vgg"] == pytest.approx(1 / (0.02 + 1e-8), rel=1e-6)


def test_uncertainty_converges_to_log_variance_equal_to_log_loss():
    balancer = UncertaintyBalancer(["l1", "vgg"], lr=0.05)
    optimiser = torch.optim.Adam(balancer.loop_parameters(), lr=0.05)
    fixed = {"l1": torch.tensor(0.2), "vgg": torch.tensor(3.0)}
    for step in range(3000):
        optimiser.zero_grad()
        balancer(fixed, step, BalanceContext()).backward()
        optimiser.step()
    assert torch.exp(balancer.log_vars).tolist() == pytest.approx([0.2, 3.0], rel=1e-3)
    weights = balancer.get_loss_weights()
    assert weights["l1"] == pytest.approx(1 / (2 * 0.2), rel=1e-3)  # 1 / (2 L_i) at equilibrium


def test_one_over_loss_invariant_across_uw_sum_of_logs_and_geometric_mean():
    """At equilibrium UW, the sum of logs and the geometric mean weight each loss by c / L_i."""
    vals = (0.5, 2.0, 8.0)
    names = ["l1", "vgg", "lpips"]
    uw = UncertaintyBalancer(names)
    with torch.no_grad():
        uw.log_vars.copy_(torch.log(torch.tensor(vals)))
    logs = GeometricMeanBalancer(names, epsilon=1e-12, min_loss_value=0.0)
    geo = GeometricMeanBalancer(names, epsilon=1e-12, min_loss_value=0.0, normalized=True)
    for balancer in (uw, logs, geo):
        balancer(_losses(*vals), 0, BalanceContext())
        weights = balancer.get_loss_weights()
        scaled = [weights[n] * v for n, v in zip(names, vals)]
        assert scaled == pytest.approx([scaled[0]] * 3, rel=1e-6)


def test_gradnorm_equalises_gradient_norms_and_keeps_the_sum():
    """Two losses whose gradients on the shared parameters are 10x apart, with equal training
    rates (r_i = 1): the weights settle where w_1 * 10 = w_2 * 1, i.e. (2/11, 20/11)."""
    balancer = GradNormBalancer(["l1", "vgg"], alpha=1.5, lr=0.02)
    shared = torch.nn.Parameter(torch.ones(4))
    ctx = BalanceContext(shared_params=[shared])
    for step in range(1500):
        losses = {"l1": 10 * shared.sum(), "vgg": shared.sum()}
        balancer(losses, step, ctx)
    w = balancer.get_loss_weights()
    assert w["l1"] + w["vgg"] == pytest.approx(2.0)
    assert [w["l1"], w["vgg"]] == pytest.approx([2 / 11, 20 / 11], rel=0.02)


def test_gradnorm_warmup_keeps_weights_at_one_and_averages_initial_losses():
    balancer = GradNormBalancer(["l1", "vgg"], warmup_steps=2)
    shared = torch.nn.Parameter(torch.ones(2))
    for step, (a, b) in enumerate([(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]):
        balancer({"l1": a * shared.sum(), "vgg": b * shared.sum()}, step, BalanceContext([shared]))
        assert balancer.get_loss_weights() == {"l1": 1.0, "vgg": 1.0}
    assert balancer.initial.tolist() == pytest.approx([4.0, 10.0])  # mean of 2a and 2b over 3 steps


def test_cov_follows_the_official_algorithm_on_a_fixed_sequence():
    """Hand computation ('full' mean mode), two losses:
    t=0: L=(1, 4): alphas 1/2; l = L/L = (1, 1); mean_l = (1, 1), S = 0, mean_L = (1, 4).
    t=1: L=(0.5, 4): alphas 1/2; l = (0.5, 1); mean factor 1/2: mean_l = (0.75, 1),
         S = (0.5-1)(0.5-0.75) = 0.125 and 0; std = sqrt(S/2 + 1e-8); mean_L = (0.75, 4).
    t=2: alphas from std/mean: c = (sqrt(0.0625+1e-8)/0.75, sqrt(1e-8)/1), normalised."""
    balancer = CoVBalancer(["l1", "vgg"], mean_mode="full")
    for step, pair in enumerate([(1.0, 4.0), (0.5, 4.0)]):
        balancer(_losses(*pair), step, BalanceContext())
        assert balancer.get_loss_weights() == {"l1": 0.5, "vgg": 0.5}
    assert balancer.mean_L.tolist() == pytest.approx([0.75, 4.0])
    balancer(_losses(0.3, 4.0), 2, BalanceContext())
    c = [math.sqrt(0.0625 + 1e-8) / 0.75, math.sqrt(1e-8) / 1.0]
    weights = balancer.get_loss_weights()
    assert [weights["l1"], weights["vgg"]] == pytest.approx([c[0] / sum(c), c[1] / sum(c)], rel=1e-9)


def test_cov_decay_mode_uses_the_fixed_factor():
    balancer = CoVBalancer(["l1", "vgg"], mean_mode="decay", mean_decay=0.8)
    balancer(_losses(1.0, 4.0), 0, BalanceContext())
    balancer(_losses(0.5, 2.0), 1, BalanceContext())
    assert balancer.mean_L.tolist() == pytest.approx([0.8 * 1.0 + 0.2 * 0.5, 0.8 * 4.0 + 0.2 * 2.0])


def test_dwa_on_a_fixed_sequence():
    balancer = DWABalancer(["l1", "vgg"], window=2, temperature=2.0)
    sequence = [(1.0, 1.0), (1.0, 1.0), (0.5, 1.0), (0.5, 1.0), (0.4, 1.0)]
    seen = []
    for step, pair in enumerate(sequence):
        balancer(_losses(*pair), step, BalanceContext())
        seen.append(balancer.get_loss_weights())
    assert seen[:4] == [{"l1": 1.0, "vgg": 1.0}] * 4  # two full windows are needed first
    rate = torch.tensor([0.5 / 1.0, 1.0 / 1.0])  # window means (0.5, 1) over (1, 1)
    expected = (2 * torch.softmax(rate / 2.0, dim=0)).tolist()
    assert [seen[4]["l1"], seen[4]["vgg"]] == pytest.approx(expected)
    assert seen[4]["vgg"] > seen[4]["l1"]  # the slower-falling loss gets more weight


def test_dynamic_keeps_one_during_baseline_respects_bounds_and_direction():
    balancer = DynamicBalancer({"l1": 1.0, "vgg": 2.0}, momentum=0.5, adaptation_rate=0.1, min_weight=0.5,
                               max_weight=1.5, adaptation_threshold=0.05, baseline_iterations=50)
    for step in range(50):
        balancer(_losses(1.0, 1.0), step, BalanceContext())
        assert balancer.get_monitoring_stats()["multipliers"] == {"l1": 1.0, "vgg": 1.0}
    # l1 keeps falling, vgg keeps rising
    for step in range(50, 200):
        k = step - 49
        balancer(_losses(0.97**k, 1.03**k), step, BalanceContext())
    stats = balancer.get_monitoring_stats()
    assert stats["multipliers"]["l1"] == pytest.approx(1.5)  # up to max_weight
    assert stats["multipliers"]["vgg"] == pytest.approx(0.5)  # down to min_weight
    assert stats["adaptation_count"] > 0 and stats["baseline_established"]
    assert balancer.get_loss_weights()["vgg"] == pytest.approx(2.0 * 0.5)
    balancer.reset(keep_baseline=True)
    assert balancer.get_monitoring_stats()["multipliers"] == {"l1": 1.0, "vgg": 1.0}
    assert balancer.get_monitoring_stats()["baseline_established"]
    balancer.reset(keep_baseline=False)
    assert not balancer.get_monitoring_stats()["baseline_established"]


def test_ramp_scales_the_effective_weight_not_the_loss_value():
    assert [ramp_factor(10, 20, s) for s in (0, 9, 10, 15, 20, 30)] == [0, 0, 0, 0.5, 1, 1]
    assert [ramp_factor(5, 0, s) for s in (4, 5)] == [0, 1]
    cfg = load_config(None, ["loss.type=geometric_mean", "loss.min_loss_value=0", *TWO_TERMS,
                             "loss.terms.vgg.start_iter=10", "loss.terms.vgg.target_iter=20"])
    balancer = build_balancer(cfg.loss)
    losses = _losses(0.5, 2.0)
    total = balancer(losses, 15, BalanceContext())
    assert total.item() == pytest.approx(math.log(0.5) + math.log(2.0), abs=1e-6)  # value untouched
    weights = balancer.get_loss_weights()
    assert weights["vgg"] == pytest.approx(0.5 / 2.0) and weights["l1"] == pytest.approx(1 / 0.5)
    assert torch.autograd.grad(total, losses["vgg"])[0].item() == pytest.approx(0.25)


def test_foreign_options_are_refused():
    from triangulate_ai.errors import UserError

    with pytest.raises(UserError, match="'alpha' is an option of gradnorm, not of type geometric_mean"):
        load_config(None, ["loss.type=geometric_mean", "loss.alpha=2"])
