"""TriangleModel: images in, one Scene of N triangles per image out, in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from ..colours import solve_and_score
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
        self.mirrors = cfg.model.mirrors

    def _renderer(self, device: torch.device) -> Renderer:
        if str(device) not in self._renderers:
            self._renderers[str(device)] = make_renderer(self.draft, device)
        return self._renderers[str(device)]

    @property
    def count(self) -> int:
        return self.head.count + (self.refiner.count if self.refiner is not None else 0)

    def forward(self, images: torch.Tensor) -> Scene:
        """Triangles for (B, 3, H, W) images in [0, 1]."""
        if not self.solve or self.training or images.is_meta:
            return self._predict(images)
        views = MIRRORS[:self.mirrors]
        scene = self._predict(torch.cat([mirrored(images, *view) for view in views]))
        batch = images.shape[0]
        parts = [mirrored_scene(Scene(*(t[i * batch:(i + 1) * batch] for t in scene)), *view)
                 for i, view in enumerate(views)]
        scene = Scene(*(torch.cat(ts) for ts in zip(*parts)))
        scene, error = self._solved(scene, images)
        best = error.view(len(views), batch).argmin(0) * batch + torch.arange(batch, device=error.device)
        return Scene(*(t[best] for t in scene))

    def _predict(self, images: torch.Tensor) -> Scene:
        """The network's triangles, colours as the head gives them."""
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
        return scene

    def _solved(self, scene: Scene, images: torch.Tensor) -> tuple[Scene, torch.Tensor]:
        """The colours (and a learnt background; a configured one stays) that best draw each image
        for the predicted shapes and opacities, by least squares (colours.py), the image downscaled
        to `solve` px on its longer side, and the error of each solved soft drawing there. Scene b
        is solved against image b mod B (the scenes of mirrored views come in blocks of B); one at
        a time, which bounds the memory of the dense coverage weights where the kernel is missing."""
        height, width = images.shape[-2:]
        scale = min(1.0, self.solve / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = images if size == (height, width) else nn.functional.interpolate(
            images, size=size, mode="bilinear", antialias=True, align_corners=False)
        keep = not self.learn_background  # the configured background stays: colours are solved over it
        count = images.shape[0]
        parts = [solve_and_score(Scene(*(t[b:b + 1] for t in scene)), small[b % count:b % count + 1], SOLVE_SIGMA,
                                 keep_background=keep) for b in range(scene.vertices.shape[0])]
        colours = torch.cat([p.colors for p, _ in parts]).to(scene.colors.dtype)
        background = torch.cat([p.background for p, _ in parts]).to(scene.background.dtype)
        return scene._replace(colors=colours, background=background), torch.cat([e for _, e in parts])


MIRRORS = ((False, False), (True, False), (False, True), (True, True))  # (left-right, up-down), in the order tried


def mirrored(images: torch.Tensor, across: bool, down: bool) -> torch.Tensor:
    """(B, 3, H, W) images mirrored left-right (`across`) and/or up-down (`down`)."""
    dims = [d for d, flip in ((-1, across), (-2, down)) if flip]
    return images.flip(dims) if dims else images


def mirrored_scene(scene: Scene, across: bool, down: bool) -> Scene:
    """The scene mirrored as `mirrored` mirrors an image (coordinates are shares of the sides):
    the prediction of a mirrored image, mapped back onto the image."""
    vertices = scene.vertices
    if across:
        vertices = torch.stack([1 - vertices[..., 0], vertices[..., 1]], -1)
    if down:
        vertices = torch.stack([vertices[..., 0], 1 - vertices[..., 1]], -1)
    return scene._replace(vertices=vertices)


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
