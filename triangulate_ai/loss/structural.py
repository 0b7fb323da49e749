"""Structural loss terms: D-SSIM (1 - SSIM) and 1 - MS-SSIM, the objectives 3D Gaussian Splatting,
Triangle Splatting and Image-GS pair with L1, and that need no pretrained network.

SSIM as Wang et al. (2004) define it and scikit-image computes it with `gaussian_weights=True`:
a Gaussian window (11 px, sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, population statistics,
averaged over the positions where the window fits (scikit-image crops the same border) and over
the channels. MS-SSIM as Wang, Simoncelli and Bovik (2003): the contrast-structure term at each
of M scales (2x average pooling between them), the luminance term at the coarsest, the published
weights; M is as many scales as the image has room for (its shorter side halved M - 1 times still
holds a window), the weights cut to M and renormalised (a partial 2x2 window at an odd border averages what it covers).
pytorch-msssim computes the same values on images whose sides halve evenly (it pads odd sides with
zeros counted in the mean), but refuses images under 161 px whatever the number of scales, and
gives no per-pixel map.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator
from torch.nn import functional as F

from .terms import LossTerm, TermConfig, masked_mean

K1, K2 = 0.01, 0.03
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """(size,) normalised 1-D Gaussian."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter(images: torch.Tensor, window: torch.Tensor, pad: bool) -> torch.Tensor:
    """Separable Gaussian filter of (B, C, H, W), per channel; `pad` reflects the border so the
    output keeps the image's size, else only positions where the window fits remain."""
    channels, size = images.shape[1], window.numel()
    if pad:
        images = F.pad(images, [size // 2] * 4, mode="reflect")
    kernel = window.to(images)
    # depthwise (groups = channels): 10x faster on the CPU than the same planes as one-channel images
    rows = kernel.view(1, 1, 1, size).expand(channels, 1, 1, size).contiguous()
    columns = kernel.view(1, 1, size, 1).expand(channels, 1, size, 1).contiguous()
    return F.conv2d(F.conv2d(images, rows, groups=channels), columns, groups=channels)


def ssim_parts(pred: torch.Tensor, target: torch.Tensor, window: torch.Tensor, pad: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The luminance term and the contrast-structure term per position (B, C, h, w)."""
    # the five local statistics filtered in one call: one pass of each 1-D kernel over 5C channels
    stats = _filter(torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1), window, pad)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    c1, c2 = K1 ** 2, K2 ** 2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    contrast = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance, contrast


class SsimTermConfig(TermConfig):
    win_size: int = Field(11, ge=3)  # side of the Gaussian window (odd)
    sigma: float = Field(1.5, gt=0)

    @field_validator("win_size")
    @classmethod
    def _odd(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError("win_size must be odd (a window centred on its pixel)")
        return size


class MsSsimTermConfig(SsimTermConfig):
    scales: int = Field(5, ge=1, le=5)  # at most; fewer when the image has no room for them


def _fits(pred: torch.Tensor, size: int, name: str) -> None:
    height, width = pred.shape[-2:]
    if min(height, width) < size:
        raise RuntimeError(f"{name} needs at least {size}x{size} pixels for its {size}-pixel window")


class SSIM(LossTerm):
    """1 - SSIM per scene: 0 for a perfect match."""

    name = "ssim"
    Options = SsimTermConfig

    def __init__(self, window: int = 11, sigma: float = 1.5) -> None:
        self.window = gaussian_window(window, sigma)

    @classmethod
    def from_config(cls, options: SsimTermConfig) -> "SSIM":
        return cls(options.win_size, options.sigma)

    def per_pixel(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - the SSIM map at every pixel (reflected border), for the modifier pipeline."""
        _fits(pred, self.window.numel(), self.name)
        luminance, contrast = ssim_parts(pred, target, self.window, pad=True)
        return 1 - luminance * contrast

    def __call__(self, pred, target, mask=None):
        _fits(pred, self.window.numel(), self.name)
        if mask is not None:
            return masked_mean(self.per_pixel(pred, target), mask)
        luminance, contrast = ssim_parts(pred, target, self.window)
        return 1 - (luminance * contrast).flatten(1).mean(dim=1)


def scales_for(height: int, width: int, window: int, most: int = len(MS_WEIGHTS)) -> int:
    """How many scales an image has room for: its shorter side halved (scales - 1) times still
    holds the window."""
    return max(0, min(most, int(math.floor(math.log2(min(height, width) / window))) + 1))


class MSSSIM(LossTerm):
    """1 - MS-SSIM per scene, at as many scales as the image allows (up to `scales`)."""

    name = "ms_ssim"
    Options = MsSsimTermConfig

    def __init__(self, window: int = 11, sigma: float = 1.5, scales: int = len(MS_WEIGHTS)) -> None:
        self.window, self.scales = gaussian_window(window, sigma), scales

    @classmethod
    def from_config(cls, options: MsSsimTermConfig) -> "MSSSIM":
        return cls(options.win_size, options.sigma, options.scales)

    def __call__(self, pred, target, mask=None):
        size = self.window.numel()
        _fits(pred, size, self.name)
        if mask is not None:  # masked-out pixels show the target: they differ nowhere (as the perceptual terms)
            pred = pred * mask + target.detach() * (1 - mask)
        count = scales_for(*pred.shape[-2:], size, self.scales)
        weights = torch.tensor(MS_WEIGHTS[:count], dtype=pred.dtype, device=pred.device)
        weights = weights / weights.sum()
        value = pred.new_ones(pred.shape[:2])  # (B, C): per channel, as the reference code, then averaged
        for scale in range(count):
            luminance, contrast = ssim_parts(pred, target, self.window)
            term = contrast if scale < count - 1 else luminance * contrast
            # kept above 0 as in the reference code (there: at 0): a negative mean has no fractional power, and
            # at 1e-6 rather than 0 the power's gradient stays finite
            value = value * term.flatten(2).mean(dim=2).clamp_min(1e-6).pow(weights[scale])
            if scale < count - 1:  # 2x2 average pooling; a partial window at an odd border averages what it covers
                pred = F.avg_pool2d(pred, 2, ceil_mode=True)
                target = F.avg_pool2d(target, 2, ceil_mode=True)
        return 1 - value.mean(dim=1)
