"""Renderer backends behind one interface; `make_renderer` picks one from the config."""

from __future__ import annotations

import sys

import torch

from ..config import RenderConfig
from ..errors import UserError
from .base import Renderer
from .reference import ReferenceRenderer
from .scene import Scene
from .torch_tiles import TiledRenderer

__all__ = ["Renderer", "ReferenceRenderer", "Scene", "TiledRenderer", "make_renderer"]

_warned: set[str] = set()


def make_renderer(cfg: RenderConfig, device: torch.device | str = "cpu") -> Renderer:
    """`auto` picks the fastest backend that passes parity on the device: on CPU the fused kernel,
    or the tiled renderer (one warning line saying why) when the kernel cannot be built or loaded;
    on CUDA the Triton renderer when triton imports, else nvdiffrast when the package is present,
    else the tiled renderer. Optional backends are imported only when chosen."""
    from . import fused, nvdiffrast, triton

    on_cuda = torch.device(device).type == "cuda"
    auto = cfg.backend == "auto"
    if cfg.backend == "reference":
        return ReferenceRenderer(cfg.sigma)
    if cfg.backend == "triton" or (auto and on_cuda and triton.available()):
        return triton.TritonRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
    if cfg.backend == "nvdiffrast" or (auto and on_cuda and nvdiffrast.available()):
        return nvdiffrast.NvdiffrastRenderer(cfg.max_layers)
    if cfg.backend == "fused":
        if on_cuda:
            raise UserError("render.backend = fused runs on CPU only; use render.backend=auto (triton) or torch "
                            "on CUDA")
        return fused.FusedRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
    if cfg.backend == "auto" and not on_cuda:
        reason = fused.unavailable_reason()
        if reason is None:
            return fused.FusedRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
        if reason not in _warned:
            _warned.add(reason)
            print(f"warning: render.backend=auto: the fused CPU kernel is unavailable ({reason}); "
                  "using the tiled torch renderer", file=sys.stderr)
    return TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
