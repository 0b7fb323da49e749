"""Renderer speed and memory: forward+backward per iteration, dense reference vs tiled.

Prints JSON. Each measurement runs in a fresh process so its peak memory (max RSS on CPU,
torch's peak allocation on CUDA) is its own. Speed is compared as tiled/dense in the same run.

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

from triangulate_ai.config import RenderConfig  # noqa: E402
from triangulate_ai.render import ReferenceRenderer, Scene, TiledRenderer  # noqa: E402

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


def measure(backend: str, side: int, count: int, size: float, device: str, repeats: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(queue, backend, side, count, size, device, repeats))
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
    args = parser.parse_args()

    rows = []
    for case in args.cases.split(","):
        side, count = (int(v) for v in case.split("x"))
        row = {"image": f"{side}x{side}", "triangles": count, "triangle_size": args.size}
        row["tiled"] = measure("tiled", side, count, args.size, args.device, args.repeats)
        if side * side * count * DENSE_BYTES_PER_PIXEL_TRIANGLE <= DENSE_BYTES_LIMIT:
            row["dense"] = measure("dense", side, count, args.size, args.device, args.dense_repeats)
            row["tiled_over_dense_time"] = round(row["tiled"]["ms_per_iter"] / row["dense"]["ms_per_iter"], 4)
        else:
            row["dense"] = "skipped: its graph would need more than 12 GB"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "python": platform.python_version(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
