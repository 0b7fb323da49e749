"""TriangleSet: the learnable parameters, and their mapping to a renderable Scene."""

from __future__ import annotations

import torch
from torch import nn

from .raster.scene import Scene

_EDGE = 1e-4  # probabilities are clamped this far from 0 and 1 before taking logits


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(_EDGE, 1 - _EDGE))


class TriangleSet(nn.Module):
    """B scenes of T triangles: positions are free, colour and opacity go through sigmoids.

    Positions are normalised image coordinates (x over the width, y over the height, both in
    [0, 1] on canvas) and are not squashed, so a triangle may leave the canvas. Painter's order is
    the index: triangle t is drawn over triangles 0..t-1. The background is learnable or fixed.
    """

    def __init__(self, vertices: torch.Tensor, colors: torch.Tensor, opacity: torch.Tensor,
                 background: torch.Tensor, learn_background: bool = False) -> None:
        super().__init__()
        batch, count = vertices.shape[:2]
        if vertices.shape != (batch, count, 3, 2) or colors.shape != (batch, count, 3):
            raise ValueError(f"expected vertices (B, T, 3, 2) and colors (B, T, 3), got "
                             f"{tuple(vertices.shape)} and {tuple(colors.shape)}")
        if opacity.shape != (batch, count) or background.shape != (batch, 3):
            raise ValueError(f"expected opacity (B, T) and background (B, 3), got "
                             f"{tuple(opacity.shape)} and {tuple(background.shape)}")
        self.positions = nn.Parameter(vertices.clone())
        self.color_logits = nn.Parameter(_logit(colors))
        self.opacity_logits = nn.Parameter(_logit(opacity))
        self.learn_background = learn_background
        if learn_background:
            self.background_logits = nn.Parameter(_logit(background))
        else:
            self.register_buffer("fixed_background", background.clone())

    @classmethod
    def cat(cls, sets: list["TriangleSet"]) -> "TriangleSet":
        """One set of B1 + B2 + ... scenes, each scene's parameters copied exactly (no round trip
        through probabilities), so scene b starts as it would alone."""
        first = sets[0]
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.learn_background = first.learn_background
        for name, _ in first.named_parameters(recurse=False):
            setattr(out, name, nn.Parameter(torch.cat([getattr(s, name).detach() for s in sets])))
        for name, _ in first.named_buffers(recurse=False):
            out.register_buffer(name, torch.cat([getattr(s, name) for s in sets]))
        return out

    @property
    def batch_size(self) -> int:
        return self.positions.shape[0]

    @property
    def count(self) -> int:
        return self.positions.shape[1]

    @property
    def colors(self) -> torch.Tensor:
        return torch.sigmoid(self.color_logits)

    @property
    def opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def background(self) -> torch.Tensor:
        if self.learn_background:
            return torch.sigmoid(self.background_logits)
        return self.fixed_background

    def scene(self) -> Scene:
        return Scene(self.positions, self.colors, self.opacity, self.background)

    def param_groups(self, lr: dict[str, float]) -> list[dict]:
        """Adam parameter groups, one learning rate per kind of parameter."""
        groups = [
            {"name": "positions", "params": [self.positions], "lr": lr["positions"]},
            {"name": "colors", "params": [self.color_logits], "lr": lr["colors"]},
            {"name": "opacity", "params": [self.opacity_logits], "lr": lr["opacity"]},
        ]
        if self.learn_background:
            groups.append({"name": "background", "params": [self.background_logits], "lr": lr["background"]})
        return groups
