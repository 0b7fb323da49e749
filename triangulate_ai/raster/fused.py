"""Fused CPU soft rasterizer: one C++ kernel per direction instead of an autograd graph.

Same model, painter's order and binning margin as the tiled renderer. The kernel
(kernels/fused_raster.cpp, OpenMP over tiles) bins triangles to tiles and evaluates each
(tile, triangle) pair only on the blocks of pixels within the support radius of the triangle.
The forward keeps, for the backward, the bins, each pair's coverage of its tile and which blocks
it reaches (4 bytes per pair and pixel, in storage the next step reuses once no graph holds it;
past 1 GiB it keeps only the bins and the backward computes the coverage again). The backward
walks each tile top-down for the transmittances, bottom-up with the colour behind each triangle
(no division by 1 - alpha, so opaque triangles are exact), writing each (tile, triangle) gradient
to its own slot and summing the slots in a fixed order: results do not depend on the thread count. CPU tensors only; float32 and float64.

    python -m triangulate_ai.raster.fused --build    # compile into the cache now (make does this)
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..errors import UserError
from .base import TiledBase, support_radius
from .kernels import KernelUnavailable, build_directory, fused_raster
from .scene import Scene


def unavailable_reason() -> str | None:
    """None when the kernel is built and loads, else why not (one line); builds it on first call."""
    try:
        fused_raster()
    except KernelUnavailable as exc:
        return str(exc)
    return None


class _FusedRaster(torch.autograd.Function):
    """(vertices in pixels, colours, opacity, background) -> (image, alpha)."""

    @staticmethod
    def forward(ctx, verts, colors, opacity, background, height: int, width: int, sigma: float, tile: int,
                grow: float):
        inputs = [t.contiguous() for t in (verts, colors, opacity, background)]
        keep = any(ctx.needs_input_grad[:4])  # the coverage, for the backward (not kept past 1 GiB)
        image, alpha, *bins = fused_raster().forward(*inputs, height, width, sigma, tile, grow, keep)
        ctx.save_for_backward(*inputs, *bins)
        ctx.settings = (height, width, sigma, tile, grow)
        ctx.set_materialize_grads(False)  # an unused alpha gives None, not a tensor of zeros
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        grads = fused_raster().backward(*ctx.saved_tensors, grad_image, grad_alpha, *ctx.settings)
        return (*grads, None, None, None, None, None)


class FusedRenderer(TiledBase):
    name = "fused"
    auto_on = ("cpu",)
    preference = 10
    description = "the fused CPU kernel"

    @classmethod
    def from_config(cls, cfg, device_type: str) -> "FusedRenderer":
        if device_type != "cpu":
            raise UserError("render.backend = fused runs on CPU only; use render.backend=auto (triton) or torch "
                            "on CUDA")
        return cls(cfg.sigma, cfg.tile_size, cfg.cutoff)

    @classmethod
    def unavailable(cls, device_type: str) -> str | None:
        return unavailable_reason()

    def __init__(self, sigma: float = 0.5, tile_size: int = 8, cutoff: float = 1e-6) -> None:
        super().__init__(sigma, tile_size, cutoff)
        reason = unavailable_reason()
        if reason is not None:
            raise UserError(f"render.backend = fused: the C++ kernel could not be built or loaded ({reason}); "
                            "use render.backend=torch")

    def step_bytes(self, count, batch, height, width, tiles_per_triangle):
        """Per (tile, triangle) pair its list entry, gradient slot, kept coverage and live blocks;
        per pixel the image, the alpha and their gradients (float32)."""
        pair = 12 * 4 + 8 + self.tile_size**2 * (4 + 1 / 16)
        return count * tiles_per_triangle * pair + batch * height * width * 8 * 4

    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        if scene.vertices.device.type != "cpu":
            raise UserError("render.backend = fused runs on CPU tensors only; use render.backend=torch (or auto) "
                            "on CUDA")
        dtype = scene.vertices.dtype
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the fused renderer takes float32 or float64, got {dtype}")
        verts = scene.to_pixels(height, width)
        colors, opacity, background = (t.to(dtype) for t in scene[1:])
        image, alpha = _FusedRaster.apply(verts, colors, opacity, background, height, width, self.sigma,
                                          self.tile_size, support_radius(self.sigma, self.cutoff))
        return (image, alpha) if return_alpha else image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the fused renderer's C++ kernel into its cache.")
    parser.add_argument("--build", action="store_true", help="compile now (otherwise on first use)")
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 0
    reason = unavailable_reason()
    if reason is not None:  # not fatal: render.backend=auto falls back to the tiled renderer
        print(f"warning: the fused renderer's kernel could not be built ({reason}); "
              "render.backend=auto will use the tiled torch renderer", file=sys.stderr)
        return 0
    print(f"fused renderer kernel ready in {build_directory()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
