"""Initial triangles: where they start decides much of what a short fit can reach."""

from __future__ import annotations

import math

import torch

from .config import TrianglesConfig
from .loss.modifiers.edge import luminance, sobel_magnitude
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
    """TriangleSet for targets (B, 3, H, W), deterministic for a given generator state. A model's
    start (init: model) is the model's prediction, which the caller hands to the Fitter
    (api.model_start): initialisers stand below the model, which uses them."""
    batch, _, height, width = target.shape
    count = cfg.count
    if cfg.init == "model":
        raise ValueError("triangles.init = model: the model's prediction is handed to the Fitter as `start`")
    if cfg.init == "random":
        vertices = _random_vertices(batch, count, cfg.size, height, width, generator)
    elif cfg.init == "grid":
        vertices = _grid_vertices(batch, count, height, width)
    else:  # structure; progressive starts from a coarse structure and parks the rest
        active = count if cfg.init == "structure" else max(1, round(cfg.progressive.start * count))
        vertices = structure_vertices(target, active, cfg.structure_uniform, generator)
        if active < count:
            vertices = torch.cat([vertices, parked_vertices(batch, count - active)], dim=1)
    vertices = vertices.to(target.dtype)
    if cfg.colors == "target":
        colors = triangle_colors(target, vertices)
    else:
        colors = torch.rand(batch, count, 3, generator=generator).to(target.dtype)
    opacity = torch.full((batch, count), cfg.opacity, dtype=target.dtype)
    return TriangleSet(vertices, colors, opacity, background, cfg.learn_background)


PARKED = -4.0  # parked triangles sit at this point, far off the canvas: no tile, no cost, no pixel


def parked_vertices(batch: int, count: int) -> torch.Tensor:
    """Zero-area triangles off the canvas, waiting to be placed (progressive init)."""
    return torch.full((batch, count, 3, 2), PARKED)


def triangle_colors(target: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Mean target colour over seven points of each triangle (centroid, and the points halfway
    from it to the vertices and to the edge midpoints): close to the area mean, cheaply."""
    centroid = vertices.mean(dim=2, keepdim=True)
    midpoints = (vertices + vertices.roll(1, dims=2)) / 2
    points = torch.cat([centroid, (centroid + vertices) / 2, (centroid + midpoints) / 2], dim=2)  # (B, T, 7, 2)
    batch, count = vertices.shape[:2]
    samples = sample_colors(target, points.reshape(batch, count * 7, 2).to(target.dtype))
    return samples.reshape(batch, count, 7, 3).mean(dim=2).clamp(0, 1)


def structure_vertices(target: torch.Tensor, count: int, uniform: float, generator: torch.Generator) -> torch.Tensor:
    """(B, count, 3, 2) Delaunay triangles over points drawn with density following the target's
    edges (Sobel magnitude of its luminance), a `uniform` share spread evenly, and points on the
    border so the triangulation covers the canvas."""
    batch, _, height, width = target.shape
    out = []
    for b in range(batch):
        density = edge_density(target[b:b + 1], uniform)
        border = _border_points(count, height, width)
        interior = max(1, -(-(count - len(border) + 2) // 2))  # T = 2 P_in + P_border - 2
        while True:
            points = torch.cat([border, _sample_points(density, interior, generator)])
            tris = _delaunay(points)
            if len(tris) >= count or interior > 4 * count + 16:
                break
            interior += max(1, (count - len(tris) + 1) // 2)
        areas = _areas(tris)
        keep = torch.argsort(areas, descending=True, stable=True)[:count]  # drop the smallest extras
        tris = tris[keep.sort().values]
        if len(tris) < count:  # tiny images: repeat triangles rather than fail
            tris = tris[torch.arange(count) % len(tris)]
        out.append(tris / torch.tensor([width, height], dtype=tris.dtype))
    return torch.stack(out).float()


def edge_density(target: torch.Tensor, uniform: float) -> torch.Tensor:
    """(H, W) probabilities: (1 - uniform) x normalised Sobel magnitude + uniform / pixels."""
    grey = torch.nn.functional.avg_pool2d(luminance(target.float()), 3, stride=1, padding=1, count_include_pad=False)
    magnitude = sobel_magnitude(grey)[0, 0]
    total = float(magnitude.sum())
    edges = magnitude / total if total > 0 else torch.full_like(magnitude, 1 / magnitude.numel())
    return (1 - uniform) * edges + uniform / magnitude.numel()


def _sample_points(density: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` points (pixel units) drawn from a pixel density, jittered within their pixel."""
    height, width = density.shape
    flat = torch.multinomial(density.reshape(-1).double(), count, replacement=True, generator=generator)
    jitter = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    return torch.stack([flat % width, flat // width], dim=1).double() + jitter


def _border_points(count: int, height: int, width: int) -> torch.Tensor:
    """The corners and points spaced evenly along the edges, about sqrt(count) in all."""
    per_side = max(1, round(count ** 0.5 / 4))
    t = torch.linspace(0, 1, per_side + 1, dtype=torch.float64)[:-1]
    w, h = float(width), float(height)
    edges = [torch.stack([t * w, torch.zeros_like(t)], 1), torch.stack([torch.full_like(t, w), t * h], 1),
             torch.stack([w - t * w, torch.full_like(t, h)], 1), torch.stack([torch.zeros_like(t), h - t * h], 1)]
    return torch.cat(edges)


def _delaunay(points: torch.Tensor) -> torch.Tensor:
    from scipy.spatial import Delaunay

    simplices = Delaunay(points.numpy()).simplices
    tris = points[torch.from_numpy(simplices).long()]  # (T, 3, 2)
    return tris[_areas(tris) > 1e-9]


def _areas(tris: torch.Tensor) -> torch.Tensor:
    ab, ac = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    return 0.5 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]).abs()


def sample_colors(target: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Target colour (B, N, 3) at normalised points (B, N, 2), bilinear, clamped to the canvas."""
    grid = points[:, :, None, :] * 2 - 1  # grid_sample wants [-1, 1]
    sampled = torch.nn.functional.grid_sample(target, grid, mode="bilinear", padding_mode="border",
                                              align_corners=False)
    return sampled[..., 0].transpose(1, 2)


def _random_vertices(batch: int, count: int, size: float, height: int, width: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Centroids uniform on the canvas; three vertices around each at radius `size` / 2 x the longer
    side (x 0.5 to 1), at angles a third of a turn apart (+-0.5 rad): no needles, no zero areas."""
    centres = torch.rand(batch, count, 1, 2, generator=generator)
    turn = torch.rand(batch, count, 1, generator=generator) * (2 * math.pi)
    angles = turn + torch.arange(3) * (2 * math.pi / 3) + (torch.rand(batch, count, 3, generator=generator) - 0.5)
    radius = size * max(height, width) / 2 * (0.5 + 0.5 * torch.rand(batch, count, 3, generator=generator))
    offsets = torch.stack([angles.cos() * radius / width, angles.sin() * radius / height], dim=-1)
    return centres + offsets - offsets.mean(dim=2, keepdim=True)  # the centroid is the drawn centre


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
