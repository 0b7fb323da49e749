"""Respawn and progressive placement: triangles that add nothing move to where the error is.

A triangle is dead when its colour reaches fewer than `min_contribution` pixel-equivalents of
the picture, or fewer than `min_share` of the mean area per triangle if that is more (the sum
over pixels of its compositing weight alpha x transmittance above it, which is d sum(image) / d
colour: one extra backward pass measures it for every renderer), or when its area is below
`min_area` square pixels. Dead triangles (and, in progressive mode, the next batch of parked
ones) are placed where they remove most error (the best of `candidates` random triangles drawn
around the blurred error map, with the colour that fills each best: placement.py; on a copy of
at most `placement_side` pixels on its longer side), on top of the paint order, and with their
Adam moments reset, as 3D Gaussian Splatting does when it densifies.
This is part of the loop (it changes parameters between steps), and deterministic for a seed:
its random generator travels in the checkpoint.
"""

from __future__ import annotations

import math

import torch

from .config import Config
from .init import PARKED
from .placement import best_triangles
from .raster import Scene
from .raster.base import Renderer
from .triangles import TriangleSet, _logit

PER_TRIANGLE = ("positions", "color_logits", "opacity_logits")  # parameters with a triangle axis (dim 1)


class Densifier:
    def __init__(self, cfg: Config, triangles: TriangleSet, seeds: list[int]) -> None:
        self.respawn = cfg.respawn
        self.opacity = cfg.triangles.opacity
        # one stream per scene, apart from the initialisation's, so scene b draws what it would alone
        self.generators = [torch.Generator().manual_seed(seed + 7919) for seed in seeds]
        self.parked = (triangles.positions.detach() == PARKED).flatten(2).all(-1).cpu()  # (B, T)
        # progressive placement: of the progressive init's parked triangles, or of those a model's start
        # leaves over (triangles.count past the model's), from the count placed at the start
        placing = cfg.triangles.init == "progressive" or bool(self.parked.any())
        self.progressive = cfg.triangles.progressive if placing else None
        self.placed_at_start = int((~self.parked).sum(dim=1).min()) if self.parked.numel() else 0

    @property
    def active(self) -> bool:
        return self.respawn.enabled or self.progressive is not None

    def due(self, step: int, progress: float) -> bool:
        """Whether an event runs after step `step` (0-based) at budget share `progress`."""
        done = step + 1
        placing = self.progressive is not None and bool(self.parked.any()) and done % self.progressive.every == 0
        respawning = self.respawn.enabled and progress < self.respawn.until and done % self.respawn.every == 0
        return placing or respawning

    def wanted_active(self, progress: float) -> int:
        """Triangles in play at this share of the budget (progressive): linear from the start."""
        count = self.parked.shape[1]
        first = max(1, self.placed_at_start)
        share = min(progress / self.progressive.until, 1.0)
        return min(count, first + math.ceil((count - first) * share))

    def __call__(self, triangles: TriangleSet, optimizer: torch.optim.Optimizer, renderer: Renderer,
                 target: torch.Tensor, progress: float, active: torch.Tensor | None = None,
                 scale: float = 1.0) -> list[int]:
        """One event: pick the slots per scene, place new triangles there, move them on top.
        Returns how many moved in each scene (stopped scenes, `active` False, are left alone).
        `target` is at the working resolution, `scale` times the image's sides: the thresholds in
        pixels of the image (min_contribution, min_area) shrink with it."""
        height, width = target.shape[-2:]
        with torch.no_grad():
            render, contribution = _render_with_contribution(triangles, renderer, height, width)
            area = _areas(triangles.positions.detach() * triangles.positions.new_tensor([width, height]))
        # weak is relative to what a triangle could cover: the same share means more pixels when
        # there are fewer triangles
        threshold = max(self.respawn.min_contribution * scale ** 2,
                        self.respawn.min_share * height * width / triangles.count)
        min_area = self.respawn.min_area * scale ** 2
        slots = []
        for b in range(triangles.batch_size):
            chosen = []
            if active is not None and not bool(active[b]):
                slots.append(torch.zeros(0, dtype=torch.long, device="cpu"))
                continue
            if self.respawn.enabled and progress < self.respawn.until:
                dead = ~self.parked[b] & ((contribution[b] < threshold)
                                          | (area[b] < min_area)).cpu()
                limit = max(1, int(self.respawn.max_share * triangles.count))
                order = torch.argsort(contribution[b].cpu()[dead], stable=True)[:limit]
                chosen.append(torch.nonzero(dead).flatten()[order])
            if self.progressive is not None:
                bring = self.wanted_active(progress) - int((~self.parked[b]).sum())
                chosen.append(torch.nonzero(self.parked[b]).flatten()[:max(bring, 0)])
            slots.append(torch.cat(chosen).unique() if chosen else torch.zeros(0, dtype=torch.long, device="cpu"))
        moved = [len(s) for s in slots]
        if sum(moved):
            self._place(triangles, optimizer, render, target, slots)
        return moved

    def _place(self, triangles: TriangleSet, optimizer: torch.optim.Optimizer, render: torch.Tensor,
               target: torch.Tensor, slots: list[torch.Tensor]) -> None:
        height, width = target.shape[-2:]
        shrink = self.respawn.placement_side / max(height, width)
        if shrink < 1:  # positions are shares of the sides: placing on a smaller copy places on the image
            height, width = max(1, round(height * shrink)), max(1, round(width * shrink))
            render, target = (torch.nn.functional.interpolate(t, size=(height, width), mode="area")
                              for t in (render, target))
        count = triangles.count
        side = self.respawn.size * math.sqrt(height * width / count)  # pixels
        error = (render - target).abs().mean(dim=1, keepdim=True)
        radius = self.respawn.error_blur
        density = error if radius == 0 else torch.nn.functional.avg_pool2d(
            error, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
        order = torch.arange(count, device="cpu").expand(triangles.batch_size, count).clone()
        fresh = torch.zeros(triangles.batch_size, count, dtype=torch.bool, device="cpu")
        params = {name: getattr(triangles, name) for name in PER_TRIANGLE}
        device, dtype = params["positions"].device, params["positions"].dtype
        scale = torch.tensor([width, height], dtype=torch.float64, device="cpu")
        for b, idx in enumerate(slots):
            if not len(idx):
                continue
            corners, colours = best_triangles(
                render[b].detach().double().cpu(), target[b].double().cpu(),
                density[b, 0].double().cpu().pow(self.respawn.error_power), len(idx), side, self.opacity,
                self.respawn.candidates, self.generators[b])
            with torch.no_grad():
                params["positions"][b, idx.to(device)] = (corners / scale).to(device=device, dtype=dtype)
                params["color_logits"][b, idx.to(device)] = _logit(colours.to(device=device, dtype=dtype))
                params["opacity_logits"][b, idx.to(device)] = _logit(
                    torch.full((len(idx),), self.opacity, device=device, dtype=dtype))
            keep = torch.ones(count, dtype=torch.bool, device="cpu")
            keep[idx] = False
            order[b] = torch.cat([torch.nonzero(keep).flatten(), idx])  # placed ones go on top
            fresh[b, count - len(idx):] = True
            self.parked[b, idx] = False
            self.parked[b] = self.parked[b][order[b]]
        _reorder(params, optimizer, order, fresh)

    def state_dict(self) -> dict:
        """Per-scene rows: the random streams' states (B, S) and the parked mask (B, T)."""
        return {"generators": torch.stack([g.get_state() for g in self.generators]), "parked": self.parked.clone()}

    def load_state_dict(self, state: dict) -> None:
        for generator, row in zip(self.generators, state["generators"].cpu()):
            generator.set_state(row.clone())
        self.parked = state["parked"].cpu().clone()


def _render_with_contribution(triangles: TriangleSet, renderer: Renderer, height: int, width: int):
    """The render and each triangle's contribution (B, T): d sum(red channel) / d red colour."""
    scene = triangles.scene()
    colors = scene.colors.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        render = renderer(Scene(scene.vertices.detach(), colors, scene.opacity.detach(), scene.background.detach()),
                          height, width)
        (grad,) = torch.autograd.grad(render[:, 0].sum(), colors)
    return render.detach(), grad[..., 0]


def _areas(px: torch.Tensor) -> torch.Tensor:
    ab, ac = px[..., 1, :] - px[..., 0, :], px[..., 2, :] - px[..., 0, :]
    return 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]).abs()


def _reorder(params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, order: torch.Tensor,
             fresh: torch.Tensor) -> None:
    """Permute every per-triangle parameter and its Adam moments by `order` (B, T), and zero the
    moments of the `fresh` (new) triangles, so old momentum does not push them around."""
    for param in params.values():
        index = order.to(param.device).reshape(*order.shape, *[1] * (param.dim() - 2)).expand_as(param)
        mask = fresh.to(param.device).reshape(*fresh.shape, *[1] * (param.dim() - 2))
        with torch.no_grad():
            param.copy_(param.gather(1, index))
        for key, value in optimizer.state.get(param, {}).items():
            if torch.is_tensor(value) and value.shape == param.shape:
                value.copy_(value.gather(1, index).masked_fill(mask, 0))
