"""Loss terms and the balancers that combine them."""

from __future__ import annotations

from typing import Any, Callable

from ..config import LossConfig
from .perceptual import LPIPSTerm, VGGPerceptual
from .structural import MSSSIM, SSIM
from .terms import L1, L2, LossTerm

TERMS: dict[str, Callable[[Any], LossTerm]] = {
    "l1": lambda cfg: L1(), "l2": lambda cfg: L2(),
    "ssim": lambda cfg: SSIM(cfg.win_size, cfg.sigma),
    "ms_ssim": lambda cfg: MSSSIM(cfg.win_size, cfg.sigma, cfg.scales),
    "vgg": VGGPerceptual, "lpips": LPIPSTerm}


def build_terms(cfg: LossConfig) -> dict[str, LossTerm]:
    """The enabled terms, in config order, keyed by name."""
    return {name: TERMS[name](term_cfg) for name, term_cfg in cfg.active_terms().items()}
