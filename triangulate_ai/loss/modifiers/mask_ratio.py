"""Mask ratio weighting (seed 004): with a mask, the loss counts valid pixels only, and each image
is weighted by clamp((ratio + eps)^-power, min_weight, max_weight), ratio = its valid fraction,
so sparsely valid images are not drowned by full ones. Without a mask it changes nothing."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from .base import Modifier, ModifierOptions


class MaskRatioConfig(ModifierOptions):
    power: float = Field(0.5, ge=0)
    min_weight: float = Field(0.1, gt=0)
    max_weight: float = Field(10.0, gt=0)
    eps: float = Field(1e-8, gt=0)
    mask_file: Optional[str] = None


class MaskRatioWeight(Modifier):
    name = "MaskRatioWeight"
    key = "mask_ratio"
    Options = MaskRatioConfig
    order = 20
    uses_mask = True

    def __init__(self, cfg: MaskRatioConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def modify(self, per_pixel, pred, target, mask):
        if mask is None:
            self.metrics = {"mask_ratio": 1.0, "weight": 1.0}
            return per_pixel
        c = self.cfg
        ratio = mask.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        weight = ((ratio + c.eps) ** -c.power).clamp(c.min_weight, c.max_weight)
        self.metrics = {"mask_ratio": ratio.flatten().detach().cpu(), "weight": weight.flatten().detach().cpu()}
        # mean over all pixels of this map = (masked mean per image) x weight
        return per_pixel * mask * weight / (ratio + c.eps)
