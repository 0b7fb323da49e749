"""Triton kernels of the soft triangle rasterizer: one program per (scene, tile).

Imported only by raster/triton.py. Whether `triton.jit` builds GPU kernels or interpreter
functions is decided when this module is imported, from TRITON_INTERPRET, so the variable has
to be set before the first import (INTERPRETED records which it was).

Both kernels walk a tile's pair list (sorted in painter's order, so the topmost triangle is last)
one triangle at a time over a vector of the tile's pixels; a triangle's three edges are one more
block dimension (4 rows, the fourth repeating the first), which keeps the interpreter's
per-operation overhead down and maps to registers on a GPU.

forward:  front to back (topmost first), accumulating colour and transmittance T; stores the
          image, the final T and, when gradients are wanted, T at the start of every CHUNK
          pairs (one checkpoint per pixel per chunk).
backward: chunk by chunk from the bottom up. A chunk's transmittances are rebuilt from its
          checkpoint by a front-to-back pass and kept in registers (a CHUNK x pixels block); a
          back-to-front pass then recomputes alpha and the signed distance with its gradient,
          carrying the composite of everything below. (Both passes are runtime loops: unrolled
          loops with a per-row `if` ran in the interpreter but crashed the GPU compiler.)
          No transmittance is ever divided by
          (1 - alpha), so fully opaque triangles are exact. Each pair's gradient, summed over the
          tile's pixels, goes to its own row of a (pairs, GRAD_COLUMNS) buffer: no atomics; the
          caller sums a triangle's tiles and adds each edge's end to the next edge's start.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CHUNK = 16  # pairs per transmittance checkpoint
GRAD_COLUMNS = 16  # per pair: edge k = (v_k, v_k+1)'s start (x, y) x 3, its end (x, y) x 3, r g b, opacity
_TINY = tl.constexpr(1e-12)  # as in sdf.py


@triton.jit
def _edges(verts_ptr, tri, px, py):
    """Per edge k = (v_k, v_k+1) as rows (row 3 repeats edge 0) and pixel as columns: squared
    distance to the segment, its parameter t, the offset from the nearest point; and, per
    pixel, whether it is inside (the arithmetic of sdf.py, so degenerate triangles have no
    inside)."""
    v = verts_ptr + tri * 6
    x0 = tl.load(v)
    y0 = tl.load(v + 1)
    area = (tl.load(v + 2) - x0) * (tl.load(v + 5) - y0) - (tl.load(v + 3) - y0) * (tl.load(v + 4) - x0)
    k = tl.arange(0, 4)[:, None]
    ax = tl.load(v + 2 * (k % 3))
    ay = tl.load(v + 2 * (k % 3) + 1)
    ex = tl.load(v + 2 * ((k + 1) % 3)) - ax
    ey = tl.load(v + 2 * ((k + 1) % 3) + 1) - ay
    wx = px[None, :] - ax
    wy = py[None, :] - ay
    t = (wx * ex + wy * ey) / tl.maximum(ex * ex + ey * ey, _TINY)
    t = tl.minimum(tl.maximum(t, 0.0), 1.0)
    dx = wx - t * ex
    dy = wy - t * ey
    same_side = tl.min(tl.where((ex * wy - ey * wx) * area >= 0, 1, 0), axis=0) > 0
    inside = tl.where(area != 0, same_side, False)  # (the interpreter cannot `&` a scalar with a block)
    return dx * dx + dy * dy, t, dx, dy, inside


@triton.jit
def _tile_pixels(tile, tiles_per_image, n_tx, height, width, TS: tl.constexpr, BLOCK: tl.constexpr):
    """The scene of a tile, and its pixels' indices, flat offsets, centres and validity."""
    scene = (tile // tiles_per_image).to(tl.int64)
    in_image = tile % tiles_per_image
    local = tl.arange(0, BLOCK)
    y = (in_image // n_tx) * TS + local // TS
    x = (in_image % n_tx) * TS + local % TS
    valid = (local < TS * TS) & (y < height) & (x < width)
    return scene, local, y * width + x, x + 0.5, y + 0.5, valid


@triton.jit
def forward_kernel(verts_ptr, colors_ptr, opacity_ptr, background_ptr, sigma_ptr,
                   pair_tri_ptr, tile_start_ptr, ckpt_start_ptr,
                   image_ptr, trans_ptr, ckpt_ptr,
                   height, width, n_tx, tiles_per_image,
                   TS: tl.constexpr, BLOCK: tl.constexpr, CHUNK_: tl.constexpr, STORE_CKPT: tl.constexpr):
    tile = tl.program_id(0)
    dtype = image_ptr.dtype.element_ty
    scene, local, offset, px, py, valid = _tile_pixels(tile, tiles_per_image, n_tx, height, width, TS, BLOCK)
    px = px.to(dtype)
    py = py.to(dtype)
    channel = tl.arange(0, 4)
    rgb = channel < 3
    sigma = tl.load(sigma_ptr)
    start = tl.load(tile_start_ptr + tile)
    count = tl.load(tile_start_ptr + tile + 1) - start
    trans = tl.full((BLOCK,), 1.0, dtype)
    colour = tl.zeros((4, BLOCK), dtype)  # r, g, b, unused
    for c in range(tl.cdiv(count, CHUNK_)):
        if STORE_CKPT:
            tl.store(ckpt_ptr + (tl.load(ckpt_start_ptr + tile) + c) * BLOCK + local, trans)
        for i in range(c * CHUNK_, tl.minimum(count, c * CHUNK_ + CHUNK_)):
            tri = tl.load(pair_tri_ptr + start + count - 1 - i)  # topmost first
            d2, _, _, _, inside = _edges(verts_ptr, tri, px, py)
            dist = tl.sqrt(tl.maximum(tl.min(d2, axis=0), _TINY))
            sd = tl.where(inside, dist, -dist)
            alpha = tl.load(opacity_ptr + tri) / (1.0 + tl.exp(-sd / sigma))
            rgb_tri = tl.load(colors_ptr + tri * 3 + channel, mask=rgb, other=0.0)
            colour += (trans * alpha)[None, :] * rgb_tri[:, None]
            trans = trans * (1.0 - alpha)
    background = tl.load(background_ptr + scene * 3 + channel, mask=rgb, other=0.0)
    out = image_ptr + scene * 3 * height * width + channel[:, None] * height * width + offset[None, :]
    tl.store(out, colour + trans[None, :] * background[:, None], mask=rgb[:, None] & valid[None, :])
    tl.store(trans_ptr + scene * height * width + offset, trans, mask=valid)


@triton.jit
def backward_kernel(verts_ptr, colors_ptr, opacity_ptr, background_ptr, sigma_ptr,
                    pair_tri_ptr, tile_start_ptr, ckpt_start_ptr, ckpt_ptr,
                    grad_image_ptr, grad_alpha_ptr, pair_grad_ptr,
                    height, width, n_tx, tiles_per_image,
                    TS: tl.constexpr, BLOCK: tl.constexpr, CHUNK_: tl.constexpr, COLUMNS: tl.constexpr):
    tile = tl.program_id(0)
    dtype = ckpt_ptr.dtype.element_ty
    scene, local, offset, px, py, valid = _tile_pixels(tile, tiles_per_image, n_tx, height, width, TS, BLOCK)
    px = px.to(dtype)
    py = py.to(dtype)
    channel = tl.arange(0, 4)
    rgb = channel < 3
    sigma = tl.load(sigma_ptr)
    start = tl.load(tile_start_ptr + tile)
    count = tl.load(tile_start_ptr + tile + 1) - start
    ckpt0 = tl.load(ckpt_start_ptr + tile)
    # d loss / d(r, g, b, alpha): the alpha output is a fourth channel of colour 1 over background 0
    plane = height * width
    grad = (tl.load(grad_image_ptr + scene * 3 * plane + channel[:, None] * plane + offset[None, :],
                    mask=rgb[:, None] & valid[None, :], other=0.0)
            + tl.load(grad_alpha_ptr + scene * plane + offset[None, :] + 0 * channel[:, None],
                      mask=(channel == 3)[:, None] & valid[None, :], other=0.0))
    # below: grad . (the composite of everything under the current pair), seeded with the background
    below = tl.sum(grad * tl.load(background_ptr + scene * 3 + channel, mask=rgb, other=0.0)[:, None], axis=0)
    rows = tl.arange(0, CHUNK_)[:, None]
    edge = tl.arange(0, 4)[:, None]
    n_chunks = tl.cdiv(count, CHUNK_)
    for k in range(n_chunks):
        c = n_chunks - 1 - k
        trans = tl.load(ckpt_ptr + (ckpt0 + c) * BLOCK + local)
        above = tl.zeros((CHUNK_, BLOCK), dtype)  # row r: transmittance above pair c * CHUNK + r
        in_chunk = tl.minimum(count - c * CHUNK_, CHUNK_)
        for r in range(in_chunk):
            tri = tl.load(pair_tri_ptr + start + count - 1 - c * CHUNK_ - r)
            d2, _, _, _, inside = _edges(verts_ptr, tri, px, py)
            dist = tl.sqrt(tl.maximum(tl.min(d2, axis=0), _TINY))
            alpha = tl.load(opacity_ptr + tri) / (1.0 + tl.exp(-tl.where(inside, dist, -dist) / sigma))
            above = tl.where(rows == r, trans[None, :], above)
            trans = trans * (1.0 - alpha)
        for rr in range(in_chunk):
            r = in_chunk - 1 - rr
            pair = start + count - 1 - c * CHUNK_ - r
            tri = tl.load(pair_tri_ptr + pair)
            d2, t, dx, dy, inside = _edges(verts_ptr, tri, px, py)
            best = tl.min(d2, axis=0)
            # each edge's share of the gradient: as torch.minimum(torch.minimum(d0, d1), d2)
            # splits it, half and half at each tie, so symmetric pixels match the reference
            tie = (d2 == best[None, :]) & (edge < 3)
            ties01 = tl.sum(tl.where(tie & (edge < 2), 1.0, 0.0), axis=0)
            share2 = tl.sum(tl.where(tie & (edge == 2), 1.0, 0.0), axis=0) * tl.where(ties01 > 0, 0.5, 1.0)
            share = tl.where(edge == 2, share2[None, :],
                             tl.where(tie, ((1.0 - share2) / tl.maximum(ties01, 1.0))[None, :], 0.0))
            dist = tl.sqrt(tl.maximum(best, _TINY))
            sign = tl.where(inside, 1.0, -1.0)
            opacity = tl.load(opacity_ptr + tri)
            cover = 1.0 / (1.0 + tl.exp(-sign * dist / sigma))
            alpha = opacity * cover
            colour = tl.load(colors_ptr + tri * 3 + channel, mask=rgb, other=1.0)
            t_above = tl.sum(tl.where(rows == r, above, 0.0), axis=0)
            shade = tl.sum(grad * colour[:, None], axis=0)
            d_alpha = t_above * (shade - below)
            d_sd = d_alpha * opacity * cover * (1.0 - cover) / sigma
            # per edge, d loss / d (offset d of the pixel from the nearest point) = d_scale * d:
            # d sd / d d = sign * d / dist (none below TINY, like sqrt(clamp(d2, TINY))), times
            # the edge's share; the nearest point is (1 - t) a + t b, so a takes -(1 - t) of it
            # and b takes -t
            d_scale = (d_sd * tl.where(best > _TINY, sign / dist, 0.0))[None, :] * share
            out = pair_grad_ptr + pair * COLUMNS
            on_edge = edge < 3
            tl.store(out + 2 * edge, -tl.sum(d_scale * dx * (1.0 - t), axis=1, keep_dims=True), mask=on_edge)
            tl.store(out + 2 * edge + 1, -tl.sum(d_scale * dy * (1.0 - t), axis=1, keep_dims=True), mask=on_edge)
            tl.store(out + 6 + 2 * edge, -tl.sum(d_scale * dx * t, axis=1, keep_dims=True), mask=on_edge)
            tl.store(out + 7 + 2 * edge, -tl.sum(d_scale * dy * t, axis=1, keep_dims=True), mask=on_edge)
            tl.store(out + 12 + channel, tl.sum(grad * (t_above * alpha)[None, :], axis=1), mask=rgb)
            tl.store(out + 15, tl.sum(d_alpha * cover, axis=0))
            below = alpha * shade + (1.0 - alpha) * below
