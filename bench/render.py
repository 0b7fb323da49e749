"""Renderer speed and memory: forward+backward per iteration, dense reference vs tiled; and the
cost of each loss term next to the render step.

Prints JSON. Each measurement runs in a fresh process so its peak memory (max RSS on CPU,
torch's peak allocation on CUDA) is its own. Speed is compared as tiled/dense, and as
term/render, in the same run. Perceptual networks use random weights (speed does not depend on
the values), so this runs offline.

    python bench/render.py [--device cpu|cuda] [--repeats 5] [--cases 128x100,256x500,512x2000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from triangulate_ai.config import LpipsTermConfig, RenderConfig, load_config  # noqa: E402
from triangulate_ai.loss import build_terms  # noqa: E402
from triangulate_ai.loss.perceptual import LPIPSTerm  # noqa: E402
from triangulate_ai.render import ReferenceRenderer, Scene, TiledRenderer, make_renderer  # noqa: E402
from triangulate_ai.render.nvdiffrast import available as nvdiffrast_available  # noqa: E402

DENSE_BYTES_LIMIT = 12e9 # skip the dense renderer where its autograd graph would not fit
DENSE_BYTES_PER_PIXEL_TRIANGLE = 240  # measured: 7.8 GB at 256x256 with 500 triangles


def random_scene(count: int, size: float, device: str, seed: int = 0) -> Scene:
    """Triangles like the default random init: centres on the canvas, vertices within `size`."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(1, count, 1, 2, generator=g)
    verts = centres + (torch.rand(1, count, 3, 2, generator=g) - 0.5) * size
    scene = Scene(verts, torch.rand(1, count, 3, generator=g), torch.rand(1, count, generator=g) * 0.8 + 0.1,
                  torch.rand(1, 3, generator=g))
    return Scene(*(t.to(device).requires_grad_() for t in scene))


def _measure(queue, backend: str, side: int, count: int, size: float, device: str, repeats: int) -> None:
    torch.manual_seed(0)
    scene = random_scene(count, size, device)
    target = torch.rand(1, 3, side, side, device=device)
    cfg = RenderConfig()  # the defaults a fit uses
    if backend == "dense":
        renderer = ReferenceRenderer(cfg.sigma)
    elif backend == "nvdiffrast":
        renderer = make_renderer(RenderConfig(backend="nvdiffrast"))
    else:
        renderer = TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeats + 1):  # the first run warms up and is not timed
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = (renderer(scene, side, side) - target).abs().mean()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    queue.put({"ms_per_iter": round(1000 * statistics.median(times), 2), "peak_mib": round(peak, 1)})


def _timed(fn, device: str, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` runs after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _measure_terms(queue, side: int, count: int, size: float, device: str, repeats: int) -> None:
    """Forward+backward of each loss term on a (1, 3, side, side) image, and of the render step
    (tiled render + L1), in one process."""
    scene = random_scene(count, size, device)
    target = torch.rand(1, 3, side, side, device=device)
    cfg = RenderConfig()
    renderer = TiledRenderer(cfg.sigma, cfg.tile_size, cfg.cutoff)

    def render_step():
        (renderer(scene, side, side) - target).abs().mean().backward()

    render_ms = _timed(render_step, device, repeats)
    loss = load_config(None, ["loss.terms.vgg={weights: random}", "loss.terms.lpips={net: vgg, weights: random}"]).loss
    terms = {"l1": None, "vgg16 relu1_2..relu4_3": None, "lpips vgg": None}
    terms.update(zip(terms, build_terms(loss).values()))
    terms["lpips alex"] = LPIPSTerm(LpipsTermConfig(net="alex", weights="random"))
    image = torch.rand(1, 3, side, side, device=device, requires_grad=True)
    out = {"render_step_ms": round(render_ms, 2), "terms": {}}
    for name, term in terms.items():
        term.prepare(torch.device(device), torch.float32)
        ms = _timed(lambda: term(image, target).backward(), device, repeats)
        out["terms"][name] = {"ms": round(ms, 2), "over_render_step": round(ms / render_ms, 3)}
    queue.put(out)


def measure(backend: str, side: int, count: int, size: float, device: str, repeats: int) -> dict:
    return _in_fresh_process(_measure, backend, side, count, size, device, repeats)


def _in_fresh_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-repeats", type=int, default=2)
    parser.add_argument("--cases", default="128x100,256x500,512x2000",
                        help="comma-separated SIDExTRIANGLES cases (square images)")
    parser.add_argument("--size", type=float, default=0.08, help="triangle spread, fraction of the side")
    parser.add_argument("--terms-case", default="256x500", help="SIDExTRIANGLES for the loss-term costs")
    args = parser.parse_args()

    rows = []
    for case in args.cases.split(","):
        side, count = (int(v) for v in case.split("x"))
        row = {"image": f"{side}x{side}", "triangles": count, "triangle_size": args.size}
        row["tiled"] = measure("tiled", side, count, args.size, args.device, args.repeats)
        if args.device == "cuda" and nvdiffrast_available():
            row["nvdiffrast"] = measure("nvdiffrast", side, count, args.size, args.device, args.repeats)
            row["nvdiffrast_over_tiled_time"] = round(row["nvdiffrast"]["ms_per_iter"] / row["tiled"]["ms_per_iter"], 4)
        if side * side * count * DENSE_BYTES_PER_PIXEL_TRIANGLE <= DENSE_BYTES_LIMIT:
            row["dense"] = measure("dense", side, count, args.size, args.device, args.dense_repeats)
            row["tiled_over_dense_time"] = round(row["tiled"]["ms_per_iter"] / row["dense"]["ms_per_iter"], 4)
        else:
            row["dense"] = "skipped: its graph would need more than 12 GB"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    side, count = (int(v) for v in args.terms_case.split("x"))
    terms = {"image": f"{side}x{side}", "triangles": count,
             **_in_fresh_process(_measure_terms, side, count, args.size, args.device, args.repeats)}
    print(json.dumps(terms), file=sys.stderr)
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "python": platform.python_version(), "results": rows, "loss_terms": terms}, indent=2))


if __name__ == "__main__":
    main()
