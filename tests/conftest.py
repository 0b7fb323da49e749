"""Shared fixtures: small synthetic images and a quick config."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

# Without CUDA the Triton backend's kernels run in Triton's interpreter, and triton decides
# between interpreter and compiler when it is first imported (torch imports it early, from
# torch.optim onwards), so the switch is set here, before any test module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def smooth_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 test picture with structure a few triangles can fit: blocks and a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([xx, yy, 1 - xx], axis=-1) * 0.5
    for _ in range(4):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        img[y0:y0 + height // 3, x0:x0 + width // 3] = rng.random(3)
    return (img * 255).astype(np.uint8)


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "target.png"
    Image.fromarray(smooth_image()).save(path)
    return path


QUICK = [
    "--set", "triangles.count=40",
    "--set", "triangles.size=0.25",
    "--set", "optim.iterations=40",
    "--set", "optim.lr.positions=0.01",
    "--set", "log.every=5",
    "--set", "log.gif_every=5",
    "--set", "checkpoint.every=10",
    "--set", "log.progress_bar=false",
    "--set", "eval.lpips.weights=random",
    "--set", "eval.every=20",
]


def quick_fitter(*extra: str, height: int = 32, width: int = 40, batch: int = 1):
    """A Fitter with the QUICK settings (and `extra` dotted overrides) on `batch` copies of a
    smooth_image, and that image as (H, W, 3) floats."""
    from triangulate_ai.config import load_config
    from triangulate_ai.loop import Fitter

    cfg = load_config(None, [QUICK[i + 1] for i in range(0, len(QUICK), 2)] + list(extra))
    target_np = smooth_image(height, width).astype(np.float32) / 255
    target = torch.from_numpy(target_np).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1)
    return Fitter(cfg, target, target.mean(dim=(2, 3))), target_np
