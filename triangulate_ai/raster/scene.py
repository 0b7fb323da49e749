"""The data every renderer draws: plain tensors, no parameters or activations."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Scene(NamedTuple):
    """B scenes of T triangles, painted in index order (triangle T-1 on top).

    vertices:   (B, T, 3, 2) in normalised image coordinates: x in [0, 1] spans the width,
                y in [0, 1] spans the height (row 0 at the top); values outside are off-canvas.
    colors:     (B, T, 3) RGB in [0, 1].
    opacity:    (B, T) in [0, 1].
    background: (B, 3) RGB in [0, 1].

    Example:
        >>> import torch
        >>> scene = Scene(torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]]), torch.ones(1, 1, 3),
        ...               torch.ones(1, 1), torch.zeros(1, 3))
        >>> scene.to_pixels(100, 200)[0, 0].tolist()
        [[0.0, 0.0], [200.0, 0.0], [0.0, 100.0]]
    """

    vertices: torch.Tensor
    colors: torch.Tensor
    opacity: torch.Tensor
    background: torch.Tensor

    def to_pixels(self, height: int, width: int) -> torch.Tensor:
        """Vertices in pixel units (x right, y down; pixel (i, j) has its centre at (j+.5, i+.5))."""
        scale = self.vertices.new_tensor([width, height])
        return self.vertices * scale
