"""Triton backend against the dense reference (image to 1e-5, gradients to 1e-4 relative): on CUDA
when there is one, else on CPU in the Triton interpreter (TRITON_INTERPRET=1, see conftest.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triangulate_ai.config import RenderConfig
from triangulate_ai.errors import UserError
from triangulate_ai.raster import ReferenceRenderer, Scene, make_renderer, nvdiffrast
from triangulate_ai.raster import triton as triton_backend

from .test_render import grads

pytestmark = [
    pytest.mark.skipif(not triton_backend.available(), reason="needs the triton package"),
    # the interpreter's numpy exp warns where coverage underflows to 0 (exp(-sd / sigma) -> inf), as intended
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
]


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def kernels():
    """The kernel module: compiled for CUDA, or interpreted on CPU (conftest.py sets
    TRITON_INTERPRET before triton is first imported)."""
    module = importlib.import_module("triangulate_ai.raster.kernels.triton_raster")
    if DEVICE == "cpu" and not module.INTERPRETED:
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is first imported (tests/conftest.py does)")
    return module


COUNT = 20
COLLINEAR, POINT, OFF_CANVAS = (0, 0), (0, 1), (1, 3)  # (scene, triangle) of planted cases


def planted_scene(dtype: torch.dtype) -> Scene:
    """Two scenes of translucent triangles (opacity up to 0.95) clustered on the left of the
    canvas, so the right has empty tiles and the left has tiles deeper than one chunk; planted: a
    zero-area and a point triangle, a needle, one off the canvas, one partly outside, and one
    spanning many tiles."""
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(2, COUNT, 1, 2, generator=g) * torch.tensor([0.4, 1.0]) + torch.tensor([0.05, 0.0])
    verts = centres + (torch.rand(2, COUNT, 3, 2, generator=g) - 0.5) * 0.45
    verts[COLLINEAR] = torch.tensor([[0.1, 0.2], [0.4, 0.8], [0.25, 0.5]])  # its third vertex halfway
    verts[POINT] = torch.tensor([[0.3, 0.4], [0.3, 0.4], [0.3, 0.4]])
    verts[0, 2] = torch.tensor([[0.05, 0.5], [0.55, 0.5], [0.3, 0.51]])     # needle
    verts[OFF_CANVAS] = torch.tensor([[1.5, 1.5], [1.8, 1.6], [1.6, 1.9]])
    verts[1, 4] = torch.tensor([[-0.3, 0.2], [0.2, 0.1], [0.1, 0.6]])       # partly outside
    verts[1, 5] = torch.tensor([[0.02, 0.05], [0.6, 0.1], [0.3, 0.95]])     # across many tiles
    colors = torch.rand(2, COUNT, 3, generator=g)
    opacity = torch.rand(2, COUNT, generator=g) * 0.9 + 0.05
    opacity[:, -2:] = 0.95
    background = torch.rand(2, 3, generator=g)
    return Scene(*(t.to(dtype) for t in (verts, colors, opacity, background)))


def triton_grads(renderer, scene: Scene, height: int, width: int, weight: torch.Tensor, dtype: torch.dtype):
    """`grads` on DEVICE in `dtype`, returned on CPU in float64 (exactly) for comparison."""
    image, alpha, leaves = grads(renderer, Scene(*(t.to(DEVICE, dtype) for t in scene)), height, width,
                                 weight.to(DEVICE, dtype))
    return image.cpu().double(), alpha.cpu().double(), [g.cpu().double() for g in leaves]


def assert_parity(ref, got, ambiguous=(), image_tol=1e-5, grad_tol=1e-4):
    """Image and alpha to `image_tol`; each gradient to `grad_tol` of its largest reference value.
    For the (scene, triangle) pairs in `ambiguous` only the sum of the vertex gradients (moving
    the triangle as a whole) is compared, not its split among the vertices."""
    assert (ref[0] - got[0]).abs().max() <= image_tol
    assert (ref[1] - got[1]).abs().max() <= image_tol
    for name, g_ref, g_got in zip(Scene._fields, ref[2], got[2]):
        assert torch.isfinite(g_got).all(), name
        if name == "vertices":
            for b, t in ambiguous:
                rel = (g_ref[b, t].sum(0) - g_got[b, t].sum(0)).abs().max() / g_ref.abs().max()
                assert rel <= grad_tol, f"translation of triangle {t}: {rel:.2e}"
                g_ref, g_got = g_ref.clone(), g_got.clone()
                g_ref[b, t] = g_got[b, t] = 0
        rel = ((g_ref - g_got).abs().max() / g_ref.abs().max().clamp_min(1e-12)).item()  # all-zero: absolute
        assert rel <= grad_tol, f"{name}: relative gradient error {rel:.2e}"


@pytest.mark.parametrize("dtype, tile_size, chunk", [(torch.float32, 8, None), (torch.float64, 5, 4)],
                         ids=["float32-tile8", "float64-tile5-chunk4"])
def test_matches_the_dense_reference(kernels, monkeypatch, dtype, tile_size, chunk):
    if chunk:
        monkeypatch.setattr(kernels, "CHUNK", chunk)  # many chunk boundaries per tile
    height, width = 24, 40  # not square, not a multiple of either tile size
    scene = planted_scene(torch.float64)
    weight = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    renderer = triton_backend.TritonRenderer(0.3, tile_size)
    layout = renderer._layout(scene.to_pixels(height, width), height, width)
    per_tile = layout.tile_start.diff()
    assert (per_tile == 0).any() and per_tile.max() > kernels.CHUNK  # empty tiles, and multi-chunk ones
    assert not (layout.pair_tri == OFF_CANVAS[0] * COUNT + OFF_CANVAS[1]).any()  # in no tile

    ref = grads(ReferenceRenderer(0.3), scene, height, width, weight)
    got = triton_grads(renderer, scene, height, width, weight, dtype)
    # The collinear triangle's edges overlap, so which is nearest to a pixel is a tie that
    # rounding breaks: float32 breaks it differently from the float64 reference, moving that
    # triangle's gradient between its vertices (the sum is unchanged). float64 matches outright.
    assert_parity(ref, got, [COLLINEAR] if dtype == torch.float32 else [])
    with torch.no_grad():  # the forward without checkpoints draws the same image
        image = renderer(Scene(*(t.to(DEVICE, dtype) for t in scene)), height, width)
    assert torch.equal(image.cpu().double(), got[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fully_opaque_triangles_are_exact(kernels, dtype):
    """Opacity 1: deep inside a triangle alpha is exactly 1 and everything under it gets
    transmittance exactly 0. The backward rebuilds transmittance from checkpoints instead of
    dividing by 1 - alpha, so no alpha is clamped: the result is the reference's, a triangle
    hidden under an opaque one gets exactly zero gradient, and nothing is non-finite."""
    height, width = 16, 16
    f64 = {"dtype": torch.float64}
    verts = torch.tensor([[[[0.2, 0.1], [0.9, 0.3], [0.4, 0.8]],        # buried
                           [[-2.0, -2.0], [5.0, -2.0], [-2.0, 5.0]],    # opaque, over the whole canvas
                           [[0.0625, 0.0625], [0.9375, 0.0625], [0.0625, 0.9375]],  # opaque
                           [[0.3, 0.2], [0.8, 0.6], [0.1, 0.9]]]], **f64)  # translucent, on top
    scene = Scene(verts, torch.rand(1, 4, 3, generator=torch.Generator().manual_seed(2), **f64),
                  torch.tensor([[0.7, 1.0, 1.0, 0.95]], **f64), torch.tensor([[0.1, 0.2, 0.3]], **f64))
    weight = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3), **f64)
    ref = grads(ReferenceRenderer(0.1), scene, height, width, weight)
    got = triton_grads(triton_backend.TritonRenderer(0.1, 8), scene, height, width, weight, dtype)
    assert torch.all(ref[1] == 1) and torch.all(got[1] == 1)  # nothing shows through
    assert_parity(ref, got)
    for g in got[2][:3]:
        assert torch.all(g[0, 0] == 0)  # the buried triangle: vertices, colour, opacity
    assert torch.all(got[2][3] == 0)  # the background


def test_nothing_on_the_canvas_draws_the_background(kernels):
    scene = planted_scene(torch.float32)
    scene = Scene(scene.vertices + 3, *scene[1:])  # every triangle off the canvas: no pairs at all
    image, alpha, leaves = triton_grads(triton_backend.TritonRenderer(0.3, 8), scene, 8, 12,
                                        torch.ones(2, 3, 8, 12), torch.float32)
    assert torch.equal(image, scene.background.double()[:, :, None, None].expand(2, 3, 8, 12))
    assert torch.all(alpha == 0)
    assert all(torch.all(g == 0) for g in leaves[:3]) and torch.all(leaves[3] == 8 * 12)


def test_cpu_tensors_without_the_interpreter_are_one_clear_error(kernels, monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRETED", False)
    renderer = make_renderer(RenderConfig(backend="triton"), "cpu")
    with pytest.raises(UserError, match=r"^render.backend = triton needs CUDA tensors \(got cpu\)") as err:
        renderer(planted_scene(torch.float32), 8, 8)
    assert "\n" not in str(err.value)


def test_auto_picks_triton_for_cuda_and_keeps_the_others_selectable(kernels, monkeypatch):
    assert make_renderer(RenderConfig(backend="auto"), "cuda").name == "triton"
    assert make_renderer(RenderConfig(backend="auto"), "cpu").name == "fused"
    assert make_renderer(RenderConfig(backend="triton"), "cpu").name == "triton"
    monkeypatch.setattr(triton_backend, "available", lambda: False)
    monkeypatch.setattr(nvdiffrast, "available", lambda: False)
    assert make_renderer(RenderConfig(backend="auto"), "cuda").name == "torch"


def test_missing_triton_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    monkeypatch.delitem(sys.modules, "triangulate_ai.raster.kernels.triton_raster", raising=False)
    with pytest.raises(UserError, match="render.backend = triton needs the triton package"):
        make_renderer(RenderConfig(backend="triton"), "cuda")


COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triangulate_ai.raster.kernels import triton_raster as k

assert not k.INTERPRETED
index = {"pair_tri_ptr", "tile_start_ptr", "ckpt_start_ptr"}
for fn, flags in [(k.forward_kernel, {"STORE_CKPT": True}), (k.forward_kernel, {"STORE_CKPT": False}),
                  (k.backward_kernel, {"COLUMNS": k.GRAD_COLUMNS})]:
    for dtype in ["fp32", "fp64"]:
        constexprs = {"TS": 8, "BLOCK": 64, "CHUNK_": k.CHUNK, **flags}
        signature = {name: "constexpr" if name in constexprs else "*i64" if name in index
                     else f"*{dtype}" if name.endswith("_ptr") else "i32" for name in fn.arg_names}
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", 80, 32), options={"num_warps": 2})
        assert compiled.asm["cubin"]
"""


def test_kernels_compile_for_a_cuda_gpu(tmp_path):
    """The interpreter is laxer than the compiler (it ran a backward the compiler rejected), so
    both kernels are also compiled, through ptxas, for an sm_80 GPU: no GPU is needed for that.
    In a fresh process without TRITON_INTERPRET and with an empty kernel cache."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", COMPILE], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
