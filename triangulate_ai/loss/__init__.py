"""Loss terms and the modifiers of their per-pixel maps. Every module of this package is imported
here, the three that hold the built-in terms first (their order is the config's): each `LossTerm`
subclass with a `name` registers itself with its `Options` (terms.REGISTRY), as each `Modifier`
does (modifiers.REGISTRY), so a new term is one more file in this folder."""

from __future__ import annotations

import importlib
import pkgutil

# the built-in terms register in this order, the config's: l1, l2, then ssim, ms_ssim, then vgg, lpips
from . import terms  # noqa: F401
from . import structural  # noqa: F401
from . import perceptual  # noqa: F401
from .terms import REGISTRY as TERMS
from .terms import LossTerm

__all__ = ["LossTerm", "TERMS", "build_terms"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_terms(cfg) -> dict[str, LossTerm]:
    """The enabled terms of `cfg` (a LossConfig), in config order, keyed by name."""
    return {name: TERMS[name].from_config(term_cfg) for name, term_cfg in cfg.active_terms().items()}
