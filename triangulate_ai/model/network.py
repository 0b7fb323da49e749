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
        colours = None
        if self.head.sampled:  # read at twice the encoder's resolution, smoothed by the downscale
            side = 2 * self.input_size
            colours = images if images.shape[-1] <= side and images.shape[-2] <= side else nn.functional.interpolate(
                images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        scene = self.head(self.encoder(x), colours)
        if not self.learn_background:
            scene = scene._replace(background=resolve_background(self.background, images))
        return scene


def memory_bytes(cfg: ModelRunConfig, batch: int, training: bool) -> int:
    """Peak memory of the network on `batch` images: its parameters and buffers (in training also
    their gradients and AdamW's two moments), the resized input, and the layers' outputs (all of
    them, kept for the backward pass, in training; two at a time in inference). Measured on a
    build on the meta device: checking a config that asks for terabytes allocates nothing."""
    outputs: list[int] = []

    def count(module: nn.Module, inputs, output) -> None:
        tensors = output if isinstance(output, (list, tuple)) else [output]
        outputs.append(sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t)))

    side = cfg.model.input_size
    with torch.device("meta"):
        model = TriangleModel(cfg, load_weights=False).train(training)
        for module in model.modules():
            if not list(module.children()):
                module.register_forward_hook(count)
        model(torch.zeros(batch, 3, side, side))
    stored = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    learnt = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = sum(outputs) if training else 2 * max(outputs, default=0)
    return stored + (3 * learnt if training else 0) + 4 * batch * 3 * side * side + activations
