"""Image-quality metrics. Live PSNR is a one-liner on tensors; the reported PSNR and SSIM
come from scikit-image on the final pictures."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr_torch(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for images in [0, 1] (data range 1), for progress display and logs."""
    mse = torch.mean((pred.detach() - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def image_quality(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of (H, W, 3) float images in [0, 1], as scikit-image computes them."""
    pred = np.clip(pred, 0, 1).astype(np.float64)
    target = np.clip(target, 0, 1).astype(np.float64)
    return {
        "psnr": float(peak_signal_noise_ratio(target, pred, data_range=1.0)),
        "ssim": float(structural_similarity(target, pred, data_range=1.0, channel_axis=-1)),
    }


def flat_mean_psnr(target: torch.Tensor) -> float:
    """PSNR of the flat mean-colour image of each target: the floor any fit must clear."""
    return psnr_torch(target.mean(dim=(2, 3), keepdim=True).expand_as(target), target)
