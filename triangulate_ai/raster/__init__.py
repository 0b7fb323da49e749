"""Renderer backends behind one interface; `make_renderer` picks one from the config. Every
module of this package is imported here (the optional backends import their own packages only
when used), and each `Renderer` with a `name` registers itself (base.REGISTRY)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import torch

# the built-in backends register in this order (the order the config lists them in)
from .torch_tiles import TiledRenderer  # noqa: I001
from . import fused  # noqa: F401
from .reference import ReferenceRenderer
from . import triton, nvdiffrast  # noqa: F401
from .base import REGISTRY, Renderer
from .scene import Scene

__all__ = ["REGISTRY", "Renderer", "ReferenceRenderer", "Scene", "TiledRenderer", "make_renderer"]

for _module in pkgutil.iter_modules(__path__):  # the compiled kernels build and load when first used
    importlib.import_module(f"{__name__}.{_module.name}")

_warned: set[str] = set()


def make_renderer(cfg, device: torch.device | str = "cpu") -> Renderer:
    """The backend `cfg.backend` names (`cfg`: a RenderConfig) on `device`. `auto` picks the
    fastest backend that passes parity on the device: on CPU the fused kernel, on CUDA the Triton
    renderer, then nvdiffrast; the tiled renderer where none of those can run (with one warning
    line naming what could not, and why)."""
    kind = torch.device(device).type
    if cfg.backend != "auto":
        return REGISTRY[cfg.backend].from_config(cfg, kind)
    skipped = []
    for cls in sorted((c for c in REGISTRY.values() if kind in c.auto_on), key=lambda c: -c.preference):
        reason = cls.unavailable(kind)
        if reason is None:
            for what in skipped:
                if what not in _warned:
                    _warned.add(what)
                    print(f"warning: render.backend=auto: {what}; using {cls.description}", file=sys.stderr)
            return cls.from_config(cfg, kind)
        if kind == "cpu":  # on CUDA the optional packages are often absent by choice: no warning
            skipped.append(f"{cls.description} is unavailable ({reason})")
    raise RuntimeError(f"no renderer backend can run on {kind}")  # the tiled renderer runs everywhere
