"""nvdiffrast backend: what runs without CUDA (clip space, attributes, errors, backend choice)
here; parity with the tiled renderer and fitting on a CUDA machine (skipped without one)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from triangulate_ai.config import RenderConfig, load_config
from triangulate_ai.errors import UserError
from triangulate_ai.raster import TiledRenderer, make_renderer
from triangulate_ai.raster import nvdiffrast as nv
from triangulate_ai.raster.scene import Scene

needs_cuda = pytest.mark.skipif(not nv.available(), reason="needs CUDA and the nvdiffrast package")


def test_clip_space_maps_the_canvas_and_orders_depth_by_painter_order():
    verts = torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [1.0, 1.0], [0.25, 0.75]]]])
    clip = nv.clip_space(verts)
    assert clip.shape == (1, 6, 4)
    assert clip[0, :3, :2].tolist() == [[-1, -1], [1, -1], [-1, 1]]  # y 0 (top) -> -1 (nvdiffrast row 0)
    assert clip[0, 3, :2].tolist() == [0, 0]
    assert torch.all(clip[..., 3] == 1)
    z = clip[0, ::3, 2]
    assert z.tolist() == pytest.approx([1 - 2 / 3, 1 - 4 / 3])  # later triangle nearer (smaller z)
    assert torch.all(clip[0, :3, 2] == clip[0, 0, 2])  # one depth per triangle


def test_depths_stay_distinct_and_inside_the_clip_volume_for_many_triangles():
    z = nv.clip_space(torch.rand(1, 10000, 3, 2))[0, ::3, 2]
    assert z.max() < 1 and z.min() > -1 and torch.all(z[1:] < z[:-1])


def test_vertex_attributes_repeat_each_triangle_on_its_vertices():
    scene = Scene(torch.zeros(1, 2, 3, 2), torch.tensor([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]),
                  torch.tensor([[0.7, 0.8]]), torch.zeros(1, 3))
    attrs = nv.vertex_attributes(scene)
    assert attrs.shape == (1, 6, 4)
    assert attrs[0, 2].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.7])
    assert attrs[0, 3].tolist() == pytest.approx([0.4, 0.5, 0.6, 0.8])


def test_missing_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvdiffrast", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", None)
    with pytest.raises(UserError, match=r"render.backend = nvdiffrast needs the nvdiffrast package .*pip install"):
        make_renderer(RenderConfig(backend="nvdiffrast"))


def test_no_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", type(sys)("nvdiffrast.torch"))  # a stand-in module
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA device and none is available"):
        make_renderer(RenderConfig(backend="nvdiffrast"))


def test_auto_picks_a_cpu_renderer_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_renderer(RenderConfig(backend="auto")).name in ("fused", "torch")  # fused unless it cannot build
    assert load_config(None, ["render.backend=nvdiffrast", "render.max_layers=4"]).render.max_layers == 4
    with pytest.raises(UserError, match="greater than or equal to 1"):
        load_config(None, ["render.max_layers=0"])


def _scene(count=40, opaque=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(1, count, 1, 2, generator=g)
    verts = centres + (torch.rand(1, count, 3, 2, generator=g) - 0.5) * 0.3
    opacity = torch.ones(1, count) if opaque else torch.rand(1, count, generator=g) * 0.6 + 0.3
    return Scene(verts, torch.rand(1, count, 3, generator=g), opacity, torch.rand(1, 3, generator=g))


def _away_from_edges(scene: Scene, height: int, width: int, margin: float = 1.5) -> np.ndarray:
    """Pixels whose centre is more than `margin` px from every triangle edge."""
    from triangulate_ai.raster.base import pixel_centres
    from triangulate_ai.raster.sdf import signed_distance

    px, py = pixel_centres(height, width, scene.vertices.device, torch.float32)
    verts = scene.to_pixels(height, width)[0]
    dist = torch.stack([signed_distance(px, py, verts[t]).abs() for t in range(verts.shape[0])]).amin(0)
    return (dist > margin).reshape(height, width).cpu().numpy()


@needs_cuda
@pytest.mark.parametrize("opaque", [True, False])
def test_parity_with_the_tiled_renderer_away_from_edges(opaque):
    scene = Scene(*(t.cuda() for t in _scene(opaque=opaque)))
    hard = make_renderer(RenderConfig(backend="nvdiffrast", max_layers=64))(scene, 96, 128)
    soft = TiledRenderer(sigma=0.05)(scene, 96, 128)
    diff = (hard - soft).abs().mean(dim=1)[0].cpu().numpy()
    mask = _away_from_edges(scene, 96, 128)
    assert diff[mask].mean() <= 1 / 255
    assert diff[~mask].mean() <= 0.1  # at edges: analytic one-pixel blend vs a 0.05-px sigmoid


@needs_cuda
def test_gradients_point_the_same_way_as_the_tiled_renderer():
    target = TiledRenderer(0.3)(Scene(*(t.cuda() for t in _scene(seed=1))), 64, 64).detach()
    start = [t.cuda().requires_grad_() for t in _scene(seed=2)]
    grads = []
    for renderer in (make_renderer(RenderConfig(backend="nvdiffrast", max_layers=64)), TiledRenderer(0.3)):
        for t in start:
            t.grad = None
        ((renderer(Scene(*start), 64, 64) - target) ** 2).mean().backward()
        grads.append(torch.cat([start[0].grad.flatten(), start[1].grad.flatten()]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.5


@needs_cuda
def test_short_fits_reach_a_similar_psnr(image_path, tmp_path):
    import json

    from triangulate_ai.cli import main

    from .conftest import QUICK

    psnr = {}
    for backend in ("torch", "nvdiffrast"):
        out = tmp_path / backend
        assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "device=cuda",
                     "--set", f"render.backend={backend}", "--set", "optim.iterations=150"]) == 0
        psnr[backend] = json.loads((out / "summary.json").read_text())["psnr"]
    assert abs(psnr["torch"] - psnr["nvdiffrast"]) < 2.0, psnr
