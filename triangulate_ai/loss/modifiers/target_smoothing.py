"""Target smoothing: compare against a Gaussian-blurred target, the image analogue of label
smoothing. Its `sigma` (pixels; 0 = off) is meant to follow a schedule from coarse to fine:
schedules: {modifiers.target_smoothing.sigma: {type: linear, start_value: 4, end_value: 0, ...}}."""

from __future__ import annotations

import math


from pydantic import Field

from .base import Modifier, ModifierOptions


class TargetSmoothingConfig(ModifierOptions):
    sigma: float = Field(2.0, ge=0)


class TargetSmoothing(Modifier):
    name = "TargetSmoothing"
    key = "target_smoothing"
    Options = TargetSmoothingConfig
    order = 10  # first: it changes the target every later modifier and term sees

    def __init__(self, cfg: TargetSmoothingConfig) -> None:
        super().__init__()
        self.sigma = cfg.sigma

    def prepare_target(self, target, step):
        self.metrics = {"sigma": float(self.sigma)}
        if self.sigma <= 0:
            return target
        kernel = 2 * math.ceil(3 * self.sigma) + 1
        return self.memo_for_target(target, self.sigma,
                                    lambda: _blur()(target, [kernel, kernel], [self.sigma, self.sigma]))


def _blur():
    """torchvision's Gaussian blur, imported when first used (the config imports this module)."""
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur
