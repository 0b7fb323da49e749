"""Renderer backends behind one interface; `make_renderer` picks one from the config."""

from __future__ import annotations

from ..config import RenderConfig
from .base import Renderer
from .reference import ReferenceRenderer
from .scene import Scene
from .torch_tiles import TiledRenderer

__all__ = ["Renderer", "ReferenceRenderer", "Scene", "TiledRenderer", "make_renderer"]


def make_renderer(cfg: RenderConfig) -> Renderer:
    """`auto` is the tiled PyTorch renderer until a CUDA backend is added."""
    if cfg.backend == "reference":
        return ReferenceRenderer(cfg.sigma)
    return TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
