"""TriangleSet and initialisers."""

from __future__ import annotations

import pytest
import torch

from triangulate_ai.config import TrianglesConfig
from triangulate_ai.init import initial_triangles, resolve_background, sample_colors
from triangulate_ai.triangles import TriangleSet


def _target(batch=2, height=20, width=30):
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def test_values_round_trip_through_sigmoids():
    colors = torch.tensor([[[0.2, 0.5, 0.9]]])
    tris = TriangleSet(torch.zeros(1, 1, 3, 2), colors, torch.tensor([[0.3]]), torch.tensor([[0.1, 0.2, 0.3]]), True)
    assert torch.allclose(tris.colors, colors, atol=1e-6)
    assert torch.allclose(tris.opacity, torch.tensor([[0.3]]), atol=1e-6)
    assert torch.allclose(tris.background, torch.tensor([[0.1, 0.2, 0.3]]), atol=1e-6)
    assert [g["name"] for g in tris.param_groups({"positions": 1, "colors": 1, "opacity": 1, "background": 1})] == \
        ["positions", "colors", "opacity", "background"]


def test_fixed_background_is_exact_and_not_a_parameter():
    tris = TriangleSet(torch.zeros(1, 1, 3, 2), torch.rand(1, 1, 3), torch.rand(1, 1), torch.ones(1, 3), False)
    assert torch.equal(tris.background, torch.ones(1, 3))
    assert all(p is not tris.background for p in tris.parameters())


def test_shape_errors_are_explicit():
    with pytest.raises(ValueError, match="expected vertices"):
        TriangleSet(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 3))


@pytest.mark.parametrize("init", ["random", "grid"])
def test_initialisers_are_seeded_and_shaped(init):
    cfg = TrianglesConfig(count=37, init=init)
    target = _target()
    bg = resolve_background("mean", target)
    a = initial_triangles(cfg, target, bg, torch.Generator().manual_seed(4))
    b = initial_triangles(cfg, target, bg, torch.Generator().manual_seed(4))
    assert a.positions.shape == (2, 37, 3, 2)
    assert torch.equal(a.positions, b.positions) and torch.equal(a.color_logits, b.color_logits)
    assert torch.allclose(a.opacity, torch.full((2, 37), cfg.opacity), atol=1e-6)


def test_random_size_controls_spread():
    target = _target(1, 50, 50)
    bg = resolve_background("white", target)

    def spread(size):
        cfg = TrianglesConfig(count=200, size=size)
        pos = initial_triangles(cfg, target, bg, torch.Generator().manual_seed(0)).positions
        return (pos.amax(dim=2) - pos.amin(dim=2)).mean().item()

    # vertices a third of a turn apart (+-0.5 rad) at radius U(0.5, 1) x size / 2: the bounding box
    # of such a triangle spans about 1.63 x its mean radius (0.375 size), i.e. 0.61 x size
    assert spread(0.05) == pytest.approx(0.61 * 0.05, rel=0.05)
    assert spread(0.2) == pytest.approx(4 * spread(0.05), rel=0.01)


def test_grid_covers_the_canvas_when_count_fills_it():
    cfg = TrianglesConfig(count=2 * 6 * 4, init="grid")  # 48 triangles on a 3:2 canvas: 6 x 4 cells
    tris = initial_triangles(cfg, _target(1, 20, 30), torch.zeros(1, 3), torch.Generator())
    pos = tris.positions[0]
    assert pos.min() == 0 and pos.max() == 1
    areas = 0.5 * torch.abs((pos[:, 1, 0] - pos[:, 0, 0]) * (pos[:, 2, 1] - pos[:, 0, 1])
                            - (pos[:, 1, 1] - pos[:, 0, 1]) * (pos[:, 2, 0] - pos[:, 0, 0]))
    assert areas.sum().item() == pytest.approx(1.0)


def test_target_colours_are_sampled_at_centroids():
    target = torch.zeros(1, 3, 10, 10)
    target[:, 0, :, :5] = 1.0  # left half red
    target[:, 2, :, 5:] = 1.0  # right half blue
    colours = sample_colors(target, torch.tensor([[[0.2, 0.5], [0.8, 0.5]]]))
    assert torch.allclose(colours, torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]]]))


def test_background_specs():
    target = torch.full((1, 3, 4, 4), 0.25)
    assert torch.equal(resolve_background("white", target), torch.ones(1, 3))
    assert torch.equal(resolve_background("black", target), torch.zeros(1, 3))
    assert torch.allclose(resolve_background("mean", target), torch.full((1, 3), 0.25))
    assert torch.allclose(resolve_background([0.1, 0.2, 0.3], target), torch.tensor([[0.1, 0.2, 0.3]]))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    target[..., :2] = 0.8
    assert torch.allclose(resolve_background("mean", target, mask), torch.full((1, 3), 0.8))
