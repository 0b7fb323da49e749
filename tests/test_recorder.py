"""The run recorder evaluates the exported drawing in the background: the loop does not wait for it,
records keep their order and their step's metrics, and a checkpoint written before the start's
evaluation ended still resumes. TensorBoard images of a large picture are bounded."""

from __future__ import annotations

import json
import threading

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import triangulate_ai as tai
from triangulate_ai import run as run_module
from triangulate_ai.cli import main
from triangulate_ai.metrics import Evaluator

from .conftest import QUICK, smooth_image


def _gate(monkeypatch) -> tuple[threading.Event, list[int]]:
    """Evaluations wait for the returned event; the list counts those that ended."""
    gate, ended = threading.Event(), []
    original = Evaluator.__call__

    def gated(self, image):
        assert gate.wait(timeout=120), "the gate was never opened"  # a hang guard, not a time limit
        scores = original(self, image)
        ended.append(1)
        return scores

    monkeypatch.setattr(Evaluator, "__call__", gated)
    return gate, ended


def test_the_loop_steps_on_while_the_drawing_is_evaluated(image_path, tmp_path, monkeypatch):
    gate, ended = _gate(monkeypatch)
    folder = tmp_path / "run"
    cfg = tai.load_config(None, [f"image.path={image_path}", *QUICK[1::2], "checkpoint.every=100", "eval.every=5"])
    seen = {}

    class OpenAtStep8:
        def on_step(self, fitter, result):
            if result.step == 8:
                seen["evaluations_ended"] = len(ended)
                gate.set()

    result = tai.Run(cfg, folder).execute([OpenAtStep8()])
    assert seen["evaluations_ended"] == 0  # steps 0-8 ran while the start's evaluation waited
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    evaluated = [r["step"] for r in records if "eval/psnr" in r]
    assert evaluated == [0, 5, 10, 15, 20, 25, 30, 35, 40]  # every eval.every steps, and the end
    summary = json.loads((folder / "summary.json").read_text())
    assert records[0]["eval/psnr"] == summary["psnr_initial"] and records[-1]["eval/psnr"] == summary["psnr"]
    assert result.metrics == summary


def test_a_checkpoint_taken_before_the_start_was_evaluated_resumes(image_path, tmp_path, monkeypatch):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["--image", str(image_path), "--out", str(whole), *QUICK]) == 0
    gate, _ = _gate(monkeypatch)
    tai.Run(tai.load_config(whole / "config.yaml"), killed)  # set up and "killed" while the evaluation waits
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert state["fitter"]["step"] == 0 and state["recorder"]["initial"] == {}
    gate.set()
    assert main(["--resume", str(killed)]) == 0
    assert (killed / "triangles.json").read_text() == (whole / "triangles.json").read_text()
    first, resumed = (json.loads((f / "summary.json").read_text()) for f in (whole, killed))
    assert resumed["psnr_initial"] == first["psnr_initial"] and resumed["ssim_initial"] == first["ssim_initial"]


def test_an_empty_start_record_is_refused_past_step_0(image_path, tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(folder), *QUICK]) == 0
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    state["recorder"]["initial"] = {}
    torch.save(state, folder / "checkpoint.pt")
    capsys.readouterr()
    assert main(["--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.pt" in err and "initial" in err


def test_tensorboard_images_of_a_wide_picture_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "BOARD_MAX_SIDE", 48)
    path = tmp_path / "wide.png"
    Image.fromarray(smooth_image(20, 120)).save(path)
    folder = tmp_path / "run"
    assert main(["--image", str(path), "--out", str(folder), *QUICK, "--set", "optim.iterations=2",
                 "--set", "log.tensorboard.image_every=1", "--set", "eval.lpips=null"]) == 0
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("images/render", "images/abs_error"):
        shapes = {(image.height, image.width) for image in events.Images(tag)}
        assert shapes == {(8, 48)}, shapes
    drawn = np.asarray(Image.open(folder / "final.png"))
    assert drawn.shape == (20, 120, 3)  # the exports keep the image's size
