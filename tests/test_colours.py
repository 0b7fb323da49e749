"""Colours in closed form: the compositing weights reproduce the dense renderer, and the solved
colours of a scene drawn by it are its own."""

from __future__ import annotations

import torch

from triangulate_ai.colours import compositing_weights, solve_colours
from triangulate_ai.raster.reference import ReferenceRenderer
from triangulate_ai.raster.scene import Scene


def _scene(seed: int = 0, batch: int = 2, count: int = 12) -> Scene:
    g = torch.Generator().manual_seed(seed)
    return Scene(torch.rand(batch, count, 3, 2, generator=g, dtype=torch.float64),
                 torch.rand(batch, count, 3, generator=g, dtype=torch.float64),
                 0.5 + 0.5 * torch.rand(batch, count, generator=g, dtype=torch.float64),
                 torch.rand(batch, 3, generator=g, dtype=torch.float64))


def test_the_weights_reproduce_the_reference_render():
    scene = _scene()
    image = ReferenceRenderer(0.5)(scene, 24, 32)
    weights = compositing_weights(scene, 24, 32, 0.5)  # (B, T + 1, P)
    colours = torch.cat([scene.colors, scene.background[:, None]], dim=1)
    drawn = (weights.transpose(1, 2) @ colours).transpose(1, 2).reshape(image.shape)
    assert torch.allclose(drawn, image, atol=1e-12)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 24 * 32, dtype=torch.float64))  # a partition of each pixel


def test_solved_colours_redraw_a_target_drawn_with_the_same_shapes():
    scene = _scene(1)
    target = ReferenceRenderer(0.5)(scene, 24, 32)
    grey = scene._replace(colors=torch.full_like(scene.colors, 0.5), background=torch.full_like(scene.background, 0.5))
    solved = solve_colours(grey, target, 0.5, ridge=1e-9)
    assert torch.allclose(ReferenceRenderer(0.5)(solved, 24, 32), target, atol=1e-5)
    assert torch.equal(solved.vertices, scene.vertices) and torch.equal(solved.opacity, scene.opacity)
