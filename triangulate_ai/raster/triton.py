"""Triton backend: the soft renderer as two GPU kernels with an analytic backward.

The same model and binning as the tiled renderer (binning.py); the kernels
(kernels/triton_raster.py) composite each tile's pairs front to back and walk them back to
front for the gradient, so no per-pair, per-pixel value is ever stored: only the image, the
final transmittance, and one transmittance checkpoint per pixel per CHUNK pairs (kept only
when gradients are wanted). Runs natively on CUDA tensors, and on CPU tensors under the
Triton interpreter (TRITON_INTERPRET=1 set before start-up), which is how the tests run it.
Kernels compute in float64 for float64 scenes and in float32 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

import torch

from ..errors import UserError
from .base import TiledBase, support_radius
from .binning import bin_triangles
from .scene import Scene


def available() -> bool:
    """True when the triton package can be imported (what `auto` asks for CUDA tensors)."""
    return importlib.util.find_spec("triton") is not None


def _load_kernels() -> ModuleType:
    try:
        return importlib.import_module(".kernels.triton_raster", __package__)
    except ImportError as exc:
        raise UserError(f"render.backend = triton needs the triton package ({exc}); it comes with "
                        "torch's CUDA wheels, or use render.backend=auto") from None


@dataclass(frozen=True)
class _Layout:
    """Where a batch's (tile, triangle) pairs and checkpoints live; built per call by binning."""

    tile_size: int
    block: int  # pixels per program: tile_size**2 rounded up to a power of two
    n_tx: int
    tiles_per_image: int
    pair_tri: torch.Tensor  # (pairs,) flat triangle id, by tile, painter's order within a tile
    tile_start: torch.Tensor  # (tiles + 1,) offsets into pair_tri
    ckpt_start: torch.Tensor  # (tiles,) first checkpoint row of each tile
    n_ckpt: int  # checkpoint rows to allocate (at least the sum over tiles)

    @property
    def warps(self) -> int:
        """One thread per pixel of the tile, within 1..8 warps of 32."""
        return max(1, min(8, self.block // 32))


class _Raster(torch.autograd.Function):
    """(pixel vertices, colours, opacity, background) -> (image, transmittance)."""

    @staticmethod
    def forward(ctx, verts, colors, opacity, background, sigma, layout, height, width, kernels):
        batch = verts.shape[0]
        n_tiles = batch * layout.tiles_per_image
        store = any(ctx.needs_input_grad[:3])
        image = torch.empty(batch, 3, height, width, device=verts.device, dtype=verts.dtype)
        trans = torch.empty(batch, height, width, device=verts.device, dtype=verts.dtype)
        ckpt = torch.empty(layout.n_ckpt * layout.block if store else 1, device=verts.device, dtype=verts.dtype)
        kernels.forward_kernel[(n_tiles,)](
            verts, colors, opacity, background, sigma, layout.pair_tri, layout.tile_start, layout.ckpt_start,
            image, trans, ckpt, height, width, layout.n_tx, layout.tiles_per_image,
            TS=layout.tile_size, BLOCK=layout.block, CHUNK_=kernels.CHUNK, STORE_CKPT=store, num_warps=layout.warps)
        ctx.save_for_backward(verts, colors, opacity, background, sigma, trans, ckpt)
        ctx.layout, ctx.kernels = layout, kernels
        return image, trans

    @staticmethod
    def backward(ctx, grad_image, grad_trans):
        verts, colors, opacity, background, sigma, trans, ckpt = ctx.saved_tensors
        layout, kernels = ctx.layout, ctx.kernels
        batch, count = verts.shape[:2]
        height, width = trans.shape[1:]
        grad_image = grad_image.contiguous()
        grad_background = (grad_image * trans[:, None]).sum(dim=(2, 3))
        if not any(ctx.needs_input_grad[:3]):
            return None, None, None, grad_background, None, None, None, None, None
        pair_grad = torch.zeros(layout.pair_tri.numel(), kernels.GRAD_COLUMNS, device=verts.device, dtype=verts.dtype)
        # the kernel takes d loss / d alpha, alpha = 1 - transmittance
        grad_alpha = (-grad_trans).contiguous()
        kernels.backward_kernel[(batch * layout.tiles_per_image,)](
            verts, colors, opacity, background, sigma, layout.pair_tri, layout.tile_start, layout.ckpt_start,
            ckpt, grad_image, grad_alpha, pair_grad, height, width, layout.n_tx, layout.tiles_per_image,
            TS=layout.tile_size, BLOCK=layout.block, CHUNK_=kernels.CHUNK, COLUMNS=kernels.GRAD_COLUMNS,
            num_warps=layout.warps)
        grads = torch.zeros(batch * count, kernels.GRAD_COLUMNS, device=verts.device, dtype=verts.dtype)
        grads.index_add_(0, layout.pair_tri, pair_grad)
        # edge k runs from vertex k to vertex k + 1: its end's share belongs to the next vertex
        verts_grad = grads[:, :6].reshape(-1, 3, 2) + grads[:, 6:12].reshape(-1, 3, 2).roll(1, dims=1)
        return (verts_grad.reshape(batch, count, 3, 2), grads[:, 12:15].reshape(batch, count, 3),
                grads[:, 15].reshape(batch, count), grad_background, None, None, None, None, None)


class TritonRenderer(TiledBase):
    name = "triton"
    auto_on = ("cuda",)
    preference = 20
    description = "the Triton renderer"

    @classmethod
    def unavailable(cls, device_type: str) -> str | None:
        return None if available() else "the triton package is not installed"

    def __init__(self, sigma: float = 0.5, tile_size: int = 8, cutoff: float = 1e-6) -> None:
        super().__init__(sigma, tile_size, cutoff)
        self.kernels = _load_kernels()

    def step_bytes(self, count, batch, height, width, tiles_per_triangle):
        """Per pair its gradient row (float32); per pixel the image, the final transmittance and
        a transmittance checkpoint every CHUNK triangles of its tile's list."""
        pairs = count * tiles_per_triangle
        checkpoints = pairs * self.tile_size**2 / self.kernels.CHUNK
        return pairs * self.kernels.GRAD_COLUMNS * 4 + (batch * height * width * 5 + checkpoints) * 4 * 2

    def _layout(self, verts: torch.Tensor, height: int, width: int) -> _Layout:
        ts = self.tile_size
        n_ty, n_tx = -(-height // ts), -(-width // ts)
        tile, tri = bin_triangles(verts, support_radius(self.sigma, self.cutoff), ts, n_ty, n_tx)
        n_tiles = verts.shape[0] * n_ty * n_tx
        counts = torch.bincount(tile, minlength=n_tiles)
        chunks = -(-counts // self.kernels.CHUNK)
        zero = counts.new_zeros(1)
        return _Layout(
            tile_size=ts, block=1 << (ts * ts - 1).bit_length(), n_tx=n_tx, tiles_per_image=n_ty * n_tx,
            pair_tri=tri if tri.numel() else zero,  # a pair no tile reads, so no launch gets an empty buffer
            tile_start=torch.cat([zero, torch.cumsum(counts, 0)]),
            ckpt_start=torch.cumsum(chunks, 0) - chunks,
            # sum(ceil(count / CHUNK)) <= pairs / CHUNK + tiles: a bound known without a device sync
            n_ckpt=tri.numel() // self.kernels.CHUNK + n_tiles)

    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        device = scene.vertices.device
        if device.type != "cuda" and not self.kernels.INTERPRETED:
            raise UserError(f"render.backend = triton needs CUDA tensors (got {device.type}), or TRITON_INTERPRET=1 "
                            "set before start-up to run its kernels in the interpreter (tests); "
                            "use render.backend=auto or torch")
        dtype = torch.float64 if scene.vertices.dtype == torch.float64 else torch.float32
        verts = scene.to_pixels(height, width).to(dtype)
        layout = self._layout(verts, height, width)
        sigma = torch.tensor([self.sigma], device=device, dtype=dtype)
        image, trans = _Raster.apply(verts.contiguous(), *(t.to(dtype).contiguous() for t in scene[1:]),
                                     sigma, layout, height, width, self.kernels)
        image = image.to(scene.vertices.dtype)
        if return_alpha:
            return image, (1 - trans[:, None]).to(scene.vertices.dtype)
        return image
