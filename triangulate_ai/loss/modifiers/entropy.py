"""Error-entropy weighting (seed 004's entropy modifier, adapted to images).

The per-pixel error e (the loss map averaged over channels, detached) normalised over each image,
q = e / sum(e), plays the role of the seed's wrong-answer distribution. Its entropy
H = -sum q log q (divided by log N, N valid pixels, when `normalized`, so H is in [0, 1]) is
clamped below by `threshold`, times `weight`: that number scales the image's loss (each scene
of a batch by its own). Errors spread over the whole image give a larger weight than errors
concentrated in a few pixels."""

from __future__ import annotations

import math

import torch

from pydantic import Field

from .base import Modifier, ModifierOptions


class EntropyConfig(ModifierOptions):
    weight: float = Field(1.0, gt=0)
    threshold: float = Field(0.0, ge=0)
    eps: float = Field(1e-8, gt=0)
    normalized: bool = True


def error_entropy(per_pixel: torch.Tensor, mask: torch.Tensor | None, eps: float, normalized: bool) -> torch.Tensor:
    """(B,) entropy of each image's normalised per-pixel error distribution."""
    error = per_pixel.detach().mean(dim=1)  # (B, H, W)
    if mask is not None:
        error = error * mask[:, 0]
    flat = error.flatten(1)
    q = flat / flat.sum(dim=1, keepdim=True).clamp_min(eps)
    entropy = -(q * torch.log(q.clamp_min(eps))).sum(dim=1)
    entropy = torch.where(flat.sum(dim=1) > 0, entropy, torch.zeros_like(entropy))
    if normalized:
        count = flat.shape[1] if mask is None else mask.flatten(1).gt(0).sum(dim=1).clamp_min(2)
        count = torch.as_tensor(count, dtype=entropy.dtype, device=entropy.device)
        entropy = entropy / torch.log(count).clamp_min(math.log(2))
    return entropy


class EntropyWeight(Modifier):
    name = "EntropyWeight"
    key = "entropy"
    Options = EntropyConfig
    order = 40  # last: it weighs the map the others have shaped

    def __init__(self, cfg: EntropyConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def modify(self, per_pixel, pred, target, mask):
        c = self.cfg
        entropy = error_entropy(per_pixel, mask, c.eps, c.normalized)  # (B,)
        weight = entropy.clamp_min(c.threshold) * c.weight
        self.metrics = {"entropy": entropy.detach().cpu(), "entropy_weight": weight.detach().cpu()}
        return per_pixel * weight[:, None, None, None]
