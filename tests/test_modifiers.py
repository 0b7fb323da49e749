"""Loss modifiers: each against its formula on a small tensor, and the pipeline in the loop."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from triangulate_ai.cli import main
from triangulate_ai.config import ModifiersConfig
from triangulate_ai.loss.modifiers.edge import EdgeConfig
from triangulate_ai.loss.modifiers.entropy import EntropyConfig
from triangulate_ai.loss.modifiers.mask_ratio import MaskRatioConfig
from triangulate_ai.loss.modifiers.target_smoothing import TargetSmoothingConfig
from triangulate_ai.config import load_config
from triangulate_ai.loop import Fitter
from triangulate_ai.loss.modifiers import build_pipeline
from triangulate_ai.loss.modifiers.edge import EdgeWeight
from triangulate_ai.loss.modifiers.entropy import EntropyWeight
from triangulate_ai.loss.modifiers.mask_ratio import MaskRatioWeight
from triangulate_ai.loss.modifiers.target_smoothing import TargetSmoothing
from triangulate_ai.loss.terms import L1

from .conftest import QUICK, smooth_image


def test_mask_ratio_weight_by_hand():
    per_pixel = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # (2, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    cfg = MaskRatioConfig(enabled=True, power=0.5, min_weight=0.1, max_weight=1.5, eps=1e-8)
    out = MaskRatioWeight(cfg).modify(per_pixel, None, None, mask).mean()
    # image 0: masked mean 1.0, ratio 1/4, weight clamp(4^0.5 = 2, max 1.5) = 1.5
    # image 1: masked mean 1.0, ratio 1, weight 1
    assert out.item() == pytest.approx((1.0 * 1.5 + 1.0 * 1.0) / 2, rel=1e-6)


def test_edge_weight_by_hand():
    target = torch.zeros(1, 3, 3, 4)
    target[..., 2:] = 1.0  # a vertical edge between columns 1 and 2
    modifier = EdgeWeight(EdgeConfig(enabled=True, strength=2.0))
    weights = modifier.modify(torch.ones(1, 1, 3, 4), None, target, None)[0, 0]
    # Sobel x magnitude on luminance 1 (replicate padding): 4 at columns 1 and 2, 0 elsewhere
    raw = torch.tensor([1.0, 3.0, 3.0, 1.0]).expand(3, 4)  # 1 + 2 * (magnitude / max)
    assert torch.allclose(weights, raw / raw.mean())


def test_entropy_weight_by_hand():
    per_pixel = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[4.0, 0.0], [0.0, 0.0]]]])
    cfg = EntropyConfig(enabled=True, weight=2.0, threshold=0.25, normalized=True)
    modifier = EntropyWeight(cfg)
    out = modifier.modify(per_pixel, None, None, None)
    # image 0: uniform over 4 pixels, H = log 4, normalised 1; image 1: all in one pixel, H = 0 -> 0.25;
    # each image is weighted by its own entropy (scenes of a batch are independent)
    expected = torch.tensor([1.0 * 2.0, 0.25 * 2.0])
    assert torch.allclose(out, per_pixel * expected[:, None, None, None])
    assert modifier.metrics["entropy_weight"].tolist() == pytest.approx(expected.tolist())
    assert modifier.metrics["entropy"].tolist() == pytest.approx([1.0, 0.0])
    raw = EntropyWeight(EntropyConfig(enabled=True, normalized=False)).modify(per_pixel[:1], None, None, None)
    assert torch.allclose(raw, per_pixel[:1] * math.log(4))


def test_target_smoothing_is_a_gaussian_blur_and_zero_sigma_is_identity():
    target = torch.zeros(1, 3, 9, 9)
    target[..., 4, 4] = 1.0
    modifier = TargetSmoothing(TargetSmoothingConfig(enabled=True, sigma=1.0))
    blurred = modifier.prepare_target(target, 0)[0, 0]
    g = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    g = g / g.sum()
    assert torch.allclose(blurred[1:8, 1:8], torch.outer(g, g), atol=1e-6)
    modifier.sigma = 0.0
    assert modifier.prepare_target(target, 0) is target


def _fitter(*sets):
    cfg = load_config(None, [QUICK[i + 1] for i in range(0, len(QUICK), 2)] + list(sets))
    target = torch.from_numpy(smooth_image(32, 40).astype(np.float32) / 255).permute(2, 0, 1)[None]
    mask = torch.ones(1, 1, 32, 40)
    mask[..., :, :10] = 0
    return Fitter(cfg, target, target.mean(dim=(2, 3)), mask)


def test_pipeline_off_is_identical_to_no_pipeline():
    assert not build_pipeline(ModifiersConfig()).active
    plain, piped = _fitter(), _fitter()
    assert not piped.modifiers.active
    for _ in range(5):
        a, b = plain.train_step(), piped.train_step()
        assert a.losses == b.losses and a.modifier_metrics == {}
    assert torch.equal(plain.triangles.positions, piped.triangles.positions)


def test_pipeline_in_the_loop_in_order_with_metrics_and_a_switch():
    fitter = _fitter("modifiers.mask_ratio.enabled=true", "modifiers.edge.enabled=true",
                     "modifiers.entropy.enabled=true", "modifiers.target_smoothing.enabled=true",
                     "schedules={modifiers.target_smoothing.sigma: {type: linear, start_value: 2, end_value: 0,"
                     " end_step: 4}}")
    assert fitter.modifiers.names() == ["TargetSmoothing", "MaskRatioWeight", "EdgeWeight", "EntropyWeight"]
    result = fitter.train_step()
    assert result.modifier_metrics["loss_modifiers/TargetSmoothing.sigma"] == [2.0]  # one value per scene
    assert "loss_modifiers/EntropyWeight.entropy_weight" in result.modifier_metrics
    assert result.modifier_metrics["loss_modifiers/MaskRatioWeight.mask_ratio"] == pytest.approx([30 / 40])
    with torch.no_grad():
        pred = fitter.render()
        with fitter.modifiers.disabled():
            raw = fitter.compute_losses(pred)["l1"]
        modified = fitter.compute_losses(pred)["l1"]
    assert raw.item() == pytest.approx(L1()(pred, fitter.target, fitter.mask).item())
    assert modified.item() != pytest.approx(raw.item())
    for _ in range(4):
        result = fitter.train_step()
    assert result.modifier_metrics["loss_modifiers/TargetSmoothing.sigma"] == [0.0]


def test_cli_lists_modifiers_and_takes_a_mask_file(image_path, tmp_path, capsys):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "optim.iterations=5",
                 "--set", "modifiers.mask_ratio.enabled=true",
                 "--set", f"modifiers.mask_ratio.mask_file={tmp_path / 'mask.png'}",
                 "--set", "modifiers.entropy.enabled=true", "--set", "log.every=1"]) == 0
    assert "Enabled loss modifiers: MaskRatioWeight, EntropyWeight" in capsys.readouterr().out
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["loss_modifiers/MaskRatioWeight.mask_ratio"] == pytest.approx(0.5, abs=0.02)
    summary = json.loads((out / "summary.json").read_text())
    assert "l1" in summary["final_losses_unmodified"]
