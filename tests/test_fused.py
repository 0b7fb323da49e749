"""Fused C++ renderer: parity with the dense reference (image, alpha, every gradient), finite
differences, determinism, the backend choice and its fallback, and a short fit against the tiled
renderer.

Skipped only where the kernel cannot be built; under CI (the CI variable set) it must build, so
there the tests run and fail instead.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from triangulate_ai import raster
from triangulate_ai.config import RenderConfig, load_config
from triangulate_ai.errors import UserError
from triangulate_ai.loop import Fitter
from triangulate_ai.raster import ReferenceRenderer, Scene, fused, make_renderer
from triangulate_ai.raster.fused import FusedRenderer

from .conftest import QUICK, smooth_image
from .test_render import grads, make_scene

REASON = fused.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None and not os.environ.get("CI"),
                                reason=f"the fused kernel cannot be built here: {REASON}")


def test_kernel_builds():
    assert REASON is None, REASON


def _weight(scene, height, width, seed=1):
    return torch.rand(scene.vertices.shape[0], 3, height, width, generator=torch.Generator().manual_seed(seed),
                      dtype=scene.vertices.dtype)


def assert_parity(scene, height, width, sigma, tile_size, image_tol=1e-5, grad_tol=1e-4):
    weight = _weight(scene, height, width)
    ref = grads(ReferenceRenderer(sigma), scene, height, width, weight)
    out = grads(FusedRenderer(sigma, tile_size), scene, height, width, weight)
    assert (ref[0] - out[0]).abs().max() <= image_tol
    assert (ref[1] - out[1]).abs().max() <= image_tol
    for name, g_ref, g_out in zip(Scene._fields, ref[2], out[2]):
        rel = ((g_ref - g_out).abs().max() / g_ref.abs().max()).item()
        assert rel <= grad_tol, f"{name}: relative gradient error {rel:.2e}"


@pytest.mark.parametrize("sigma, tile_size, dtype", [(0.3, 8, torch.float32), (1.0, 5, torch.float32),
                                                     (0.5, 16, torch.float64), (0.3, 1, torch.float64),
                                                     (0.3, 64, torch.float32)])
def test_matches_dense_reference_on_hard_scenes(sigma, tile_size, dtype):
    # B = 2, 29 x 41 (no tile size divides it, so border tiles are cut); a huge triangle covering
    # everything, a zero-area one, a point, one off canvas, a needle and one partly outside.
    assert_parity(make_scene(dtype=dtype), 29, 41, sigma, tile_size)


def test_matches_dense_reference_with_fully_opaque_triangles():
    # alpha reaches exactly 1 inside in float32: the backward must not divide by 1 - alpha
    scene = make_scene(seed=4, dtype=torch.float32)
    scene = scene._replace(opacity=torch.ones_like(scene.opacity))
    assert_parity(scene, 29, 41, 0.3, 8)


def test_matches_dense_reference_with_tiny_and_huge_triangles():
    g = torch.Generator().manual_seed(7)
    tiny = torch.rand(1, 20, 1, 2, generator=g) + (torch.rand(1, 20, 3, 2, generator=g) - 0.5) * 0.01
    huge = torch.rand(1, 4, 1, 2, generator=g) + (torch.rand(1, 4, 3, 2, generator=g) - 0.5) * 6
    verts = torch.cat([huge, tiny], dim=1)
    scene = Scene(verts, torch.rand(1, 24, 3, generator=g), torch.rand(1, 24, generator=g) * 0.9 + 0.1,
                  torch.rand(1, 3, generator=g))
    assert_parity(scene, 40, 24, 0.3, 8)


def test_matches_dense_reference_on_a_crowded_float32_scene():
    assert_parity(make_scene(batch=1, count=60, seed=3, dtype=torch.float32, spread=0.2), 48, 64, 0.5, 8)


def test_gradient_of_the_image_alone_and_of_the_alpha_alone():
    scene = make_scene(seed=5)
    renderers = ReferenceRenderer(0.5), FusedRenderer(0.5, 8)
    for pick in (0, 1):  # an unused output reaches the backward as None
        results = []
        for renderer in renderers:
            leaves = [t.clone().requires_grad_() for t in scene]
            renderer(Scene(*leaves), 20, 30, return_alpha=True)[pick].square().sum().backward()
            results.append([t.grad for t in leaves])
        for name, g_ref, g_out in zip(Scene._fields, *results):
            if g_ref is None:  # the alpha does not depend on colours or background
                assert not g_out.any(), (pick, name)
            else:
                assert (g_ref - g_out).abs().max() <= 1e-4 * g_ref.abs().max(), (pick, name)


def test_gradients_match_finite_differences():
    scene = make_scene(batch=1, count=3, seed=2, spread=0.6, plant=False)
    scene = scene._replace(opacity=torch.tensor([[0.7, 1.0, 0.4]], dtype=torch.float64))
    weight = _weight(scene, 9, 11, seed=0)
    renderer = FusedRenderer(0.8, 4)

    def f(verts, colors, opacity, background):
        image, alpha = renderer(Scene(verts, colors, opacity, background), 9, 11, return_alpha=True)
        return (image * weight).sum() + (alpha * weight[:, :1]).sum()

    inputs = tuple(t.clone().requires_grad_() for t in scene)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_results_are_bitwise_reproducible_for_any_thread_count():
    scene = make_scene(batch=2, count=40, seed=6, dtype=torch.float32)
    weight = _weight(scene, 33, 47)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            runs.append(grads(FusedRenderer(0.3, 8), scene, 33, 47, weight))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        assert torch.equal(runs[0][0], other[0]) and torch.equal(runs[0][1], other[1])
        assert all(torch.equal(a, b) for a, b in zip(runs[0][2], other[2]))


def test_batch_scenes_are_independent():
    scene = make_scene(batch=3, count=10, seed=5, dtype=torch.float32)
    renderer = FusedRenderer(0.5, 8)
    together = renderer(scene, 24, 24)
    for b in range(3):
        assert torch.equal(together[b:b + 1], renderer(Scene(*(t[b:b + 1] for t in scene)), 24, 24))


def test_auto_picks_fused_on_cpu_and_never_on_cuda(monkeypatch):
    assert make_renderer(RenderConfig(backend="auto")).name == "fused"
    monkeypatch.setattr(raster.nvdiffrast, "available", lambda: False)
    monkeypatch.setattr(raster.triton, "available", lambda: False)
    assert make_renderer(RenderConfig(backend="auto"), "cuda").name == "torch"
    with pytest.raises(UserError, match="runs on CPU only"):
        make_renderer(RenderConfig(backend="fused"), "cuda")


def test_unbuildable_kernel_falls_back_with_one_warning_or_fails_one_line(monkeypatch, capsys):
    monkeypatch.setattr(fused, "unavailable_reason", lambda: "g++: command not found")
    monkeypatch.setattr(raster, "_warned", set())
    assert make_renderer(RenderConfig(backend="auto")).name == "torch"
    assert make_renderer(RenderConfig(backend="auto")).name == "torch"
    lines = capsys.readouterr().err.splitlines()
    assert lines == [("warning: render.backend=auto: the fused CPU kernel is unavailable (g++: command not found); "
                      "using the tiled torch renderer")]
    with pytest.raises(UserError, match=r"^render.backend = fused: .*\(g\+\+: command not found\); use render."
                                        r"backend=torch$"):
        make_renderer(RenderConfig(backend="fused"))


def test_build_command_reports_the_cache(capsys):
    assert fused.main(["--build"]) == 0
    assert "fused renderer kernel ready in" in capsys.readouterr().out


def test_a_short_fit_matches_the_tiled_renderer():
    target = torch.from_numpy(smooth_image(32, 40).astype(np.float32) / 255).permute(2, 0, 1)[None]
    sets = [QUICK[i + 1] for i in range(0, len(QUICK), 2)] + ["optim.iterations=15"]
    losses = {}
    for backend in ("torch", "fused"):
        fitter = Fitter(load_config(None, sets + [f"render.backend={backend}"]), target, target.mean(dim=(2, 3)))
        assert fitter.renderer.name == backend
        losses[backend] = [fitter.train_step().losses["l1"][0] for _ in range(15)]
    assert losses["fused"] == pytest.approx(losses["torch"], rel=1e-3)


def test_a_backward_that_computes_the_coverage_again_gives_the_same_gradients():
    # past 1 GiB the forward keeps only the bins and the backward works out coverage and live blocks again
    from triangulate_ai.raster.base import support_radius
    from triangulate_ai.raster.kernels import fused_raster

    scene = make_scene(batch=2, count=40, seed=6, dtype=torch.float32)
    inputs = [scene.to_pixels(33, 47).contiguous(), *(t.contiguous() for t in scene[1:])]
    weight = _weight(scene, 33, 47)
    settings = (33, 47, 0.3, 8)
    grow = support_radius(0.3, 1e-6)
    results = []
    for keep in (True, False):
        image, alpha, *bins = fused_raster().forward(*inputs, *settings, grow, keep)
        assert (bins[-2].numel() > 0) == keep  # the coverage
        results.append((image, fused_raster().backward(*inputs, *bins, weight, alpha, *settings, grow)))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_storage_kept_for_one_backward_is_not_reused_while_its_graph_lives():
    # the forward hands its coverage storage out again once nothing holds it; two live graphs
    # (and a third forward between them) must each keep their own
    renderer = FusedRenderer(0.3, 8)
    scenes = [make_scene(batch=2, count=40, seed=s, dtype=torch.float32) for s in (6, 7)]
    weight = _weight(scenes[0], 33, 47)
    alone = [grads(renderer, scene, 33, 47, weight)[2] for scene in scenes]
    leaves = [Scene(*(t.detach().clone().requires_grad_(True) for t in scene)) for scene in scenes]
    images = [renderer(leaf, 33, 47, return_alpha=True) for leaf in leaves]
    renderer(Scene(*(t.clone().requires_grad_(True) for t in scenes[1])), 33, 47)  # one more, never backward
    for (image, alpha), leaf, expected in zip(reversed(images), reversed(leaves), reversed(alone)):
        (image * weight).sum().add((alpha * weight[:, :1]).sum()).backward()
        assert all(torch.equal(t.grad, g) for t, g in zip(leaf, expected))
    for _ in range(3):  # and storage reused step after step gives the same gradients
        assert all(torch.equal(a, b) for a, b in zip(grads(renderer, scenes[0], 33, 47, weight)[2], alone[0]))


@pytest.mark.parametrize("tile_size", [8, 5, 16])
def test_blocks_left_out_hold_only_pixels_beyond_the_support_radius(tile_size):
    # the kernel evaluates a (tile, triangle) pair only on its live pixel blocks; every pixel of a
    # block it leaves out must lie beyond the support radius (coverage below the cutoff), and
    # slivers across many tiles leave out the most
    from triangulate_ai.raster.base import support_radius
    from triangulate_ai.raster.kernels import fused_raster
    from triangulate_ai.raster.sdf import signed_distance

    g = torch.Generator().manual_seed(11)
    slivers = torch.rand(1, 30, 1, 2, generator=g) + (torch.rand(1, 30, 3, 2, generator=g) - 0.5) * torch.tensor(
        [0.9, 0.05])  # long and thin, some rotated below
    slivers[:, ::2] = slivers[:, ::2].flip(-1)
    scene = make_scene(batch=1, count=40, seed=9, spread=0.3, plant=False)
    scene = scene._replace(vertices=torch.cat([scene.vertices, slivers.double()], 1),
                           colors=torch.rand(1, 70, 3, generator=g, dtype=torch.float64),
                           opacity=torch.rand(1, 70, generator=g, dtype=torch.float64))
    height, width, sigma = 37, 45, 0.3
    grow = support_radius(sigma, 1e-6)
    verts = scene.to_pixels(height, width).contiguous()
    _, _, offsets, ids, _, _, _, live = fused_raster().forward(
        verts, scene.colors.contiguous(), scene.opacity.contiguous(), scene.background.contiguous(),
        height, width, sigma, tile_size, grow, True)
    n_tx = -(-width // tile_size)
    lanes = (tile_size * tile_size + 15) // 16 * 16 // live.shape[1]
    pixel = torch.arange(live.shape[1] * lanes)
    tile_of_pair = torch.repeat_interleave(torch.arange(offsets.numel() - 1), offsets.diff())
    px = (tile_of_pair % n_tx)[:, None] * tile_size + pixel % tile_size + 0.5
    py = (tile_of_pair // n_tx)[:, None] * tile_size + pixel // tile_size + 0.5
    sd = signed_distance(px.double(), py.double(), verts.reshape(-1, 3, 2)[ids.long()])  # (pairs, padded pixels)
    in_image = (px < width) & (py < height) & (pixel < tile_size**2)
    left_out = ~live.bool().repeat_interleave(lanes, dim=1)
    assert left_out.any(), "nothing was left out: the test would not test anything"
    assert (sd[left_out & in_image] <= -grow).all()
    assert live.float().mean() < 0.9
