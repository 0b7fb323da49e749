"""Renderer backends behind one interface; `make_renderer` picks one from the config."""

from __future__ import annotations

import torch

from ..config import RenderConfig
from .base import Renderer
from .reference import ReferenceRenderer
from .scene import Scene
from .torch_tiles import TiledRenderer

__all__ = ["Renderer", "ReferenceRenderer", "Scene", "TiledRenderer", "make_renderer"]


def make_renderer(cfg: RenderConfig, device: torch.device | str | None = None) -> Renderer:
    """`auto` is the Triton renderer on CUDA when triton imports, else nvdiffrast when CUDA and
    the package are both present, else the tiled renderer. `device` is where the scenes will
    live (default: CUDA when available). Optional packages are imported only when chosen."""
    from . import nvdiffrast, triton

    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    auto = cfg.backend == "auto"
    if cfg.backend == "reference":
        return ReferenceRenderer(cfg.sigma)
    if cfg.backend == "triton" or (auto and cuda and triton.available()):
        return triton.TritonRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
    if cfg.backend == "nvdiffrast" or (auto and cuda and nvdiffrast.available()):
        return nvdiffrast.NvdiffrastRenderer(cfg.max_layers)
    return TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
