"""Balancers: effective weights against autograd, each method against its formula, and the batch:
B scenes in one balancer behave exactly as B separate balancers, an inactive scene is frozen and
cannot leak into the others, and state survives a checkpoint."""

from __future__ import annotations

import io
import math

import pytest
import torch

from triangulate_ai.config import load_config
from triangulate_ai.balance import BalanceContext, build_balancer, ramp_factor
from triangulate_ai.balance.base import grad_norm
from triangulate_ai.balance.cov import CoVBalancer
from triangulate_ai.balance.dwa import DWABalancer
from triangulate_ai.balance.dynamic import DynamicBalancer
from triangulate_ai.balance.geometric_mean import GeometricMeanBalancer
from triangulate_ai.balance.gradnorm import GradNormBalancer
from triangulate_ai.balance.uncertainty import UncertaintyBalancer

TYPES = ["fixed", "scale_norm", "geometric_mean", "uncertainty", "gradnorm", "cov", "dynamic", "dwa", "hybrid"]
TWO_TERMS = ["loss.terms.vgg={weights: random}"]
THREE_TERMS = ["loss.terms.vgg={weights: random, weight: 0.5}", "loss.terms.lpips={weights: random, weight: 2.0}",
               "loss.terms.lpips.start_iter=1", "loss.terms.lpips.target_iter=5"]  # one ramped term


def _losses(*vals):
    """One (B,) loss per value; a value is a number (B = 1) or a tuple with one entry per scene."""
    names = ["l1", "vgg", "lpips"][: len(vals)]
    return {n: torch.tensor([float(x) for x in (v if isinstance(v, tuple) else (v,))], requires_grad=True)
            for n, v in zip(names, vals)}


def _scalars(weights: dict[str, torch.Tensor], scene: int = 0) -> dict[str, float]:
    return {key: float(value[scene]) for key, value in weights.items()}


# --- the effective weights are the gradient, per scene -------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_reported_weights_are_the_gradient_of_the_total(kind):
    """For every method, several steps and each scene b: get_loss_weights()[term][b] ==
    d total_b / d L_{term,b}, and d total_b / d L_{term,c} == 0 for every other scene c. From step
    3 on scene 1 is inactive: its weights and gradients are 0."""
    extra = ["loss.warmup_steps=0"] if kind == "gradnorm" else []
    extra += ["loss.baseline_iterations=50"] if kind == "dynamic" else []
    cfg = load_config(None, [f"loss.type={kind}", *TWO_TERMS, *extra])
    balancer = build_balancer(cfg.loss, batch=3).double()
    if kind == "dynamic":
        balancer.baseline_iterations, balancer.adaptation_threshold = 1, 0.01
    shared = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.2]], dtype=torch.float64))
    ctx = BalanceContext(shared_params=[shared])
    scales = torch.tensor([1.0, 0.3, 2.0], dtype=torch.float64)
    for step, (a, b) in enumerate([(0.5, 2.0), (0.4, 2.5), (0.3, 1.0), (0.35, 0.8), (0.2, 0.9)]):
        losses = {"l1": a * scales * shared.sum(dim=1) ** 2 / 3, "vgg": b * (shared**2).sum(dim=1) / 5 / scales}
        active = torch.tensor([True, step < 3, True])
        total = balancer(losses, step, ctx, active=active)
        assert total.shape == (3,)
        reported = balancer.get_loss_weights()
        for name in losses:
            assert reported[name].dtype == torch.float64 and reported[name].shape == (3,)
        for scene in range(3):
            grads = torch.autograd.grad(total[scene], list(losses.values()), retain_graph=True)
            for name, g in zip(losses, grads):
                expected = torch.zeros(3, dtype=torch.float64)
                expected[scene] = reported[name][scene]
                assert g.tolist() == pytest.approx(expected.tolist(), rel=1e-9, abs=1e-12), (kind, step, name, scene)
                if not active[scene]:
                    assert reported[name][scene] == 0.0


# --- each method against its formula ----------------------------------------------------------------------


def test_geometric_mean_weights_are_inverse_losses():
    balancer = GeometricMeanBalancer(["l1", "vgg", "lpips"], epsilon=1e-8, min_loss_value=0.0, batch=2)
    losses = _losses((1.0, 4.0), (2.0, 1.0), (3.0, 0.5))  # two scenes
    total = balancer(losses, 0, BalanceContext())
    assert total.tolist() == pytest.approx([math.log(6.0), math.log(2.0)])
    weights = balancer.get_loss_weights()
    assert [weights[n][0].item() for n in losses] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-7)
    assert [weights[n][1].item() for n in losses] == pytest.approx([0.25, 1.0, 2.0], rel=1e-7)


def test_normalized_geometric_mean_and_dynamic_epsilon():
    balancer = GeometricMeanBalancer(["l1", "vgg", "lpips"], epsilon=0.0 + 1e-12, min_loss_value=0.0, normalized=True)
    losses = _losses(1.0, 2.0, 4.0)
    total = balancer(losses, 0, BalanceContext())
    assert total.item() == pytest.approx(2.0)  # (1*2*4)^(1/3)
    weights = _scalars(balancer.get_loss_weights())
    assert [weights[n] for n in losses] == pytest.approx([2 / 3, 1 / 3, 1 / 6], rel=1e-6)  # G / (T L_i)
    dynamic = GeometricMeanBalancer(["l1", "vgg"], dynamic_epsilon=True, min_loss_value=0.0, batch=2)
    dynamic(_losses((0.5, 1e-9), (2.0, 3.0)), 0, BalanceContext())
    eps = dynamic.current_epsilon(torch.tensor([[0.5, 2.0], [1e-9, 3.0]], dtype=torch.float64))
    assert eps.tolist() == pytest.approx([0.005, 1e-8])  # each scene's own smallest loss; floor 1e-8
    assert dynamic.get_loss_weights()["l1"].tolist() == pytest.approx([1 / 0.505, 1 / (1e-9 + 1e-8)])


def test_regulariser_adds_exactly_its_formula_below_min_loss_value():
    m, w = 1e-2, 0.5
    balancer = GeometricMeanBalancer(["l1", "vgg"], epsilon=1e-8, min_loss_value=m, regularization_weight=w, batch=2)
    losses = _losses((0.004, 0.02), (0.02, 0.004))  # scene 0: only l1 below m; scene 1: only vgg
    total = balancer(losses, 0, BalanceContext())
    logs = math.log(0.004 + 1e-8) + math.log(0.02 + 1e-8)
    assert total.tolist() == pytest.approx([logs + w * (m - 0.004) ** 2] * 2, rel=1e-6)
    weights = balancer.get_loss_weights()
    below, above = 1 / (0.004 + 1e-8) - 2 * w * (m - 0.004), 1 / (0.02 + 1e-8)
    assert weights["l1"].tolist() == pytest.approx([below, above], rel=1e-6)
    assert weights["vgg"].tolist() == pytest.approx([above, below], rel=1e-6)


def test_uncertainty_converges_to_log_variance_equal_to_log_loss():
    """Each scene's log-variances settle at its own log losses."""
    balancer = UncertaintyBalancer(["l1", "vgg"], lr=0.05, batch=2)
    optimiser = torch.optim.Adam(balancer.loop_parameters(), lr=0.05)
    fixed = {"l1": torch.tensor([0.2, 1.5]), "vgg": torch.tensor([3.0, 0.1])}
    for step in range(3000):
        optimiser.zero_grad()
        balancer(fixed, step, BalanceContext()).sum().backward()
        optimiser.step()
    assert torch.exp(balancer.log_vars).flatten().tolist() == pytest.approx([0.2, 3.0, 1.5, 0.1], rel=1e-3)
    weights = balancer.get_loss_weights()
    assert weights["l1"].tolist() == pytest.approx([1 / (2 * 0.2), 1 / (2 * 1.5)], rel=1e-3)  # 1 / (2 L_i)
    assert weights["log_var/vgg"].tolist() == pytest.approx([math.log(3.0), math.log(0.1)], abs=1e-3)


def test_one_over_loss_invariant_across_uw_sum_of_logs_and_geometric_mean():
    """At equilibrium UW, the sum of logs and the geometric mean weight each loss by c / L_i."""
    vals = (0.5, 2.0, 8.0)
    names = ["l1", "vgg", "lpips"]
    uw = UncertaintyBalancer(names)
    with torch.no_grad():
        uw.log_vars.copy_(torch.log(torch.tensor([vals])))
    logs = GeometricMeanBalancer(names, epsilon=1e-12, min_loss_value=0.0)
    geo = GeometricMeanBalancer(names, epsilon=1e-12, min_loss_value=0.0, normalized=True)
    for balancer in (uw, logs, geo):
        balancer(_losses(*vals), 0, BalanceContext())
        weights = _scalars(balancer.get_loss_weights())
        scaled = [weights[n] * v for n, v in zip(names, vals)]
        assert scaled == pytest.approx([scaled[0]] * 3, rel=1e-6)


def test_gradnorm_equalises_gradient_norms_and_keeps_the_sum():
    """Two losses whose gradients on the shared parameters are 10x apart (scene 0) and 4x apart
    (scene 1), with equal training rates (r_i = 1): each scene's weights settle where
    w_1 * k = w_2 * 1, i.e. (2/11, 20/11) and (2/5, 8/5)."""
    balancer = GradNormBalancer(["l1", "vgg"], alpha=1.5, lr=0.02, batch=2)
    shared = torch.nn.Parameter(torch.ones(2, 4))
    ctx = BalanceContext(shared_params=[shared])
    k = torch.tensor([10.0, 4.0])
    for step in range(1500):
        losses = {"l1": k * shared.sum(dim=1), "vgg": shared.sum(dim=1)}
        balancer(losses, step, ctx)
    w = balancer.get_loss_weights()
    assert (w["l1"] + w["vgg"]).tolist() == pytest.approx([2.0, 2.0])
    assert [w["l1"][0].item(), w["vgg"][0].item()] == pytest.approx([2 / 11, 20 / 11], rel=0.02)
    assert [w["l1"][1].item(), w["vgg"][1].item()] == pytest.approx([2 / 5, 8 / 5], rel=0.02)


def test_gradnorm_warmup_keeps_weights_at_one_and_averages_initial_losses():
    balancer = GradNormBalancer(["l1", "vgg"], warmup_steps=2)
    shared = torch.nn.Parameter(torch.ones(1, 2))
    for step, (a, b) in enumerate([(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]):
        balancer({"l1": a * shared.sum(dim=1), "vgg": b * shared.sum(dim=1)}, step, BalanceContext([shared]))
        assert _scalars(balancer.get_loss_weights()) == {"l1": 1.0, "vgg": 1.0}
    assert balancer.initial.flatten().tolist() == pytest.approx([4.0, 10.0])  # mean of 2a and 2b over 3 steps


def test_grad_norm_is_per_scene_over_every_shared_tensor():
    """One backward pass for all scenes; scene b's norm covers its slice of every tensor only."""
    positions = torch.randn(3, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    colors = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    opacity = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    params = [positions, colors, opacity]

    def loss(p, c, o):
        return (p**2).flatten(1).sum(1) * torch.sigmoid(o).mean(1) + (c**3).flatten(1).mean(1)

    batched = grad_norm(loss(*params), params)
    assert batched.shape == (3,) and batched.dtype == torch.float64
    for b in range(3):
        alone = [t[b:b + 1].detach().clone().requires_grad_() for t in params]
        grads = torch.autograd.grad(loss(*alone).sum(), alone)
        expected = math.sqrt(sum(float((g**2).sum()) for g in grads))
        assert batched[b].item() == pytest.approx(expected, rel=1e-12)


def test_cov_follows_the_official_algorithm_on_a_fixed_sequence():
    """Hand computation ('full' mean mode), two losses:
    t=0: L=(1, 4): alphas 1/2; l = L/L = (1, 1); mean_l = (1, 1), S = 0, mean_L = (1, 4).
    t=1: L=(0.5, 4): alphas 1/2; l = (0.5, 1); mean factor 1/2: mean_l = (0.75, 1),
         S = (0.5-1)(0.5-0.75) = 0.125 and 0; std = sqrt(S/2 + 1e-8); mean_L = (0.75, 4).
    t=2: alphas from std/mean: c = (sqrt(0.0625+1e-8)/0.75, sqrt(1e-8)/1), normalised."""
    balancer = CoVBalancer(["l1", "vgg"], mean_mode="full")
    for step, pair in enumerate([(1.0, 4.0), (0.5, 4.0)]):
        balancer(_losses(*pair), step, BalanceContext())
        assert _scalars(balancer.get_loss_weights()) == {"l1": 0.5, "vgg": 0.5}
    assert balancer.mean_L.flatten().tolist() == pytest.approx([0.75, 4.0])
    balancer(_losses(0.3, 4.0), 2, BalanceContext())
    c = [math.sqrt(0.0625 + 1e-8) / 0.75, math.sqrt(1e-8) / 1.0]
    weights = _scalars(balancer.get_loss_weights())
    assert [weights["l1"], weights["vgg"]] == pytest.approx([c[0] / sum(c), c[1] / sum(c)], rel=1e-9)


def test_cov_decay_mode_uses_the_fixed_factor():
    balancer = CoVBalancer(["l1", "vgg"], mean_mode="decay", mean_decay=0.8)
    balancer(_losses(1.0, 4.0), 0, BalanceContext())
    balancer(_losses(0.5, 2.0), 1, BalanceContext())
    assert balancer.mean_L.flatten().tolist() == pytest.approx([0.8 * 1.0 + 0.2 * 0.5, 0.8 * 4.0 + 0.2 * 2.0])


def test_dwa_on_a_fixed_sequence():
    balancer = DWABalancer(["l1", "vgg"], window=2, temperature=2.0)
    sequence = [(1.0, 1.0), (1.0, 1.0), (0.5, 1.0), (0.5, 1.0), (0.4, 1.0)]
    seen = []
    for step, pair in enumerate(sequence):
        balancer(_losses(*pair), step, BalanceContext())
        seen.append(_scalars(balancer.get_loss_weights()))
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
        assert balancer.get_monitoring_stats(scene=0)["multipliers"] == {"l1": 1.0, "vgg": 1.0}
    # l1 keeps falling, vgg keeps rising
    for step in range(50, 200):
        k = step - 49
        balancer(_losses(0.97**k, 1.03**k), step, BalanceContext())
    stats = balancer.get_monitoring_stats(scene=0)
    assert stats["multipliers"]["l1"] == pytest.approx(1.5)  # up to max_weight
    assert stats["multipliers"]["vgg"] == pytest.approx(0.5)  # down to min_weight
    assert stats["adaptation_count"] > 0 and stats["baseline_established"]
    assert balancer.get_loss_weights()["vgg"].item() == pytest.approx(2.0 * 0.5)
    per_scene = balancer.get_monitoring_stats()  # every scene at once: (B,) tensors
    assert per_scene["multipliers"]["l1"].tolist() == pytest.approx([1.5])
    assert per_scene["adaptation_count"].tolist() == [stats["adaptation_count"]]
    balancer.reset(keep_baseline=True)
    assert balancer.get_monitoring_stats(scene=0)["multipliers"] == {"l1": 1.0, "vgg": 1.0}
    assert balancer.get_monitoring_stats(scene=0)["baseline_established"]
    balancer.reset(keep_baseline=False)
    assert not balancer.get_monitoring_stats(scene=0)["baseline_established"]


def test_dynamic_reset_of_some_scenes_leaves_the_others():
    balancer = DynamicBalancer({"l1": 1.0}, baseline_iterations=1, adaptation_threshold=0.01, batch=3)
    for step in range(6):
        balancer({"l1": torch.tensor([0.9, 0.8, 0.7]) ** step}, step, BalanceContext())
    before = balancer.multipliers.clone()
    assert (before != 1).all()
    balancer.reset(keep_baseline=False, scenes=torch.tensor([1]))
    assert balancer.multipliers[:, 0].tolist() == [before[0, 0].item(), 1.0, before[2, 0].item()]
    assert balancer.get_monitoring_stats()["baseline_established"].tolist() == [True, False, True]


def test_ramp_scales_the_effective_weight_not_the_loss_value():
    assert [ramp_factor(10, 20, s) for s in (0, 9, 10, 15, 20, 30)] == [0, 0, 0, 0.5, 1, 1]
    assert [ramp_factor(5, 0, s) for s in (4, 5)] == [0, 1]
    cfg = load_config(None, ["loss.type=geometric_mean", "loss.min_loss_value=0", *TWO_TERMS,
                             "loss.terms.vgg.start_iter=10", "loss.terms.vgg.target_iter=20"])
    balancer = build_balancer(cfg.loss, batch=2)
    losses = _losses((0.5, 1.0), (2.0, 4.0))
    total = balancer(losses, 15, BalanceContext())
    expected = [math.log(0.5) + math.log(2.0), math.log(1.0) + math.log(4.0)]
    assert total.tolist() == pytest.approx(expected, abs=1e-6)  # values untouched
    weights = balancer.get_loss_weights()
    assert weights["vgg"].tolist() == pytest.approx([0.5 / 2.0, 0.5 / 4.0])  # ramp 0.5, same for every scene
    assert weights["l1"].tolist() == pytest.approx([1 / 0.5, 1 / 1.0])
    assert torch.autograd.grad(total.sum(), losses["vgg"])[0].tolist() == pytest.approx([0.25, 0.125])


def test_foreign_options_are_refused():
    from triangulate_ai.errors import UserError

    with pytest.raises(UserError, match="'alpha' is an option of gradnorm, not of type geometric_mean"):
        load_config(None, ["loss.type=geometric_mean", "loss.alpha=2"])


def test_losses_of_the_wrong_shape_are_refused():
    balancer = build_balancer(load_config(None, ["loss.type=fixed"]).loss, batch=2)
    with pytest.raises(ValueError, match=r"loss 'l1' has shape \(\); .* 2 scene\(s\) .* shape \(2,\)"):
        balancer({"l1": torch.tensor(1.0)}, 0, BalanceContext())
    with pytest.raises(ValueError, match=r"active has shape \(3,\), expected \(2,\)"):
        balancer({"l1": torch.ones(2)}, 0, BalanceContext(), active=torch.ones(3, dtype=torch.bool))


# --- the batch: B scenes in one balancer == B separate balancers ------------------------------------------

STEPS = 8


def _build(kind: str, batch: int):
    """A balancer of `kind` over three terms (one ramped), options chosen so every branch of the
    method runs within STEPS steps; float64 throughout."""
    extra = {
        "scale_norm": ["loss.ema_decay=0.5"],
        "geometric_mean": ["loss.min_loss_value=0.05", "loss.regularization_weight=0.5", "loss.dynamic_epsilon=true"],
        "uncertainty": ["loss.lr=0.05", "loss.init_log_var=-0.5"],
        "gradnorm": ["loss.warmup_steps=1", "loss.lr=0.05"],
        "dynamic": ["loss.adaptation_threshold=0.01", "loss.adaptation_rate=0.1"],
        "dwa": ["loss.temperature=0.5"],
        "hybrid": ["loss.min_loss_value=0.05", "loss.regularization_weight=0.5", "loss.lr=0.05"],
    }.get(kind, [])
    cfg = load_config(None, [f"loss.type={kind}", *THREE_TERMS, *extra])
    balancer = build_balancer(cfg.loss, batch=batch).double()
    if kind == "dynamic":
        balancer.baseline_iterations = 2  # the config's floor is 50
    return balancer


def _scene_losses(params, coeffs):
    """Three positive per-scene losses of per-scene parameters (positions (B,T,3,2), colour
    logits (B,T,3), opacity logits (B,T)), scaled by per-scene coefficients (B, 3)."""
    pos, col, opa = params
    alpha = torch.sigmoid(opa)
    l1 = coeffs[:, 0] * ((pos - 0.3) ** 2).flatten(1).mean(1) + 0.01
    vgg = coeffs[:, 1] * ((torch.sigmoid(col) - 0.2) ** 2).flatten(1).mean(1) * alpha.mean(1) + 0.002
    lpips = coeffs[:, 2] * pos.flatten(1).abs().mean(1) * (alpha**2).mean(1) + 0.005
    return {"l1": l1, "vgg": vgg, "lpips": lpips}


def _problem(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(batch, 4, 3, 2, generator=g, dtype=torch.float64),
              torch.randn(batch, 4, 3, generator=g, dtype=torch.float64),
              torch.randn(batch, 4, generator=g, dtype=torch.float64)]
    coeffs = torch.exp(torch.randn(batch, STEPS, 3, generator=g, dtype=torch.float64))  # a trajectory per scene
    return params, coeffs


class _Loop:
    """What the fit loop does with a balancer, on the synthetic problem: losses -> balancer ->
    total.sum().backward() -> one Adam over the scene parameters and the balancer's own. A scene
    marked inactive gets no parameter update (the loop's part of disabling a scene)."""

    def __init__(self, kind, params, coeffs):
        self.balancer = _build(kind, params[0].shape[0])
        self.params = [torch.nn.Parameter(p.clone()) for p in params]
        self.coeffs = coeffs
        groups = [{"params": self.params, "lr": 0.05}]
        if self.balancer.loop_parameters():
            groups.append({"params": self.balancer.loop_parameters(), "lr": self.balancer.lr})
        self.optimizer = torch.optim.Adam(groups)
        self.ctx = BalanceContext(shared_params=self.params, iterations=STEPS)
        self.step = 0

    def train_step(self, active=None, poison=None):
        coeffs = self.coeffs[:, self.step].clone()
        if poison is not None:  # these scenes' losses become NaN
            coeffs[poison] = float("nan")
        losses = _scene_losses(self.params, coeffs)
        total = self.balancer(losses, self.step, self.ctx, active=active)
        weights = self.balancer.get_loss_weights()
        self.optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        frozen = []
        if active is not None:
            tensors = self.params + self.balancer.loop_parameters()
            frozen = [(t, t.detach().clone()) for t in tensors]
            for t in tensors:
                t.grad[~active] = 0.0
        self.optimizer.step()
        for t, before in frozen:
            with torch.no_grad():
                t[~active] = before[~active]
        self.step += 1
        return total.detach(), weights, _state(self.balancer)


def _state(balancer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}


def _assert_scene(batched, scene, alone, what):
    total, weights, state = batched
    total1, weights1, state1 = alone
    assert total[scene].item() == pytest.approx(total1[0].item(), rel=1e-6, abs=1e-9), ("total", what)
    assert weights.keys() == weights1.keys()
    for key in weights:
        assert weights[key][scene].item() == pytest.approx(weights1[key][0].item(), rel=1e-6, abs=1e-9), (key, what)
    assert state.keys() == state1.keys()
    for key in state:
        assert state[key].shape[1:] == state1[key].shape[1:], key
        assert torch.allclose(state[key][scene].double(), state1[key][0].double(), rtol=1e-6, atol=1e-9), (key, what)


@pytest.mark.parametrize("kind", TYPES)
def test_a_batch_of_scenes_matches_separate_balancers(kind):
    """B = 3 scenes with different parameters and loss trajectories in one balancer and one loop
    against three B = 1 runs: totals, reported weights and every state tensor (learnable
    parameters and the method's own optimiser state included) agree at every step, and so do
    the scenes' parameters at the end."""
    params, coeffs = _problem()
    batched = _Loop(kind, params, coeffs)
    alone = [_Loop(kind, [p[b:b + 1] for p in params], coeffs[b:b + 1]) for b in range(3)]
    for step in range(STEPS):
        record = batched.train_step()
        for b in range(3):
            _assert_scene(record, b, alone[b].train_step(), (kind, step, b))
    for b in range(3):
        for p, q in zip(batched.params, alone[b].params):
            assert torch.allclose(p[b], q[0], rtol=1e-6, atol=1e-9)
    if kind in ("uncertainty", "gradnorm", "hybrid"):  # the learnable part moved, and differently per scene
        learned = batched.balancer.loop_parameters() or [batched.balancer.theta]
        assert not torch.allclose(learned[0][0], learned[0][1])


@pytest.mark.parametrize("kind", TYPES)
def test_an_inactive_scene_is_frozen_and_leaks_nothing(kind):
    """Scene 1's losses become NaN at step 4 and it is marked inactive from then on: scenes 0
    and 2 go on exactly as their separate runs, scene 1's total and weights are 0 (no NaN
    anywhere), its state stays as it was after step 3, and its losses get zero gradient."""
    params, coeffs = _problem()
    batched = _Loop(kind, params, coeffs)
    alone = {b: _Loop(kind, [p[b:b + 1] for p in params], coeffs[b:b + 1]) for b in (0, 2)}
    frozen_state = None
    for step in range(STEPS):
        failing = step >= 4
        active = torch.tensor([True, not failing, True])
        record = batched.train_step(active=active, poison=torch.tensor([1]) if failing else None)
        total, weights, state = record
        for b in (0, 2):
            _assert_scene(record, b, alone[b].train_step(), (kind, step, b))
        if step == 3:
            frozen_state = state
        if failing:
            assert torch.isfinite(total).all() and total[1].item() == 0.0
            for name in ("l1", "vgg", "lpips"):
                assert weights[name][1].item() == 0.0
            for key, value in state.items():
                assert torch.equal(value[1], frozen_state[key][1]), (kind, step, key)
    losses = _scene_losses(batched.params, torch.full((3, 3), float("nan"), dtype=torch.float64))
    losses = {n: v.detach().requires_grad_() for n, v in losses.items()}
    total = batched.balancer(losses, STEPS, batched.ctx, active=torch.tensor([False, True, False]))
    grads = torch.autograd.grad(total.sum(), list(losses.values()), allow_unused=True)
    for g in grads:
        assert g is None or (g[0] == 0 and g[2] == 0)


@pytest.mark.parametrize("kind", TYPES)
def test_state_dict_round_trip_resumes_identically(kind):
    """B = 2: five steps, a checkpoint through torch.save / torch.load(weights_only=True) into a
    fresh balancer and optimiser, four more steps: the same as without the interruption."""
    params, coeffs = _problem(batch=2, seed=1)
    full = _Loop(kind, params, coeffs)
    records = [full.train_step() for _ in range(STEPS)]
    cut = _Loop(kind, params, coeffs)
    for _ in range(5):
        cut.train_step()
    buffer = io.BytesIO()
    torch.save({"balancer": cut.balancer.state_dict(), "optimizer": cut.optimizer.state_dict(),
                "params": [p.detach() for p in cut.params]}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    again = _Loop(kind, params, coeffs)
    again.balancer.load_state_dict(checkpoint["balancer"])
    again.optimizer.load_state_dict(checkpoint["optimizer"])
    with torch.no_grad():
        for p, saved in zip(again.params, checkpoint["params"]):
            p.copy_(saved)
    again.step = 5
    for step in range(5, STEPS):
        total, weights, state = again.train_step()
        total0, weights0, state0 = records[step]
        assert torch.equal(total, total0), (kind, step)
        assert weights.keys() == weights0.keys() and all(torch.equal(weights[k], weights0[k]) for k in weights)
        assert state.keys() == state0.keys() and all(torch.equal(state[k], state0[k]) for k in state), (kind, step)


@pytest.mark.parametrize("kind", TYPES)
def test_every_state_tensor_is_per_scene(kind):
    """Every buffer and parameter has the scene as its first dimension (B = 3, T = 2 terms)."""
    cfg = load_config(None, [f"loss.type={kind}", *TWO_TERMS])
    balancer = build_balancer(cfg.loss, batch=3)
    state = balancer.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values()), kind
    for key, value in state.items():
        assert value.dim() >= 1 and value.shape[0] == 3, (kind, key, tuple(value.shape))
