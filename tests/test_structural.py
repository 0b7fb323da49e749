"""Structural terms: SSIM against scikit-image, MS-SSIM from its definition, per scene, gradients
against finite differences, and images too small for the window refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from triangulate_ai.cli import main
from triangulate_ai.loss.structural import MS_WEIGHTS, MSSSIM, SSIM, scales_for, ssim_parts, gaussian_window

from .conftest import QUICK, smooth_image


def _pair(height: int = 48, width: int = 40, seed: int = 0, dtype=torch.float64):
    target = torch.from_numpy(smooth_image(height, width, seed)).permute(2, 0, 1)[None].to(dtype) / 255
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return (target + 0.08 * noise).clamp(0, 1), target


def _skimage_ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return structural_similarity(target[0].permute(1, 2, 0).numpy(), pred[0].permute(1, 2, 0).numpy(),
                                 data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)


@pytest.mark.parametrize("size", [(48, 40), (11, 23), (64, 64)])
def test_ssim_is_scikit_images(size):
    pred, target = _pair(*size)
    ours = 1 - SSIM()(pred.float(), target.float())
    assert abs(float(ours) - _skimage_ssim(pred, target)) <= 1e-4


def test_each_scene_scores_alone_and_a_perfect_match_is_zero():
    pairs = [_pair(seed=s) for s in range(3)]
    pred, target = torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])
    for term in (SSIM(), MSSSIM()):
        batch = term(pred, target)
        alone = torch.cat([term(p, t) for p, t in pairs])
        assert torch.allclose(batch, alone, atol=1e-12) and batch.shape == (3,)
        assert torch.allclose(term(target, target), torch.zeros(3, dtype=target.dtype), atol=1e-12)


def test_ms_ssim_follows_its_definition_at_the_scales_the_image_holds():
    assert [scales_for(side, side, 11) for side in (10, 11, 21, 22, 44, 88, 176, 1000)] == [0, 1, 1, 2, 3, 4, 5, 5]
    pred, target = _pair(96, 100)  # room for 4 scales: 96 / 8 = 12 >= 11
    window, weights = gaussian_window(11, 1.5), torch.tensor(MS_WEIGHTS[:4], dtype=torch.float64)
    weights = weights / weights.sum()
    expected, x, y = torch.ones(3, dtype=torch.float64), pred, target
    for scale in range(4):
        luminance, contrast = ssim_parts(x, y, window)
        term = contrast if scale < 3 else luminance * contrast
        expected = expected * term.flatten(2).mean(dim=2)[0] ** weights[scale]
        x, y = (torch.nn.functional.avg_pool2d(v, 2, ceil_mode=True) for v in (x, y))
    assert torch.allclose(1 - MSSSIM()(pred, target), expected.mean(), atol=1e-12)
    one_scale = MSSSIM(scales=1)(pred, target)  # one scale: SSIM itself
    assert torch.allclose(one_scale, SSIM()(pred, target), atol=1e-12)


@pytest.mark.parametrize("term", [SSIM(), MSSSIM()], ids=["ssim", "ms_ssim"])
def test_gradients_match_finite_differences(term):
    pred, target = _pair(24, 26)  # two scales for MS-SSIM
    pred = pred.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(term(pred, target).sum(), pred)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):  # directional derivatives along random directions, central differences
        direction = torch.randn(pred.shape, generator=generator, dtype=pred.dtype)
        with torch.no_grad():
            step = 1e-6
            numeric = (term(pred + step * direction, target) - term(pred - step * direction, target)) / (2 * step)
        assert float(numeric) == pytest.approx(float((grad * direction).sum()), rel=1e-5, abs=1e-8)


def test_masked_ssim_scores_the_valid_pixels_only():
    pred, target = _pair()
    mask = torch.zeros(1, 1, 48, 40, dtype=torch.float64)
    mask[..., :, :20] = 1
    changed = pred.clone()
    changed[..., :, 30:] = 0  # far outside the mask's window reach
    assert torch.allclose(SSIM()(pred, target, mask), SSIM()(changed, target, mask))
    assert not torch.allclose(SSIM()(pred, target), SSIM()(changed, target))


@pytest.mark.parametrize("term", ["ssim", "ms_ssim"])
def test_an_image_smaller_than_the_window_is_one_line(term, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(smooth_image(8, 8)).save(tmp_path / "tiny.png")
    out = tmp_path / "run"
    assert main(["--image", str(tmp_path / "tiny.png"), "--out", str(out), *QUICK,
                 "--set", f"loss.terms.{term}={{}}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"loss term '{term}' cannot score a 8x8 image" in err[0] and "11x11" in err[0], err
    assert not out.exists()


def test_a_fit_runs_on_l1_plus_d_ssim_plus_ms_ssim(image_path, tmp_path):
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "optim.iterations=5",
                 "--set", "loss.terms.ssim={weight: 0.2}", "--set", "loss.terms.ms_ssim={}"]) == 0
    import json

    final = json.loads((out / "summary.json").read_text())["final_losses"]
    assert set(final) == {"l1", "ssim", "ms_ssim"} and all(np.isfinite(v) for v in final.values())


def test_masked_ms_ssim_ignores_the_pixels_outside_the_mask():
    pred, target = _pair(48, 48)
    mask = torch.zeros(1, 1, 48, 48, dtype=torch.float64)
    mask[..., :, :24] = 1
    changed = pred.clone()
    changed[..., :, 24:] = 1 - changed[..., :, 24:]
    assert torch.allclose(MSSSIM()(pred, target, mask), MSSSIM()(changed, target, mask))
    assert not torch.allclose(MSSSIM()(pred, target), MSSSIM()(changed, target))
