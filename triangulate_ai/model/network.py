"""TriangleModel: images in, one Scene of N triangles per image out, in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from ..colours import solve_colours
from ..config import RenderConfig
from ..init import resolve_background
from ..raster import Renderer, make_renderer
from ..raster.scene import Scene
from .config import ModelRunConfig
from .encoder import build_encoder
from .head import TriangleHead

DRAFT_SIGMA = 0.5  # pixels of the encoder-sized drawing the second stage sees
SOLVE_SIGMA = 0.3  # pixels: coverage edges close to the hard, anti-aliased ones of the exported drawing


class TriangleModel(nn.Module):
    """Encoder -> triangle head. Any image size goes in: the encoder sees it resized to
    `model.input_size` squared, and the triangles come out in normalised coordinates, so they
    cover the image whatever its size. The background is predicted when
    `triangles.learn_background`, else it is `triangles.background` of each image.

    With `model.refine: R`, the last R triangles come from a second stage, painted over the first
    stage's: its encoder reads the image, the first stage's soft drawing at the encoder's size
    and their difference, so it can put triangles where the first stage left error (the
    iterative idea of Paint Transformer and Learning to Paint, in two steps)."""

    def __init__(self, cfg: ModelRunConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.input_size = cfg.model.input_size
        total, refine = cfg.triangles.count, cfg.model.refine
        self.encoder = build_encoder(cfg.model.encoder, load_weights)
        self.head = TriangleHead(self.encoder.channels, total - refine, cfg.model.head, total=total)
        self.refiner = None
        if refine:
            self.refine_encoder = build_encoder(cfg.model.encoder, load_weights=False, inputs=9)
            self.refiner = TriangleHead(self.refine_encoder.channels, refine, cfg.model.head, first=total - refine,
                                        total=total)
            self.draft = RenderConfig(backend=cfg.render.backend, sigma=DRAFT_SIGMA)
            self._renderers: dict[str, Renderer] = {}  # one per device the model runs on
        self.learn_background = cfg.triangles.learn_background
        self.background = cfg.triangles.background
        self.solve = cfg.model.solve

    def _renderer(self, device: torch.device) -> Renderer:
        if str(device) not in self._renderers:
            self._renderers[str(device)] = make_renderer(self.draft, device)
        return self._renderers[str(device)]

    @property
    def count(self) -> int:
        return self.head.count + (self.refiner.count if self.refiner is not None else 0)

    def forward(self, images: torch.Tensor) -> Scene:
        """Triangles for (B, 3, H, W) images in [0, 1]."""
        side = self.input_size
        x = images
        if tuple(x.shape[-2:]) != (side, side):
            x = nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        colours = None
        if self.head.sampled:  # read at twice the encoder's resolution, smoothed by the downscale
            colours = images if images.shape[-1] <= 2 * side and images.shape[-2] <= 2 * side else \
                nn.functional.interpolate(images, size=(2 * side, 2 * side), mode="bilinear", antialias=True,
                                          align_corners=False)
        scene = self.head(self.encoder(x), colours)
        if not self.learn_background:
            scene = scene._replace(background=resolve_background(self.background, images))
        if self.refiner is not None:
            # on the meta device (memory estimates) there is no kernel to draw with: only the shape counts
            draft = torch.zeros_like(x) if x.is_meta else self._renderer(x.device)(scene, side, side)
            more = self.refiner(self.refine_encoder(torch.cat([x, draft, x - draft], dim=1)), colours)
            scene = Scene(torch.cat([scene.vertices, more.vertices], 1), torch.cat([scene.colors, more.colors], 1),
                          torch.cat([scene.opacity, more.opacity], 1), scene.background)
        if self.solve and not self.training and not images.is_meta:
            scene = self._solved(scene, images)
        return scene

    def _solved(self, scene: Scene, images: torch.Tensor) -> Scene:
        """The colours (and a learnt background) that best draw each image for the predicted shapes
        and opacities, by least squares (colours.py), the image downscaled to `solve` px on its
        longer side; one image at a time, which bounds the memory of the coverage weights."""
        height, width = images.shape[-2:]
        scale = min(1.0, self.solve / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = images if size == (height, width) else nn.functional.interpolate(
            images, size=size, mode="bilinear", antialias=True, align_corners=False)
        parts = [solve_colours(Scene(*(t[b:b + 1] for t in scene)), small[b:b + 1], SOLVE_SIGMA)
                 for b in range(images.shape[0])]
        colours = torch.cat([p.colors for p in parts])
        background = torch.cat([p.background for p in parts]) if self.learn_background else scene.background
        return scene._replace(colors=colours, background=background)


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
    inputs = 3 + (3 + 9 if cfg.model.refine else 0)  # the resized image; the draft and the refiner's 9 channels
    return stored + (3 * learnt if training else 0) + 4 * batch * inputs * side * side + activations
