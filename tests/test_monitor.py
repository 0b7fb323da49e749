"""Monitoring: TensorBoard tags, metrics.jsonl, warning signs, NaN stops, banner and table."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from triangulate_ai.cli import main
from triangulate_ai.config import WarningsConfig
from triangulate_ai.loss.terms import L1
from triangulate_ai.monitor import WarningMonitor

from .conftest import QUICK


def _tags(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags()["images"])


def test_tensorboard_and_metrics_carry_the_expected_tags(image_path, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--image", str(image_path), "--out", str(out), *QUICK, "--set", "optim.iterations=60",
            "--set", "loss.type=dynamic", "--set", "loss.baseline_iterations=50",
            "--set", "loss.terms.vgg={weights: random, layers: [relu1_2], weight: 0.1}",
            "--set", "regularizer.weight=0.01", "--set", "log.grad_norm_every=20",
            "--set", "log.tensorboard.log_freq=5", "--set", "log.tensorboard.image_every=20",
            "--set", "schedules={render.sigma: {type: linear, start_value: 0.5, end_value: 0.3, end_step: 60}}"]
    assert main(args) == 0
    scalars, images = _tags(out / "tensorboard")
    expected = {"loss/l1", "loss/vgg", "log_loss/l1", "log_loss/vgg", "total", "regularizer", "psnr_soft",
                "schedule/render.sigma", "loss_weights/train/l1", "loss_weights/train/vgg",
                "loss_weights/eval/l1", "loss_weights/eval/vgg", "dynamic_weight_l1", "dynamic_weight_vgg",
                "grad_norm/l1", "grad_norm/vgg", "eval/psnr", "eval/ssim", "eval/lpips"}
    assert expected <= scalars, expected - scalars
    assert {"images/render", "images/abs_error"} <= images
    keys = set()
    for line in (out / "metrics.jsonl").read_text().splitlines():
        keys |= set(json.loads(line))
    jsonl_expected = {k.replace("loss_weights/train/", "weight/") for k in expected
                      if not k.startswith(("loss_weights/eval", "dynamic_weight"))}
    assert jsonl_expected | {"weight/multiplier/l1"} <= keys
    printed = capsys.readouterr().out
    assert "balancer    dynamic" in printed and "final (SVG)" in printed


def test_tensorboard_options_prefix_and_switches(image_path, tmp_path):
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "optim.iterations=10",
                 "--set", "log.tensorboard.prefix=exp1/", "--set", "log.tensorboard.log_eval=false"]) == 0
    scalars, _ = _tags(out / "tensorboard")
    assert "exp1/loss/l1" in scalars and "exp1/loss_weights/train/l1" in scalars
    assert not any("eval" in tag for tag in scalars)
    off = tmp_path / "off"
    assert main(["--image", str(image_path), "--out", str(off), *QUICK, "--set", "optim.iterations=3",
                 "--set", "log.tensorboard.enabled=false"]) == 0
    assert not (off / "tensorboard").exists()


def _record(step, total, l1=0.2, vgg=0.3, w1=1.0, w2=1.0, **extra):
    return {"step": step, "total": total, "loss/l1": l1, "loss/vgg": vgg, "weight/l1": w1, "weight/vgg": w2, **extra}


def _monitor(**cfg):
    return WarningMonitor(WarningsConfig(**cfg), ["l1", "vgg"], target_variance=0.05)


def _kinds(monitor):
    return [w["kind"] for w in monitor.warnings]


def test_healthy_run_raises_no_warning():
    monitor = _monitor(collapse_after=0)
    for step in range(100):
        decay = 0.99**step
        monitor.check(_record(step, 0.5 * decay, l1=0.2 * decay, vgg=0.3 * decay, w1=1.0 + 0.001 * step), 0.04)
    assert monitor.warnings == []


@pytest.mark.parametrize("kind, records, variance", [
    ("weight_extreme", [_record(0, 1.0, w1=1e-9)], None),
    ("weight_extreme", [_record(0, 1.0, w2=1e6)], None),
    ("weights_oscillating", [_record(s, 1.0 - 0.001 * s, w1=1.0 + 0.5 * (-1) ** s) for s in range(12)], None),
    ("term_dominating", [_record(0, 1.0, l1=0.01, vgg=50.0)], None),
    ("log_loss_to_minus_infinity", [_record(0, 1.0, l1=1e-9)], None),
    ("regularizer_dominating", [_record(0, 1.0, regularizer=100.0, regularizer_weight=0.1)], None),
    ("total_jump", [_record(s, 1.0 - 0.01 * s) for s in range(8)] + [_record(8, 5.0)], None),
    ("flat_collapse", [_record(60, 1.0)], 0.001),
])
def test_each_warning_fires_once_on_a_crafted_sequence(kind, records, variance):
    monitor = _monitor()
    for record in records + [dict(records[-1], step=records[-1]["step"] + 1)]:
        monitor.check(record, variance)
    assert _kinds(monitor).count(kind) == 1, monitor.warnings
    warning = next(w for w in monitor.warnings if w["kind"] == kind)
    assert records[0]["step"] <= warning["step"] <= records[-1]["step"] and warning["message"]


def test_nan_at_step_k_stops_with_message_outputs_and_a_good_checkpoint(image_path, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = L1.__call__

    def poisoned(self, pred, target, mask=None):
        calls["n"] += 1
        value = original(self, pred, target, mask)
        return value * float("nan") if calls["n"] == 2 + 13 else value  # call 1 checks the term before step 0

    monkeypatch.setattr(L1, "__call__", poisoned)
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK]) == 1
    err = capsys.readouterr().err
    assert "error: loss term 'l1' became nan at step 13" in err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["fitter"]["step"] == 13
    assert all(torch.isfinite(t).all() for t in state["fitter"]["triangles"].values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"].startswith("loss term 'l1' became nan at step 13") and not summary["completed"]
    assert (out / "final.png").is_file() and (out / "triangles.svg").is_file()
