"""The triangle head: feature maps in, N valid triangles per image out, in painter's order.

Each of the N slots has a fixed anchor on the canvas (a low-discrepancy point set, so every
prefix of the slots is spread evenly) and a prior size that shrinks along the paint order
(coarse triangles first, detail on top, as a per-image fit ends up). A slot reads the features at
its anchor, and the global features, and predicts its triangle's shape; its colour and opacity
are read from the features where the triangle landed.

Valid by construction, whatever the weights:
  shape    vertex k of a unit triangle at angle 2 pi k / 3 + d_k, |d_k| < 0.5 (every interior
           angle gap < pi, so its area is >= 0.9), scaled by (sx, sy) in [min_size, max_size] and
           rotated: area >= 0.9 min_size^2 of the canvas, never degenerate;
  position the centre is squashed into the interval that keeps all three vertices on the canvas
           ([0, 1] on both axes; max_size < 0.5 keeps that interval non-empty);
  colours, opacity and background go through sigmoids.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..raster.scene import Scene
from .config import HeadConfig

R2 = (0.7548776662466927, 0.5698402909980532)  # the R2 sequence's steps (Roberts 2018): 1/phi2, 1/phi2^2
SHAPE_SPREAD = 0.5  # largest angular offset of a unit triangle's vertex (rad)


def anchors(count: int) -> torch.Tensor:
    """(count, 2) points in (0, 1)^2, evenly spread for every prefix of the sequence."""
    t = torch.arange(count, dtype=torch.float64)[:, None]
    return ((0.5 + t * torch.tensor(R2, dtype=torch.float64)) % 1.0).float()


def prior_sizes(count: int, low: float, high: float) -> torch.Tensor:
    """(count,) starting sizes: N triangles of size r cover the canvas about once at
    r = 1 / sqrt(N); the first slots start at twice that, the last at half."""
    base = 1.0 / math.sqrt(count)
    ramp = torch.linspace(1.0, -1.0, count) if count > 1 else torch.zeros(1)
    return (base * 2.0 ** ramp).clamp(low + 1e-3 * (high - low), high - 1e-3 * (high - low))


def interior_points(order: int = 7) -> torch.Tensor:
    """(K, 3) barycentric weights of the interior points of a triangle's lattice of `order`
    (every point with all three weights >= 1 / order): K = (order - 1)(order - 2) / 2, spread
    evenly over the triangle and away from its edges."""
    points = [(i, j, order - i - j) for i in range(1, order) for j in range(1, order - i)]
    return torch.tensor(points, dtype=torch.float32) / order


def mean_under(image: torch.Tensor, vertices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, N, 3): the mean of `image` (B, 3, h, w) at the points `weights` (K, 3) of every triangle
    (B, N, 3, 2), bilinear: differentiable in the vertices."""
    points = torch.einsum("kv,bnvc->bnkc", weights.to(vertices), vertices)  # (B, N, K, 2)
    batch, count, k, _ = points.shape
    grid = points.reshape(batch, count * k, 1, 2) * 2 - 1
    sampled = nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[..., 0].reshape(batch, 3, count, k).mean(dim=-1).transpose(1, 2)


def _sample(maps: list[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """Features (B, N, sum C) of every map at normalised points (B, N, 2), bilinear."""
    grid = points[:, :, None, :] * 2 - 1
    return torch.cat([nn.functional.grid_sample(m, grid, mode="bilinear", padding_mode="border",
                                                align_corners=False)[..., 0].transpose(1, 2) for m in maps], dim=-1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two layers; the last starts near zero so the first predictions are the priors."""
    last = nn.Linear(hidden, outputs)
    with torch.no_grad():
        last.weight.mul_(0.01)
        last.bias.zero_()
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True), last)


class TriangleHead(nn.Module):
    """The slots `first` to `first + count` of a model of `total` triangles (all of them by
    default): their anchors and prior sizes are those slots' of the whole sequence."""

    def __init__(self, channels: list[int], count: int, cfg: HeadConfig, first: int = 0,
                 total: int | None = None) -> None:
        super().__init__()
        total = count + first if total is None else total
        slots = slice(first, first + count)
        self.count, self.min_size, self.max_size = count, cfg.min_size, cfg.max_size
        self.sampled = cfg.colour == "sampled"
        self.register_buffer("interior", interior_points(), persistent=False)
        self.register_buffer("anchor_logits", torch.logit(anchors(total)[slots]))
        prior = (prior_sizes(total, cfg.min_size, cfg.max_size) - cfg.min_size) / (cfg.max_size - cfg.min_size)
        self.register_buffer("size_logits", torch.logit(prior[slots]))
        generator = torch.Generator().manual_seed(total)  # fixed per count: part of the architecture
        self.register_buffer("turns", (torch.rand(total, generator=generator) * (2 * math.pi))[slots])
        self.opacity_logit = math.log(cfg.opacity / (1 - cfg.opacity))
        self.embedding = nn.Parameter(0.1 * torch.randn(count, cfg.embedding)) if cfg.embedding else None
        features, pooled = sum(channels), channels[-1]
        self.geometry = _mlp(features + pooled + cfg.embedding, cfg.hidden, 8)  # centre 2, size 2, turn 1, shape 3
        self.appearance = _mlp(features + cfg.hidden, cfg.hidden, 4)  # colour 3, opacity 1
        self.background = _mlp(pooled, cfg.hidden, 3)

    def forward(self, maps: list[torch.Tensor], image: torch.Tensor | None = None) -> Scene:
        """Triangles from the encoder's maps; with colour: sampled, `image` (B, 3, h, w) in [0, 1]
        is what the colours are read from."""
        batch = maps[0].shape[0]
        pooled = maps[-1].mean(dim=(2, 3))
        anchor = torch.sigmoid(self.anchor_logits).expand(batch, -1, -1)
        inputs = [_sample(maps, anchor), pooled[:, None].expand(-1, self.count, -1)]
        if self.embedding is not None:
            inputs.append(self.embedding.expand(batch, -1, -1))
        hidden = self.geometry[1](self.geometry[0](torch.cat(inputs, dim=-1)))
        raw = self.geometry[2](hidden)
        vertices = self.place(raw)
        centroid = vertices.mean(dim=2)
        look = self.appearance(torch.cat([_sample(maps, centroid), hidden], dim=-1))
        if self.sampled:  # the image's own colour under the triangle, corrected (the correction starts at 0)
            mean = mean_under(image, vertices, self.interior).clamp(1e-3, 1 - 1e-3)
            colors = torch.sigmoid(torch.logit(mean) + look[..., :3])
        else:
            colors = torch.sigmoid(look[..., :3])
        opacity = torch.sigmoid(look[..., 3] + self.opacity_logit)
        background = torch.sigmoid(self.background(pooled))
        return Scene(vertices, colors, opacity, background)

    def place(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, 2) vertices on the canvas from (B, N, 8) raw outputs (see the module doc)."""
        low, span = self.min_size, self.max_size - self.min_size
        size = low + span * torch.sigmoid(raw[..., 2:4] + self.size_logits[:, None])  # (B, N, 2): sx, sy
        turn = self.turns + raw[..., 4]
        angles = torch.arange(3, device=raw.device) * (2 * math.pi / 3) + SHAPE_SPREAD * torch.tanh(raw[..., 5:8])
        unit = torch.stack([angles.cos(), angles.sin()], dim=-1) * size[:, :, None, :]  # (B, N, 3, 2)
        cos, sin = turn.cos()[..., None], turn.sin()[..., None]
        offsets = torch.stack([cos * unit[..., 0] - sin * unit[..., 1], sin * unit[..., 0] + cos * unit[..., 1]], -1)
        lowest = -offsets.min(dim=2).values  # the centre's range on each axis keeps every vertex in [0, 1]
        highest = 1 - offsets.max(dim=2).values
        centre = lowest + (highest - lowest) * torch.sigmoid(self.anchor_logits + raw[..., :2])
        return (centre[:, :, None, :] + offsets).clamp(0.0, 1.0)  # the clamp only absorbs rounding
