"""Image-quality metrics. Live PSNR is a one-liner on tensors; the reported PSNR and SSIM come
from scikit-image and LPIPS from the lpips package, on the final pictures."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import downscale_local_mean

from .loss.perceptual import LpipsConfig
from .errors import UserError
from .loss.perceptual import lpips_network

LPIPS_SETTING = "eval.lpips.weights"


def psnr_torch(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB for images in [0, 1] (data range 1), for progress display and logs."""
    mse = torch.mean((pred.detach() - target) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def flat_mean_psnr(target: torch.Tensor) -> float:
    """PSNR of the flat mean-colour image of each target: the floor any fit must clear."""
    return psnr_torch(target.mean(dim=(2, 3), keepdim=True).expand_as(target), target)


COLOUR_BLOCK = 8  # colour shift is measured on 8x-downsampled images: colour, not structure


def colour_shift(pred: np.ndarray, target: np.ndarray, block: int = COLOUR_BLOCK) -> float:
    """Mean CIEDE2000 colour difference between the `block`x block-averaged images (scikit-image's
    rgb2lab and deltaE_ciede2000; about 1 is a just-noticeable difference): how far the colours
    drifted, whatever the structure does. A structure-only loss can keep PSNR near its usual
    value and still shift every colour; this number shows it."""
    by, bx = min(block, pred.shape[0]), min(block, pred.shape[1])
    height, width = pred.shape[0] // by * by, pred.shape[1] // bx * bx  # whole blocks only: no zero padding
    small = [downscale_local_mean(np.clip(image[:height, :width], 0, 1).astype(np.float64), (by, bx, 1))
             for image in (pred, target)]
    return float(deltaE_ciede2000(rgb2lab(small[1]), rgb2lab(small[0])).mean())


def image_quality(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of (H, W, 3) float images in [0, 1], as scikit-image computes them, and the
    colour shift (colour_shift)."""
    pred = np.clip(pred, 0, 1).astype(np.float64)
    target = np.clip(target, 0, 1).astype(np.float64)
    with np.errstate(divide="ignore"):  # an exact copy: PSNR is infinite, not a warning
        psnr = float(peak_signal_noise_ratio(target, pred, data_range=1.0))
    return {
        "psnr": psnr,
        "ssim": float(structural_similarity(target, pred, data_range=1.0, channel_axis=-1)),
        "colour_shift": colour_shift(pred, target),
    }


class Evaluator:
    """PSNR, SSIM and (if configured) LPIPS of pictures against one fixed target.

    LPIPS with a random backbone still runs, but `lpips_meaningful` is False so reports can
    say that its values mean nothing."""

    def __init__(self, target: np.ndarray, lpips_cfg: LpipsConfig | None, device: torch.device) -> None:
        self.target = target
        self.lpips_net = None if lpips_cfg is None else lpips_network(lpips_cfg, LPIPS_SETTING, device, torch.float32)
        self.lpips_meaningful = lpips_cfg is not None and lpips_cfg.weights != "random"
        self.device = device
        self._target_tensor = self._tensor(target)
        try:
            if self.lpips_net is not None:
                self._lpips(target)
        except RuntimeError as exc:
            height, width = target.shape[:2]
            raise UserError(f"the LPIPS metric ({lpips_cfg.net}) cannot score a {width}x{height} image "
                            f"({' '.join(str(exc).split())}); use a larger image or eval.lpips=null") from None

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None].to(self.device)

    def _lpips(self, image: np.ndarray) -> float:
        with torch.no_grad():
            return float(self.lpips_net(self._tensor(np.clip(image, 0, 1)), self._target_tensor, normalize=True).mean())

    def __call__(self, image: np.ndarray) -> dict[str, float]:
        scores = image_quality(image, self.target)
        if self.lpips_net is not None:
            scores["lpips"] = self._lpips(image)
        return scores
