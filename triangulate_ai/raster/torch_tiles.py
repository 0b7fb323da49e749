"""Tile-binned soft rasterizer in pure PyTorch (CPU and CUDA), the default backend.

Each triangle is binned to the square tiles its bounding box touches, grown by the distance
past which its coverage is below `cutoff` (binning.py). Only (tile, triangle) pairs are
evaluated, each on the tile's pixels, so the cost follows the area the triangles cover rather than T x H x W.
Compositing is done in log-transmittance: for pair i in a tile, the light it receives from
above is exp(sum of log(1 - alpha_j) over later triangles j in the same tile), a segmented
reverse cumulative sum over the tile-sorted pair list.
"""

from __future__ import annotations

import torch

from .base import MAX_ALPHA, TiledBase, support_radius
from .binning import bin_triangles
from .scene import Scene
from .sdf import signed_distance


# Autograd keeps about this much per pixel of every (tile, triangle) pair: measured 16-17 KB per
# 8x8-pixel pair at 128-256 px with 500-20000 triangles.
BYTES_PER_PAIR_PIXEL = 265


class TiledRenderer(TiledBase):
    name = "torch"
    auto_on = ("cpu", "cuda")  # the fallback everywhere
    description = "the tiled torch renderer"

    def step_bytes(self, count, batch, height, width, tiles_per_triangle):
        return count * tiles_per_triangle * self.tile_size**2 * BYTES_PER_PAIR_PIXEL

    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        ts = self.tile_size
        verts = scene.to_pixels(height, width)
        batch, count = verts.shape[:2]
        device, dtype = verts.device, verts.dtype
        n_ty, n_tx = -(-height // ts), -(-width // ts)
        n_tiles = batch * n_ty * n_tx

        tile, tri = bin_triangles(verts, support_radius(self.sigma, self.cutoff), ts, n_ty, n_tx)
        local = torch.arange(ts, device=device, dtype=dtype)
        ly, lx = torch.meshgrid(local, local, indexing="ij")
        ly, lx = ly.reshape(1, -1), lx.reshape(1, -1)  # (1, P)
        in_image = tile % (n_ty * n_tx)
        px = (in_image % n_tx).to(dtype)[:, None] * ts + lx + 0.5  # (N, P)
        py = (in_image // n_tx).to(dtype)[:, None] * ts + ly + 0.5

        # index_select, not x[tri]: its backward (index_add) is deterministic on CPU, while the
        # accumulating index_put behind x[tri] made runs of the same seed differ after ~100 steps.
        sd = signed_distance(px, py, verts.reshape(-1, 3, 2).index_select(0, tri))
        alpha = scene.opacity.reshape(-1, 1).index_select(0, tri) * torch.sigmoid(sd / self.sigma)  # (N, P)
        log_t = torch.log1p(-alpha.clamp(max=MAX_ALPHA))

        # light reaching pair i from above = exp(sum of log_t over later pairs of the same tile);
        # the cumulative sum runs over all tiles, so float64 keeps the differences exact.
        csum = torch.cumsum(log_t.double(), 0)
        counts = torch.unique_consecutive(tile, return_counts=True)[1]
        last = torch.repeat_interleave(torch.cumsum(counts, 0) - 1, counts)
        above = torch.exp((csum.index_select(0, last) - csum).to(dtype))
        weight = alpha * above  # (N, P)

        pixels = ts * ts
        colour = torch.zeros(n_tiles, pixels, 3, device=device, dtype=dtype)
        tri_colors = scene.colors.reshape(-1, 3).index_select(0, tri)
        colour = colour.index_add(0, tile, weight[:, :, None] * tri_colors[:, None, :])
        tile_log_t = torch.zeros(n_tiles, pixels, device=device, dtype=dtype).index_add(0, tile, log_t)
        transmittance = torch.exp(tile_log_t)
        bg = scene.background.repeat_interleave(n_ty * n_tx, dim=0)  # (n_tiles, 3)
        colour = colour + transmittance[:, :, None] * bg[:, None, :]

        image = _untile(colour, batch, n_ty, n_tx, ts, height, width)
        if return_alpha:
            return image, _untile((1 - transmittance)[:, :, None], batch, n_ty, n_tx, ts, height, width)
        return image


def _untile(values: torch.Tensor, batch: int, n_ty: int, n_tx: int, ts: int, height: int, width: int):
    """(tiles, P, C) -> (B, C, H, W), cropping the padding of the last row/column of tiles."""
    chans = values.shape[-1]
    grid = values.reshape(batch, n_ty, n_tx, ts, ts, chans).permute(0, 5, 1, 3, 2, 4)
    return grid.reshape(batch, chans, n_ty * ts, n_tx * ts)[:, :, :height, :width]
