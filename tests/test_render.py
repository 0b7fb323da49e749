"""Renderers: known answers, tiled vs dense parity, gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triangulate_ai.raster import ReferenceRenderer, Scene, TiledRenderer


def make_scene(batch=2, count=25, seed=0, dtype=torch.float64, spread=0.35, plant=True):
    """Random scene with the hard cases planted: a huge triangle, a degenerate one, one off-canvas,
    one needle-thin, and one partly outside the canvas."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, count, 1, 2, generator=g) * 1.2 - 0.1
    verts = centres + (torch.rand(batch, count, 3, 2, generator=g) - 0.5) * spread
    if plant:
        _plant_hard_cases(verts)
    colors = torch.rand(batch, count, 3, generator=g)
    opacity = torch.rand(batch, count, generator=g) * 0.9 + 0.05
    background = torch.rand(batch, 3, generator=g)
    return Scene(*(t.to(dtype) for t in (verts, colors, opacity, background)))


def _plant_hard_cases(verts):
    verts[0, 0] = torch.tensor([[-0.6, -0.4], [2.1, -0.5], [-0.5, 2.2]])      # covers everything
    verts[0, 1] = torch.tensor([[0.2, 0.3], [0.7, 0.8], [0.45, 0.55]])        # collinear: zero area
    verts[0, 2] = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])          # a point
    verts[-1, 3] = torch.tensor([[1.5, 1.5], [1.8, 1.6], [1.6, 1.9]])         # off canvas
    verts[-1, 4] = torch.tensor([[0.1, 0.5], [0.9, 0.5], [0.5, 0.502]])       # needle
    verts[-1, 5] = torch.tensor([[-0.3, 0.2], [0.3, 0.1], [0.1, 0.6]])        # partly outside


def grads(renderer, scene, height, width, weight):
    leaves = [t.clone().requires_grad_() for t in scene]
    image, alpha = renderer(Scene(*leaves), height, width, return_alpha=True)
    (image * weight).sum().add((alpha * weight[:, :1]).sum()).backward()
    return image.detach(), alpha.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("tile_size", [1, 5, 8, 16])
@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_tiled_matches_dense_reference(tile_size, sigma):
    height, width = 29, 41  # not multiples of any tile size
    scene = make_scene()
    weight = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = grads(ReferenceRenderer(sigma), scene, height, width, weight)
    tiled = grads(TiledRenderer(sigma, tile_size), scene, height, width, weight)
    assert (ref[0] - tiled[0]).abs().max() <= 1e-4
    assert (ref[1] - tiled[1]).abs().max() <= 1e-4
    for name, g_ref, g_tiled in zip(Scene._fields, ref[2], tiled[2]):
        rel = ((g_ref - g_tiled).abs().max() / g_ref.abs().max()).item()
        assert rel <= 1e-3, f"{name}: relative gradient error {rel:.2e}"


def test_parity_in_float32_on_default_settings():
    scene = make_scene(batch=1, count=60, seed=3, dtype=torch.float32, spread=0.2)
    height, width = 48, 64
    ref = ReferenceRenderer(0.5)(scene, height, width)
    tiled = TiledRenderer(0.5, 8)(scene, height, width)
    assert (ref - tiled).abs().max() <= 1e-4


def _centres_inside(tri_px: np.ndarray, height: int, width: int, margin: float):
    """Independent point-in-triangle test on pixel centres, with a mask of pixels whose centre is
    farther than `margin` from every edge line (where the soft edge cannot blur the answer)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    crosses, clear = [], np.ones((height, width), bool)
    for k in range(3):
        (ax, ay), (bx, by) = tri_px[k], tri_px[(k + 1) % 3]
        cross = (bx - ax) * (ys - ay) - (by - ay) * (xs - ax)
        crosses.append(cross)
        clear &= np.abs(cross) / np.hypot(bx - ax, by - ay) > margin
    inside = np.all([c > 0 for c in crosses], axis=0) | np.all([c < 0 for c in crosses], axis=0)
    return inside, clear


@pytest.mark.parametrize("renderer", [ReferenceRenderer(0.05), TiledRenderer(0.05, 8)], ids=["reference", "tiled"])
def test_opaque_triangle_covers_exactly_the_pixel_centres_inside_it(renderer):
    height, width = 20, 30
    tri = np.array([[3.3, 2.1], [27.2, 6.4], [9.7, 18.6]])
    f64 = {"dtype": torch.float64}
    scene = Scene(torch.tensor(tri / [width, height])[None, None], torch.tensor([[[1.0, 0.2, 0.0]]], **f64),
                  torch.ones(1, 1, **f64), torch.tensor([[0.0, 0.0, 1.0]], **f64))
    image = renderer(scene, height, width)[0].permute(1, 2, 0).numpy()
    inside, clear = _centres_inside(tri, height, width, margin=0.5)
    assert clear.sum() > 0.7 * height * width
    expected = np.where(inside[..., None], [1.0, 0.2, 0.0], [0.0, 0.0, 1.0])
    assert np.abs(image - expected)[clear].max() < 1e-3
    # at the edges the soft coverage is in between, never outside the two colours
    assert image[..., 2].min() >= -1e-9 and image[..., 0].max() <= 1 + 1e-9


@pytest.mark.parametrize("renderer", [ReferenceRenderer(0.2), TiledRenderer(0.2, 4)], ids=["reference", "tiled"])
def test_later_triangle_is_painted_over_earlier_one(renderer):
    square = [[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]]
    verts = torch.tensor([[square, square]], dtype=torch.float64)
    colors = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64)
    opacity = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    bg = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
    image = renderer(Scene(verts, colors, opacity, bg), 20, 20)
    centre = image[0, :, 6, 6]  # well inside both
    assert torch.allclose(centre, torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), atol=1e-4)
    swapped = renderer(Scene(verts.flip(1), colors.flip(1), opacity.flip(1), bg), 20, 20)[0, :, 6, 6]
    assert torch.allclose(swapped, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("renderer", [ReferenceRenderer(0.5), TiledRenderer(0.5, 8)], ids=["reference", "tiled"])
def test_background_where_nothing_is_drawn(renderer):
    verts = torch.tensor([[[[1.5, 1.5], [1.8, 1.6], [1.6, 1.9]], [[0.0, 0.0], [0.2, 0.0], [0.0, 0.2]]]])
    scene = Scene(verts, torch.rand(1, 2, 3), torch.full((1, 2), 0.9), torch.tensor([[0.2, 0.4, 0.6]]))
    image, alpha = renderer(scene, 30, 30, return_alpha=True)
    assert torch.allclose(image[0, :, 20:, 20:], torch.tensor([0.2, 0.4, 0.6])[:, None, None], atol=1e-6)
    assert alpha[0, 0, 20:, 20:].max() < 1e-6
    assert alpha[0, 0, 1, 1] > 0.8


def test_batch_scenes_are_independent():
    scene = make_scene(batch=3, count=10, seed=5, dtype=torch.float32)
    renderer = TiledRenderer(0.5, 8)
    together = renderer(scene, 24, 24)
    for b in range(3):
        alone = renderer(Scene(*(t[b:b + 1] for t in scene)), 24, 24)
        assert torch.equal(together[b:b + 1], alone)


@pytest.mark.parametrize("renderer", [ReferenceRenderer(0.8), TiledRenderer(0.8, 4)], ids=["reference", "tiled"])
def test_gradients_match_finite_differences(renderer):
    scene = make_scene(batch=1, count=3, seed=2, spread=0.6, plant=False)
    weight = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(verts, colors, opacity, background):
        return (renderer(Scene(verts, colors, opacity, background), 9, 11) * weight).sum()

    inputs = tuple(t.clone().requires_grad_() for t in scene)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_no_nan_gradients_for_degenerate_and_saturated_triangles():
    verts = torch.tensor([[[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], [[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]]]],
                         requires_grad=True)
    colors = torch.rand(1, 2, 3, requires_grad=True)
    opacity = torch.tensor([[1.0, 1.0]], requires_grad=True)  # alpha saturates to 1
    image = TiledRenderer(0.5, 8)(Scene(verts, colors, opacity, torch.zeros(1, 3)), 16, 16)
    image.sum().backward()
    for t in (verts, colors, opacity):
        assert torch.isfinite(t.grad).all()


def test_renderers_reject_bad_settings():
    with pytest.raises(ValueError, match="sigma"):
        TiledRenderer(0.0)
    with pytest.raises(ValueError, match="tile_size"):
        TiledRenderer(0.5, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiled_renderer_on_cuda_matches_cpu():
    scene = make_scene(batch=2, count=30, dtype=torch.float32)
    cpu = TiledRenderer(0.5, 8)(scene, 40, 50)
    gpu = TiledRenderer(0.5, 8)(Scene(*(t.cuda() for t in scene)), 40, 50)
    assert (cpu - gpu.cpu()).abs().max() <= 1e-4
