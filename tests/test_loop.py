"""The loop: determinism, resume after a crash, non-finite losses, the balancer seam."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from triangulate_ai.config import load_config
from triangulate_ai.loop import Fitter
from triangulate_ai.balance import BalanceContext
from triangulate_ai.balance.fixed import FixedBalancer
from triangulate_ai.metrics import Evaluator
from triangulate_ai.run import CHECKPOINT, METRICS, RunRecorder

from .conftest import QUICK, smooth_image


def _setup(tmp_path, *extra):
    sets = [QUICK[i + 1] for i in range(0, len(QUICK), 2)] + list(extra)
    cfg = load_config(None, sets)
    target_np = smooth_image(32, 40).astype(np.float32) / 255
    target = torch.from_numpy(target_np).permute(2, 0, 1)[None]
    fitter = Fitter(cfg, target, target.mean(dim=(2, 3)))
    tmp_path.mkdir(exist_ok=True)
    return fitter, RunRecorder(tmp_path, fitter, Evaluator(target_np, None, torch.device("cpu")))


class _Crash:
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, fitter, result):
        if result.step == self.at:
            raise RuntimeError("simulated crash")


def test_same_seed_same_result_and_different_seed_differs(tmp_path):
    a, rec_a = _setup(tmp_path / "a")
    b, rec_b = _setup(tmp_path / "b")
    c, rec_c = _setup(tmp_path / "c", "seed=1")
    for fitter, rec in [(a, rec_a), (b, rec_b), (c, rec_c)]:
        fitter.run([rec])
    assert torch.equal(a.triangles.positions, b.triangles.positions)
    assert not torch.equal(a.triangles.positions, c.triangles.positions)


def test_resume_after_a_crash_continues_from_the_last_checkpoint(tmp_path):
    full, rec_full = _setup(tmp_path / "full")
    full.run([rec_full])

    crashed, rec = _setup(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="simulated"):
        crashed.run([rec, _Crash(at=25)])  # checkpoints every 10 steps: the last one is at 20
    logged = [json.loads(x)["step"] for x in (tmp_path / "crash" / METRICS).read_text().splitlines()]
    assert logged[-1] == 25

    again, rec_again = _setup(tmp_path / "crash")
    rec_again.resume(again)
    assert again.step == 20
    logged = [json.loads(x)["step"] for x in (tmp_path / "crash" / METRICS).read_text().splitlines()]
    assert logged == [0, 5, 10, 15]  # lines after the checkpoint are dropped, then rewritten
    again.run([rec_again])
    for p_full, p_again in zip(full.triangles.parameters(), again.triangles.parameters()):
        assert torch.equal(p_full, p_again)
    assert len(rec_again.frames) == len(rec_full.frames)


def test_non_finite_loss_stops_before_updating_and_names_the_term(tmp_path):
    fitter, rec = _setup(tmp_path)

    class Poison:
        name = "l1"

        def __call__(self, pred, target, mask=None):
            return (pred - target).abs().flatten(1).mean(dim=1) * (float("nan") if fitter.step == 12 else 1.0)

    fitter.terms = {"l1": Poison()}
    before = {}

    class Keep:
        def on_step(self, fitter, result):
            if result.step == 11:
                before.update({n: p.detach().clone() for n, p in fitter.triangles.named_parameters()})

    assert fitter.run([rec, Keep()]) == "stopped"  # its only scene stopped
    assert fitter.errors[0].startswith("loss term 'l1' became nan at step 12")
    assert fitter.steps_done(0) == 12 and fitter.scene_stop[0] == "error"
    for name, param in fitter.triangles.named_parameters():
        assert torch.equal(param, before[name]), name  # the parameters after step 11, not updated again
    assert (tmp_path / CHECKPOINT).is_file()
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["fitter"]["step"] == 10


def test_fixed_balancer_weights_are_the_gradient_of_the_total():
    balancer = FixedBalancer({"a": 0.5, "b": 3.0})
    losses = {"a": torch.tensor([2.0], requires_grad=True), "b": torch.tensor([0.1], requires_grad=True)}
    total = balancer(losses, step=0, ctx=BalanceContext())
    assert total.item() == pytest.approx(0.5 * 2.0 + 3.0 * 0.1)
    grads = torch.autograd.grad(total.sum(), list(losses.values()))
    reported = {k: v.item() for k, v in balancer.get_loss_weights().items()}
    assert {k: g.item() for k, g in zip(losses, grads)} == reported == {"a": 0.5, "b": 3.0}


def test_loop_only_talks_to_the_balancer_interface(tmp_path):
    """Any Balancer works in the loop: here one whose weight depends on the step."""
    fitter, rec = _setup(tmp_path)

    class Ramp(FixedBalancer):
        def combine(self, losses, step, ctx):
            self.term_weights = {"l1": 1.0 + step}
            return super().combine(losses, step, ctx)

    fitter.balancer = Ramp({"l1": 1.0})
    seen = []

    class Watch:
        def on_step(self, fitter, result):
            seen.append(result.weights["l1"][0])

    fitter.run([Watch()])
    assert seen == [1.0 + s for s in range(40)]


def test_long_fit_on_the_example_is_bitwise_reproducible():
    """Many pairs per tile and many steps: where a nondeterministic CPU scatter would show."""
    from pathlib import Path

    from triangulate_ai.io import load_image

    cfg = load_config(Path(__file__).parent.parent / "configs" / "quickstart.yaml", ["optim.iterations=150"])
    image = load_image(Path(__file__).parent.parent / "examples" / "kodim23.png", 256)
    target = torch.from_numpy(image.colour).permute(2, 0, 1)[None]
    runs = []
    for _ in range(2):
        fitter = Fitter(cfg, target, target.mean(dim=(2, 3)))
        fitter.run([])
        runs.append(fitter.triangles.positions.detach())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("balancer, logged, ramp", [("gradnorm", 0, False), ("gradnorm", 3, False),
                                                    ("gradnorm", 0, True), ("fixed", 2, False),
                                                    ("uncertainty", 1, True)])
def test_per_term_gradients_from_the_render_give_the_same_fit_as_a_backward_per_term(balancer, logged, ramp):
    """GradNorm's term norms (and logged ones) come from each term's gradient on the render, taken
    once, and the step's backward reuses them; a fitter that runs the terms backward again (the
    way it was done before: no logged norms, the balancer measuring its own) ends at the same
    weights and parameters, ramps and learnable balancer parameters included."""
    from triangulate_ai.balance.base import grad_norm
    from triangulate_ai.loop import TermGradients

    l2 = "{weight: 3.0, start_iter: 1, target_iter: 6}" if ramp else "{weight: 3.0}"
    sets = ["triangles.count=12", "optim.iterations=8", f"loss.type={balancer}", f"loss.terms.l2={l2}",
            "eval.lpips=null", "render.backend=torch"]
    target = torch.from_numpy(smooth_image(24, 20)).permute(2, 0, 1)[None].float() / 255

    def run(per_term: bool):
        fitter = Fitter(load_config(None, [*sets, f"log.grad_norm_every={logged if per_term else 0}"]), target,
                        target.mean(dim=(2, 3)))
        if not per_term:
            fitter.balancer.needs_term_gradients = False
        return fitter, [fitter.train_step() for _ in range(8)]

    new, new_steps = run(True)
    old, old_steps = run(False)
    for a, b in zip(new_steps, old_steps):
        for name in a.weights:
            assert a.weights[name] == pytest.approx(b.weights[name], rel=1e-5, abs=1e-7)
    for param in ("positions", "color_logits", "opacity_logits"):
        assert torch.allclose(getattr(new.triangles, param), getattr(old.triangles, param), atol=1e-5), param
    for a, b in zip(new.balancer.parameters(), old.balancer.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    if balancer == "gradnorm":
        assert new_steps[-1].weights != new_steps[1].weights  # the weights did move
    if logged:
        logged_steps = [s for s in new_steps if s.grad_norms is not None]
        assert [s.step for s in logged_steps] == list(range(0, 8, logged))
        pred = new.render()  # the logged norm is a backward through the whole graph
        shared = [p for p in new.context.shared_params if p.requires_grad]
        image = pred.detach().requires_grad_(True)
        terms = TermGradients(pred, image, new.compute_losses(image), shared)
        for name, loss in new.compute_losses(pred).items():
            assert torch.allclose(terms.norm(name), grad_norm(loss, shared), rtol=1e-6)


def test_the_positions_rate_for_a_reference_count_is_scaled_by_the_triangle_size():
    """optim.lr.positions_count: the rate is given for that many triangles; with 4x as many (half
    the side each) it is halved, and a schedule of it is halved the same way."""
    sets = [QUICK[i + 1] for i in range(0, len(QUICK), 2)]
    target = torch.from_numpy(smooth_image(32, 40).astype(np.float32) / 255).permute(2, 0, 1)[None]

    def rates(*extra):
        fitter = Fitter(load_config(None, sets + list(extra)), target, target.mean(dim=(2, 3)))
        fitter.train_step()
        return {g["name"]: g["lr"] for g in fitter.optimizer.param_groups}

    plain = rates("triangles.count=40")
    assert plain["positions"] == 0.01
    scaled = rates("triangles.count=40", "optim.lr.positions_count=10")
    assert scaled["positions"] == pytest.approx(0.005) and scaled["colors"] == plain["colors"]
    scheduled = rates("triangles.count=40", "optim.lr.positions_count=10",
                      "schedules={optim.lr.positions: {type: linear, start_value: 0.004, end_value: 0.0, "
                      "end_step: 10}}")
    assert scheduled["positions"] == pytest.approx(0.002)
