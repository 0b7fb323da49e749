"""TriangleModel: images in, one Scene of N triangles per image out, in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from ..init import resolve_background
from ..raster.scene import Scene
from .config import ModelRunConfig
from .encoder import build_encoder
from .head import TriangleHead


class TriangleModel(nn.Module):
    """Encoder -> triangle head. Any image size goes in: the encoder sees it resized to
    `model.input_size` squared, and the triangles come out in normalised coordinates, so they
    cover the image whatever its size. The background is predicted when
    `triangles.learn_background`, else it is `triangles.background` of each image."""

    def __init__(self, cfg: ModelRunConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.input_size = cfg.model.input_size
        self.encoder = build_encoder(cfg.model.encoder, load_weights)
        self.head = TriangleHead(self.encoder.channels, cfg.triangles.count, cfg.model.head)
        self.learn_background = cfg.triangles.learn_background
        self.background = cfg.triangles.background

    @property
    def count(self) -> int:
        return self.head.count

    def forward(self, images: torch.Tensor) -> Scene:
        """Triangles for (B, 3, H, W) images in [0, 1]."""
        x = images
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                          antialias=True, align_corners=False)
        scene = self.head(self.encoder(x))
        if not self.learn_background:
            scene = scene._replace(background=resolve_background(self.background, images))
        return scene
