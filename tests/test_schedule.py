"""Schedules, the triangle regulariser, and every balancer's config end to end and resumed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from triangulate_ai.cli import main
from triangulate_ai.config import RegularizerConfig, ScheduleConfig, load_config
from triangulate_ai.errors import UserError
from triangulate_ai.loop import Fitter
from triangulate_ai.metrics import Evaluator
from triangulate_ai.regularizer import TriangleRegularizer
from triangulate_ai.run import RunRecorder
from triangulate_ai.schedule import schedule_value

from .conftest import QUICK, smooth_image

CONFIGS = Path(__file__).parent.parent / "configs"
METHODS = ["fixed", "scale_norm", "geometric_mean", "uncertainty", "gradnorm", "cov", "dynamic", "dwa", "hybrid"]
OFFLINE = ["--set", "loss.terms.vgg.weights=random", "--set", "loss.terms.lpips.weights=random",
           "--set", "loss.terms.vgg.layers=[relu1_2, relu2_2]", "--set", "loss.terms.lpips.net=alex"]


def test_piecewise_boundaries_as_in_the_staged_seed():
    cfg = ScheduleConfig(type="piecewise", milestones=[50, 150], values=[0.1, 0.01, 0.001])
    assert [schedule_value(cfg, s) for s in (0, 49, 50, 149, 150, 10_000)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


@pytest.mark.parametrize("kind, middle", [("linear", 1.25), ("cosine", 1.25), ("exponential", math.sqrt(0.5 * 2.0))])
def test_interpolating_schedules_at_their_ends_and_middle(kind, middle):
    cfg = ScheduleConfig(type=kind, start_value=0.5, end_value=2.0, start_step=10, end_step=30)
    assert schedule_value(cfg, 0) == pytest.approx(0.5) and schedule_value(cfg, 10) == pytest.approx(0.5)
    assert schedule_value(cfg, 20) == pytest.approx(middle)
    assert schedule_value(cfg, 30) == pytest.approx(2.0) and schedule_value(cfg, 99) == pytest.approx(2.0)
    if kind == "cosine":
        assert schedule_value(cfg, 15) == pytest.approx(0.5 + 1.5 * (1 - math.cos(math.pi / 4)) / 2)


@pytest.mark.parametrize("spec, message", [
    ("{type: piecewise, milestones: [5], values: [1.0]}", "one more value than milestones"),
    ("{type: piecewise, milestones: [5, 2], values: [1.0, 2.0, 3.0]}", "increasing milestones"),
    ("{type: linear, start_value: 1.0, end_value: 2.0}", "needs start_value, end_value and end_step"),
    ("{type: exponential, start_value: 0.0, end_value: 2.0, end_step: 5}", "> 0"),
])
def test_bad_schedules_are_refused(spec, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [f"schedules={{render.sigma: {spec}}}"])


def _fitter(*sets):
    cfg = load_config(None, [QUICK[i + 1] for i in range(0, len(QUICK), 2)] + list(sets))
    target = torch.from_numpy(smooth_image(32, 40).astype(np.float32) / 255).permute(2, 0, 1)[None]
    return Fitter(cfg, target, target.mean(dim=(2, 3))), target


def test_scheduled_values_reach_the_live_objects_and_the_log(tmp_path):
    fitter, _ = _fitter("loss.type=geometric_mean", "optim.iterations=8",
                        "schedules={loss.regularization_weight: {type: piecewise, milestones: [3],"
                        " values: [0.5, 0.05]},"
                        " render.sigma: {type: linear, start_value: 0.6, end_value: 0.2, end_step: 4},"
                        " optim.lr.colors: {type: exponential, start_value: 0.1, end_value: 0.001, end_step: 2}}")
    seen = []

    class Watch:
        def on_step(self, fitter, result):
            seen.append((fitter.balancer.regularization_weight, fitter.renderer.sigma, result.scheduled))

    fitter.run([Watch()])
    assert [s[0] for s in seen] == [0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.05, 0.05]
    assert [s[1] for s in seen][:5] == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2])
    groups = {g["name"]: g["lr"] for g in fitter.optimizer.param_groups}
    assert groups["colors"] == pytest.approx(0.001)
    assert seen[1][2]["optim.lr.colors"] == pytest.approx(0.01)


def test_a_path_that_cannot_change_during_a_fit_is_refused():
    with pytest.raises(UserError, match="'triangles.count' cannot be scheduled"):
        _fitter("schedules={triangles.count: {type: linear, start_value: 1, end_value: 2, end_step: 3}}")
    with pytest.raises(UserError, match="'loss.alpha' cannot be scheduled"):
        _fitter("schedules={loss.alpha: {type: linear, start_value: 1, end_value: 2, end_step: 3}}")


def test_regulariser_terms_match_their_formulas():
    reg = TriangleRegularizer(RegularizerConfig(weight=1.0, min_area=2.0, min_quality=0.5, margin=0.1))
    h = math.sqrt(3) / 2
    big = torch.tensor([[[[0.1, 0.1], [0.9, 0.1], [0.5, 0.1 + 0.8 * h]]]], dtype=torch.float64)  # equilateral
    assert reg(big, 10, 10).item() == pytest.approx(0.0, abs=1e-12)
    # a 1x1-pixel right triangle: area 0.5 px^2, edges^2 = 1 + 1 + 2 = 4, q = 4 sqrt(3) * 0.5 / 4
    small = torch.tensor([[[[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]]]], dtype=torch.float64)
    q = 4 * math.sqrt(3) * 0.5 / 4
    expected = (1 - 0.5 / 2.0) ** 2 + max(0.0, 1 - q / 0.5) ** 2
    assert reg(small, 10, 10).item() == pytest.approx(expected)
    outside = big.clone()
    outside[..., 0, 0] = 1.5  # 0.4 beyond the grown canvas edge at 1.1
    only_outside = reg(outside, 10, 10).item() - _shape_part(reg, outside)
    assert only_outside == pytest.approx(0.4**2 / 3)


def _shape_part(reg, verts):
    """The area and thinness part alone (margin so large nothing is outside)."""
    wide = TriangleRegularizer(RegularizerConfig(weight=1.0, min_area=reg.min_area, min_quality=reg.min_quality,
                                                 margin=100.0))
    return wide(verts, 10, 10).item()


def test_regulariser_enters_the_total_outside_the_balancer():
    fitter, _ = _fitter("regularizer.weight=0.5", "optim.iterations=1")
    result = fitter.train_step()
    assert result.regularizer is not None and result.regularizer[0] > 0
    assert result.total[0] == pytest.approx(result.losses["l1"][0] + 0.5 * result.regularizer[0], rel=1e-5)
    assert result.weights == {"l1": [1.0]}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_from_its_config_file(method, image_path, tmp_path):
    out = tmp_path / method
    args = ["--config", str(CONFIGS / f"{method}.yaml"), "--image", str(image_path), "--out", str(out), *QUICK,
            *OFFLINE, "--set", "optim.iterations=6", "--set", "log.every=1"]
    if method == "dynamic":
        args += ["--set", "loss.baseline_iterations=50"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "total" in r]
    assert len(train) == 6
    for term in ("l1", "vgg", "lpips"):
        assert all(f"weight/{term}" in r and f"loss/{term}" in r for r in train)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final_loss_weights"]) >= {"l1", "vgg", "lpips"} and summary["completed"]


def test_staged_config_runs_and_logs_its_schedules(image_path, tmp_path):
    out = tmp_path / "staged"
    assert main(["--config", str(CONFIGS / "staged.yaml"), "--image", str(image_path), "--out", str(out), *QUICK,
                 *OFFLINE, "--set", "optim.iterations=6", "--set", "log.every=1"]) == 0
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["schedule/loss.regularization_weight"] == 0.1 and first["schedule/render.sigma"] == 0.5
    assert "regularizer" in first


@pytest.mark.parametrize("method", METHODS)
def test_resume_with_each_balancer_matches_an_uninterrupted_run(method, tmp_path):
    sets = [f"loss.type={method}", "loss.terms.vgg={weights: random, layers: [relu1_2], weight: 0.1}",
            "optim.iterations=24", "checkpoint.every=8", "eval.lpips=null"]
    crash_at, resumed_at = 19, 16
    if method == "dynamic":  # past its shortest baseline (50 steps), so the multipliers move
        sets += ["loss.baseline_iterations=50", "loss.adaptation_threshold=0.01", "optim.iterations=64"]
        crash_at, resumed_at = 59, 56
    if method == "dwa":
        sets += ["loss.window=2"]

    def make(folder):
        fitter, target = _fitter(*sets)
        folder.mkdir(exist_ok=True)
        target_np = target[0].permute(1, 2, 0).numpy()
        return fitter, RunRecorder(folder, fitter, Evaluator(target_np, None, torch.device("cpu")))

    full, rec = make(tmp_path / "full")
    full.run([rec])

    class Crash:
        def on_step(self, fitter, result):
            if result.step == crash_at:
                raise RuntimeError("crash")

    cut, rec_cut = make(tmp_path / "cut")
    with pytest.raises(RuntimeError):
        cut.run([rec_cut, Crash()])
    again, rec_again = make(tmp_path / "cut")
    rec_again.resume(again)
    assert again.step == resumed_at
    again.run([rec_again])
    if method == "dynamic":
        assert again.balancer.get_monitoring_stats()["adaptation_count"] > 0
    for a, b in zip(full.triangles.parameters(), again.triangles.parameters()):
        assert torch.equal(a, b), method
    assert _same(full.balancer.state_dict(), again.balancer.state_dict()), method


def _same(a, b) -> bool:
    """Deep equality of nested state (dicts, lists, tensors, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
