"""Tile binning shared by the tiled backends: which (tile, triangle) pairs need evaluating.

A triangle goes to every square tile its bounding box touches once grown by the distance past
which its coverage is negligible, so a pixel outside every bin of a triangle gets at most
`cutoff` coverage from it.
"""

from __future__ import annotations

import torch


def bin_triangles(verts: torch.Tensor, grow: float, tile_size: int, n_ty: int, n_tx: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tile id, flat triangle id) of every pair, sorted by tile then painter's order.

    verts: (B, T, 3, 2) in pixels. Tile ids run over the batch: b * n_ty * n_tx + ty * n_tx + tx;
    triangle ids are b * T + t.
    """
    ts = tile_size
    batch, count = verts.shape[:2]
    flat = verts.detach().reshape(batch * count, 3, 2)
    lo = flat.amin(dim=1) - grow - 0.5  # pixel centres sit at index + 0.5
    hi = flat.amax(dim=1) + grow - 0.5
    limits = flat.new_tensor([n_tx - 1, n_ty - 1])
    t0 = torch.maximum(torch.floor(lo / ts), torch.zeros_like(lo))
    t1 = torch.minimum(torch.floor(hi / ts), limits)
    t0, t1 = t0.long(), t1.long()
    span = (t1 - t0 + 1).clamp_min(0)  # (B*T, 2); zero where the box misses the canvas
    n_pairs = span[:, 0] * span[:, 1]
    tri = torch.repeat_interleave(torch.arange(batch * count, device=verts.device), n_pairs)
    start = torch.cumsum(n_pairs, 0) - n_pairs
    local = torch.arange(tri.numel(), device=verts.device) - start[tri]
    width_t = span[tri, 0]
    tx = t0[tri, 0] + local % width_t
    ty = t0[tri, 1] + local // width_t
    tile = (tri // count) * (n_ty * n_tx) + ty * n_tx + tx
    tile, order = torch.sort(tile, stable=True)  # stable keeps painter's order per tile
    return tile, tri[order]
