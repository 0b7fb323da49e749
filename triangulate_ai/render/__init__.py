"""Renderer backends behind one interface; `make_renderer` picks one from the config."""

from __future__ import annotations

from ..config import RenderConfig
from .base import Renderer
from .reference import ReferenceRenderer
from .scene import Scene
from .torch_tiles import TiledRenderer

__all__ = ["Renderer", "ReferenceRenderer", "Scene", "TiledRenderer", "make_renderer"]


def make_renderer(cfg: RenderConfig) -> Renderer:
    """`auto` is nvdiffrast when CUDA and the package are both present, else the tiled renderer.
    nvdiffrast is imported only when chosen."""
    from . import nvdiffrast

    if cfg.backend == "reference":
        return ReferenceRenderer(cfg.sigma)
    if cfg.backend == "nvdiffrast" or (cfg.backend == "auto" and nvdiffrast.available()):
        return nvdiffrast.NvdiffrastRenderer(cfg.max_layers)
    return TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
