"""Geometric regulariser on triangles, added to the total outside the balancer.

It keeps the exported picture honest: near-zero-area and needle-thin triangles are drawn by the
soft renderer but not by an SVG viewer, and vertices far off the canvas waste triangles. It is
not an image loss, so balancers (which rescale image losses against each other) never see it;
its weight is set directly (and can be scheduled as `regularizer.weight`).

    area:    mean relu(1 - A / min_area)^2              (A in square pixels)
    thin:    mean relu(1 - q / min_quality)^2           (q = 4 sqrt(3) A / sum of squared edges:
                                                         1 for equilateral, 0 for degenerate)
    outside: mean over vertices of (distance beyond the canvas grown by `margin`)^2,
             in canvas units
"""

from __future__ import annotations

import math

import torch

from .config import RegularizerConfig


class TriangleRegularizer:
    def __init__(self, cfg: RegularizerConfig) -> None:
        self.weight, self.min_area = cfg.weight, cfg.min_area
        self.min_quality, self.margin = cfg.min_quality, cfg.margin

    def __call__(self, vertices: torch.Tensor, height: int, width: int, live: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Penalty (unweighted) per scene, (B,), for normalised vertices (B, T, 3, 2); triangles
        where `live` (B, T) is False (parked, not yet placed) are left out."""
        px = vertices * vertices.new_tensor([width, height])
        a, b, c = px[..., 0, :], px[..., 1, :], px[..., 2, :]
        ab, ac, bc = b - a, c - a, c - b
        area = 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]).abs()
        edges = (ab**2).sum(-1) + (ac**2).sum(-1) + (bc**2).sum(-1)
        quality = 4 * math.sqrt(3) * area / edges.clamp_min(1e-12)
        weight = torch.ones_like(area) if live is None else live.to(area)
        count = weight.sum(dim=1).clamp_min(1)
        area_term = (torch.relu(1 - area / self.min_area).square() * weight).sum(dim=1) / count
        thin_term = (torch.relu(1 - quality / self.min_quality).square() * weight).sum(dim=1) / count
        beyond = torch.relu(-vertices - self.margin) + torch.relu(vertices - 1 - self.margin)
        outside = (beyond.square().sum(-1).mean(dim=-1) * weight).sum(dim=1) / count
        return area_term + thin_term + outside
