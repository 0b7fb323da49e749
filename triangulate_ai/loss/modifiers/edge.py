"""Edge weighting: per-pixel weights from the target's gradient magnitude, so edges count more.

g = Sobel magnitude of the target's luminance, scaled to [0, 1] per image; w = 1 + strength * g,
then divided by its mean so the loss keeps its scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pydantic import Field

from .base import Modifier, ModifierOptions

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_LUMA = (0.299, 0.587, 0.114)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) Rec. 601 luma of the first three channels of (B, C, H, W)."""
    return (image[:, :3] * image.new_tensor(_LUMA)[:, None, None]).sum(dim=1, keepdim=True)


def sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) Sobel gradient magnitude of (B, 1, H, W), borders replicated; the edge
    weights here and the structure initialiser's edge density both read it."""
    kx = _SOBEL_X.to(grey)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), torch.stack([kx, kx.T])[:, None])
    return grad.square().sum(dim=1, keepdim=True).sqrt()


def edge_weights(target: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, 1, H, W) weights with mean 1 per image."""
    magnitude = sobel_magnitude(luminance(target))
    scaled = magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    weights = 1 + strength * scaled
    return weights / weights.mean(dim=(2, 3), keepdim=True)


class EdgeConfig(ModifierOptions):
    strength: float = Field(1.0, ge=0)


class EdgeWeight(Modifier):
    name = "EdgeWeight"
    key = "edge"
    Options = EdgeConfig
    order = 30

    def __init__(self, cfg: EdgeConfig) -> None:
        super().__init__()
        self.strength = cfg.strength

    def modify(self, per_pixel, pred, target, mask):
        weights = self.memo_for_target(target, self.strength, lambda: edge_weights(target, self.strength))
        flat = weights.flatten(1)
        self.metrics = {"max_weight": flat.amax(dim=1).cpu(), "min_weight": flat.amin(dim=1).cpu()}
        return per_pixel * weights
