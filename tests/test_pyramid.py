"""render.scale: steps at a share of the image's resolution (a pyramid when scheduled)."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch

from triangulate_ai.errors import UserError
from triangulate_ai.metrics import Evaluator
from triangulate_ai.progress import ProgressBar
from triangulate_ai.run import METRICS, RunRecorder

from .conftest import quick_fitter as _fitter

PYRAMID = "schedules={render.scale: {type: piecewise, milestones: [10, 20], values: [0.25, 0.5, 1.0]}}"


def test_a_step_at_half_scale_renders_and_scores_at_half_the_size():
    fitter, _ = _fitter("render.scale=0.5")
    with torch.no_grad():
        expected = fitter.renderer(fitter.triangles.scene(), 16, 20)  # the parameters before the step
    result = fitter.train_step()
    assert result.render.shape[-2:] == (16, 20) and result.target.shape[-2:] == (16, 20)
    # the target is the mean of each 2x2 block of the image's pixels
    blocks = fitter.target.reshape(1, 3, 16, 2, 20, 2).mean(dim=(3, 5))
    torch.testing.assert_close(result.target, blocks)
    # the loss is the configured term on the small render against the small target
    torch.testing.assert_close(result.render, expected)
    l1 = (expected - blocks).abs().mean().item()
    assert result.losses["l1"][0] == pytest.approx(l1, rel=1e-5)


def test_odd_sizes_round_and_never_vanish():
    fitter, _ = _fitter("render.scale=0.01", height=33, width=47)
    assert fitter.working_size() == (1, 1)
    fitter.scale = 0.5
    assert fitter.working_size() == (16, 24)  # round(16.5) is 16 (to even), round(23.5) is 24
    assert fitter.train_step().render.shape[-2:] == (16, 24)


def test_a_scheduled_pyramid_moves_up_to_the_image_size(tmp_path):
    fitter, target_np = _fitter(PYRAMID)
    recorder = RunRecorder(tmp_path, fitter, Evaluator(target_np, None, torch.device("cpu")))
    sizes = []

    class Sizes:
        def on_step(self, fitter, result):
            sizes.append(tuple(result.render.shape[-2:]))

    fitter.run([recorder, Sizes()])
    recorder.finish(fitter, completed=True, device=torch.device("cpu"))
    assert sizes == [(8, 10)] * 10 + [(16, 20)] * 10 + [(32, 40)] * 20
    lines = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    scales = [r["schedule/render.scale"] for r in lines if "schedule/render.scale" in r]
    assert scales[:5] == [0.25, 0.25, 0.5, 0.5, 1.0]
    # the soft PSNR of a coarse step compares it with the target at its own size
    assert all(np.isfinite(r["psnr_soft"]) for r in lines if "psnr_soft" in r)
    # every GIF frame is shown at the image's size, and the export is the image's size
    assert {frame.shape for frame in recorder.frames} == {recorder.frames[-1].shape}
    assert recorder.final_drawing.shape == target_np.shape


def test_the_final_losses_score_the_full_size_render():
    fitter, _ = _fitter("render.scale=0.5")
    render = fitter.render()
    assert render.shape[-2:] == (32, 40)
    l1 = (render - fitter.target).abs().mean().item()
    assert fitter.compute_losses(render)["l1"][0].item() == pytest.approx(l1, rel=1e-5)


def test_a_schedule_outside_zero_to_one_is_refused():
    fitter, _ = _fitter("schedules={render.scale: {type: linear, start_value: 1.0, end_value: 2.0, end_step: 10}}")
    fitter.train_step()
    with pytest.raises(UserError, match="render.scale must be in"):
        for _ in range(5):
            fitter.train_step()


def test_pixel_thresholds_of_respawn_shrink_with_the_scale():
    """min_contribution and min_area are in pixels of the image: at half scale a triangle covers a
    quarter of the pixels, so the same triangles are dead or alive at every scale."""
    sets = ("respawn.enabled=true", "respawn.min_contribution=40", "respawn.every=1", "respawn.until=1.0")
    moved = {}
    for scale in (1.0, 0.5):
        fitter, _ = _fitter(*sets, f"render.scale={scale}", "triangles.count=12")
        size = fitter.working_size()
        moved[scale] = fitter.densifier(fitter.triangles, fitter.optimizer, fitter.renderer, fitter.level(size)[0],
                                        0.0, scale=scale)
    assert moved[1.0] == moved[0.5] and moved[1.0][0] > 0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_a_batch_on_a_terminal(monkeypatch):
    """On a terminal the bar shows the mean total over the scenes and the soft PSNR at the
    step's own resolution (it once formatted the list of totals as a number)."""
    fitter, _ = _fitter("render.scale=0.5", "log.progress_bar=true", batch=2)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = ProgressBar(fitter.cfg, fitter)
    assert not bar.bar.disable
    result = fitter.train_step()
    bar.on_step(fitter, result)
    postfix = bar.bar.postfix
    bar.close()
    assert f"loss={sum(result.total) / 2:.4f}" in postfix and "psnr=" in postfix
