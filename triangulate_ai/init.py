"""Initial triangles: where they start decides much of what a short fit can reach."""

from __future__ import annotations

import math

import torch

from .config import TrianglesConfig
from .triangles import TriangleSet


def resolve_background(spec: str | list[float], target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3) background colour from a config value: white, black, mean (of the target) or [r, g, b]."""
    batch = target.shape[0]
    if spec == "white":
        colour = target.new_ones(batch, 3)
    elif spec == "black":
        colour = target.new_zeros(batch, 3)
    elif spec == "mean":
        if mask is None:
            colour = target.mean(dim=(2, 3))
        else:
            colour = (target * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1e-8)
    else:
        colour = target.new_tensor(spec).expand(batch, 3)
    return colour.clone()


def initial_triangles(cfg: TrianglesConfig, target: torch.Tensor, background: torch.Tensor,
                      generator: torch.Generator) -> TriangleSet:
    """TriangleSet for targets (B, 3, H, W), deterministic for a given generator state."""
    batch, _, height, width = target.shape
    if cfg.init == "random":
        vertices = _random_vertices(batch, cfg.count, cfg.size, height, width, generator)
    else:
        vertices = _grid_vertices(batch, cfg.count, height, width)
    vertices = vertices.to(target.dtype)
    if cfg.colors == "target":
        colors = sample_colors(target, vertices.mean(dim=2))
    else:
        colors = torch.rand(batch, cfg.count, 3, generator=generator).to(target.dtype)
    opacity = torch.full((batch, cfg.count), cfg.opacity, dtype=target.dtype)
    return TriangleSet(vertices, colors, opacity, background, cfg.learn_background)


def sample_colors(target: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Target colour (B, N, 3) at normalised points (B, N, 2), bilinear, clamped to the canvas."""
    grid = points[:, :, None, :] * 2 - 1  # grid_sample wants [-1, 1]
    sampled = torch.nn.functional.grid_sample(target, grid, mode="bilinear", padding_mode="border",
                                              align_corners=False)
    return sampled[..., 0].transpose(1, 2)


def _random_vertices(batch: int, count: int, size: float, height: int, width: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Centres uniform on the canvas; vertices spread `size` x the longer side around them."""
    centres = torch.rand(batch, count, 1, 2, generator=generator)
    longer = max(height, width)
    scale = torch.tensor([size * longer / width, size * longer / height])
    offsets = (torch.rand(batch, count, 3, 2, generator=generator) - 0.5) * scale
    return centres + offsets


def _grid_vertices(batch: int, count: int, height: int, width: int) -> torch.Tensor:
    """A regular triangulation of the canvas into at least `count` triangles, `count` of them
    kept evenly spread (all of them when the count fills the grid exactly)."""
    cells = math.ceil(count / 2)
    cols = max(1, round(math.sqrt(cells * width / height)))
    rows = math.ceil(cells / cols)
    xs = torch.linspace(0, 1, cols + 1)
    ys = torch.linspace(0, 1, rows + 1)
    tris = []
    for r in range(rows):
        for c in range(cols):
            a, b = (xs[c], ys[r]), (xs[c + 1], ys[r])
            d, e = (xs[c], ys[r + 1]), (xs[c + 1], ys[r + 1])
            tris.append([a, b, d])
            tris.append([b, e, d])
    all_tris = torch.tensor([[[float(x), float(y)] for x, y in t] for t in tris])
    keep = torch.linspace(0, len(tris) - 1, count).round().long()
    return all_tris[keep].expand(batch, count, 3, 2).clone()
