"""Loss terms: each scores a batch of renders against their targets, one value per scene (B,)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class LossTerm(ABC):
    """A named image loss. `mask` (B, 1, H, W) in [0, 1] restricts it to valid pixels."""

    name: str = "term"

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Load whatever the term needs (pretrained networks) before the first step, so a
        missing weights file stops the run before anything is written."""

    @abstractmethod
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) losses of renders (B, 3, H, W) against targets (B, 3, H, W): scene b's loss
        depends on scene b only, so B scenes can share one loop."""


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean of a (B, C, H, W) map over each scene's pixels, or over its mask's weight."""
    if mask is None:
        return per_pixel.flatten(1).mean(dim=1)
    weight = mask.expand_as(per_pixel)
    return (per_pixel * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1e-8)


class L1(LossTerm):
    """Mean absolute error per channel and pixel."""

    name = "l1"

    def per_pixel(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss map before reduction, for the modifier pipeline."""
        return (pred - target).abs()

    def __call__(self, pred, target, mask=None):
        return masked_mean(self.per_pixel(pred, target), mask)


class L2(LossTerm):
    """Mean squared error per channel and pixel: the loss PSNR measures."""

    name = "l2"

    def per_pixel(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).square()

    def __call__(self, pred, target, mask=None):
        return masked_mean(self.per_pixel(pred, target), mask)
