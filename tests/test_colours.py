"""Colours in closed form: the compositing weights reproduce the dense renderer, and the solved
colours of a scene drawn by it are its own; the C++ kernel's normal equations are the dense
weights' ones, and the error it reports is the solved drawing's."""

from __future__ import annotations

import pytest
import torch

from triangulate_ai.colours import compositing_weights, normal_equations, solve_and_score, solve_colours
from triangulate_ai.raster.fused import unavailable_reason
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


@pytest.mark.skipif(unavailable_reason() is not None, reason="the C++ kernel is not built here")
def test_the_kernel_gives_the_dense_normal_equations():
    scene = _scene(2, count=20)
    verts = scene.vertices.clone()
    verts[0, 3] = torch.tensor([[1.6, 1.5], [1.9, 1.7], [1.8, 2.0]])  # far off the canvas: no weight anywhere
    verts[1, 5, 2] = verts[1, 5, 0]  # zero area: no inside, a sliver of coverage along its edge
    scene = scene._replace(vertices=verts)
    target = torch.rand(2, 3, 24, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    gram, rhs = normal_equations(scene, target, 0.5)  # no gradient wanted: the kernel
    weights = compositing_weights(scene, 24, 32, 0.5)
    dense_gram = weights @ weights.transpose(1, 2)
    dense_rhs = weights @ target.reshape(2, 3, -1).transpose(1, 2)
    # the kernel leaves out coverage below 1e-6 per pixel, as the renderers do
    assert torch.allclose(gram, dense_gram, atol=1e-4) and torch.allclose(rhs, dense_rhs, atol=1e-4)
    assert gram[0, 3].abs().max() == 0 and gram[0, :, 3].abs().max() == 0
    assert torch.allclose(gram.sum((1, 2)), torch.full((2,), 24.0 * 32, dtype=torch.float64))  # weights sum to 1


@pytest.mark.skipif(unavailable_reason() is not None, reason="the C++ kernel is not built here")
def test_the_kernel_counts_pixels_under_every_triangle():
    """Every triangle covers the whole canvas, so each pixel has T + 1 weights (the most there can be)."""
    g = torch.Generator().manual_seed(9)
    verts = torch.tensor([[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]], dtype=torch.float64).expand(1, 6, 3, 2)
    scene = Scene(verts.contiguous(), torch.rand(1, 6, 3, generator=g, dtype=torch.float64),
                  0.2 + 0.6 * torch.rand(1, 6, generator=g, dtype=torch.float64),
                  torch.rand(1, 3, generator=g, dtype=torch.float64))
    target = torch.rand(1, 3, 8, 10, generator=g, dtype=torch.float64)
    gram, rhs = normal_equations(scene, target, 0.5)
    weights = compositing_weights(scene, 8, 10, 0.5)
    assert bool((weights > 0).all())
    assert torch.allclose(gram, weights @ weights.transpose(1, 2), atol=1e-9)
    assert torch.allclose(rhs, weights @ target.reshape(1, 3, -1).transpose(1, 2), atol=1e-9)


def test_the_kernel_and_the_dense_weights_solve_alike_and_gradients_take_the_dense_path():
    scene = _scene(4)
    target = torch.rand(2, 3, 24, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    fast = solve_colours(scene, target, 0.5)
    verts = scene.vertices.clone().requires_grad_()
    slow = solve_colours(scene._replace(vertices=verts), target, 0.5)  # a gradient is wanted: dense weights
    slow.colors.sum().backward()
    assert verts.grad is not None and torch.isfinite(verts.grad).all()
    assert torch.allclose(fast.colors, slow.colors.detach(), atol=1e-4)


def test_the_reported_error_is_the_solved_drawings():
    scene = _scene(6)
    target = torch.rand(2, 3, 24, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    solved, error = solve_and_score(scene, target, 0.5)
    drawn = ReferenceRenderer(0.5)(solved, 24, 32)
    assert torch.allclose(error, ((drawn - target) ** 2).mean((1, 2, 3)), rtol=1e-4)


def test_a_kept_background_stays_and_the_colours_are_solved_over_it():
    scene = _scene(8)
    target = ReferenceRenderer(0.5)(scene, 24, 32)
    grey = scene._replace(colors=torch.full_like(scene.colors, 0.5))  # the true background, grey triangles
    solved, error = solve_and_score(grey, target, 0.5, ridge=1e-9, keep_background=True)
    assert torch.equal(solved.background, scene.background)
    assert torch.allclose(ReferenceRenderer(0.5)(solved, 24, 32), target, atol=1e-5) and error.max() < 1e-9
    wrong = grey._replace(background=1 - scene.background)  # kept even when another would fit better
    solved, error = solve_and_score(wrong, target, 0.5, keep_background=True)
    assert torch.equal(solved.background, wrong.background)
    drawn = ReferenceRenderer(0.5)(solved, 24, 32)
    assert torch.allclose(error, ((drawn - target) ** 2).mean((1, 2, 3)), rtol=1e-4)
