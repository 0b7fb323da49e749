"""GPU renderer benchmark: triton vs nvdiffrast vs torch-tiled, render forward+backward and whole
fits, at batch 1 and 64. Prints JSON. Needs CUDA; without it, says so in one line and exits 0.

    python bench/gpu.py [--repeats 10] [--fit-iterations 50] [--cases 256x500,512x2000] [--batches 1,64]
    python bench/gpu.py --bins --json bench/results/bins.json     # on any machine: the work per case

--bins counts what the kernels get to do in each case (the binning runs on the CPU): (tile,
triangle) pairs, pixel-pairs, pairs per pixel, the deepest tile, and the transmittance checkpoint
rows of the Triton backward (one per CHUNK pairs of a tile), for docs/gpu.md's estimates.

Render: translucent random triangles (opacity 0.1..0.9) like bench/render.py, L1 against a random
target, median milliseconds per forward+backward after a warm-up call (the first Triton call
compiles its kernels; that time is reported apart), peak CUDA memory, and for triton the largest
difference from the torch-tiled image (the same soft model: a parity check on the GPU itself).
nvdiffrast draws hard edges with depth peeling (render.max_layers), so it is a speed peer only.
Fit: configs/quickstart.yaml on examples/kodim23.png (256 px, 300 triangles, L1), the image
repeated over the batch, iterations/s of Fitter.train_step; `batch_over_separate` is the
throughput of one batched fit over that of fitting the same images one at a time.
A case that runs out of memory is reported as such, and the others still run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from triangulate_ai.api import prepare_target  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402
from triangulate_ai.config import RenderConfig, load_config  # noqa: E402
from triangulate_ai.loop import Fitter  # noqa: E402
from triangulate_ai.io import load_image  # noqa: E402
from triangulate_ai.raster import Scene, make_renderer, nvdiffrast, triton  # noqa: E402
from triangulate_ai.raster.base import support_radius  # noqa: E402
from triangulate_ai.raster.binning import bin_triangles  # noqa: E402

BACKENDS = ("triton", "nvdiffrast", "torch")
DEVICE = "cuda"


BIN_CASES = ((256, 500, 8, 0.08), (512, 2000, 8, 0.08), (512, 2000, 16, 0.08), (256, 300, 8, 0.12))  # side, count,
# tile, spread; the last is the size of the quickstart fit's triangles
CHUNK = 16  # pairs per transmittance checkpoint (kernels/triton_raster.py)


def random_scene(batch: int, count: int, size: float, seed: int = 0, device: str = DEVICE) -> Scene:
    """Triangles like the default random init: centres on the canvas, vertices within `size`."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, count, 1, 2, generator=g)
    verts = centres + (torch.rand(batch, count, 3, 2, generator=g) - 0.5) * size
    scene = Scene(verts, torch.rand(batch, count, 3, generator=g), torch.rand(batch, count, generator=g) * 0.8 + 0.1,
                  torch.rand(batch, 3, generator=g))
    return Scene(*(t.to(device).requires_grad_() for t in scene))


def bin_counts(side: int, count: int, tile: int, size: float, sigma: float = 0.3, cutoff: float = 1e-6) -> dict:
    """What the tiled kernels get to do for one scene of this case (the binning, on the CPU)."""
    scene = random_scene(1, count, size, device="cpu")
    n_tiles = -(-side // tile)
    tiles, _ = bin_triangles(scene.to_pixels(side, side).detach(), support_radius(sigma, cutoff), tile, n_tiles,
                             n_tiles)
    per_tile = torch.bincount(tiles, minlength=n_tiles * n_tiles)
    return {"image": f"{side}x{side}", "triangles": count, "tile": tile, "spread": size,
            "margin_px": round(support_radius(sigma, cutoff), 2), "pairs": int(tiles.numel()),
            "pixel_pairs": int(tiles.numel()) * tile * tile,
            "pairs_per_pixel": round(tiles.numel() * tile * tile / side**2, 2),
            "deepest_tile": int(per_tile.max()), "checkpoint_rows": int((-(-per_tile // CHUNK)).sum())}


def missing(backend: str) -> str | None:
    """Why `backend` cannot run here, or None."""
    if backend == "triton" and not triton.available():
        return "not run: the triton package is not installed"
    if backend == "nvdiffrast" and not nvdiffrast.available():
        return "not run: nvdiffrast is not installed (see the README's nvdiffrast section)"
    return None


def timed_ms(fn, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` calls, each synchronised."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure_render(backend: str, side: int, count: int, batch: int, size: float, repeats: int) -> dict:
    scene = random_scene(batch, count, size)
    target = torch.rand(batch, 3, side, side, device=DEVICE)
    renderer = make_renderer(RenderConfig(backend=backend), DEVICE)

    def step():
        for t in scene:
            t.grad = None
        (renderer(scene, side, side) - target).abs().mean().backward()

    torch.cuda.reset_peak_memory_stats()
    first = timed_ms(step, 1)  # compiles the Triton kernels on first use
    row = {"ms_forward_backward": round(timed_ms(step, repeats), 3), "first_call_ms": round(first, 1),
           "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    row["scenes_per_s"] = round(1000 * batch / row["ms_forward_backward"], 1)
    if backend == "triton":
        with torch.no_grad():
            tiled = make_renderer(RenderConfig(backend="torch"), DEVICE)(scene, side, side)
            row["max_abs_diff_vs_torch"] = float((renderer(scene, side, side) - tiled).abs().max())
    return row


def measure_fit(backend: str, batch: int, iterations: int) -> dict:
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"render.backend={backend}", f"device={DEVICE}", "log.progress_bar=false"])
    image = load_image(ROOT / "examples" / "kodim23.png", cfg.image.max_size)
    _, target, background, mask = prepare_target(image, cfg, torch.device(DEVICE))
    fitter = Fitter(cfg, target.expand(batch, -1, -1, -1).contiguous(), background.expand(batch, -1).contiguous(),
                    None if mask is None else mask.expand(batch, -1, -1, -1).contiguous())
    for _ in range(5):  # warm-up, kernel compilation included
        fitter.train_step()
    ms = timed_ms(lambda: [fitter.train_step() for _ in range(iterations)], 1) / iterations
    return {"iterations_per_s": round(1000 / ms, 2), "scene_iterations_per_s": round(1000 * batch / ms, 2)}


def guarded(fn, *args) -> dict | str:
    """fn(*args), or why it could not finish (out of memory, a kernel that would not build), so
    one failing case does not stop the others."""
    try:
        return fn(*args)
    except torch.cuda.OutOfMemoryError:
        return "out of memory"
    except Exception as exc:  # reported in the JSON; the other cases still run
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--fit-iterations", type=int, default=50)
    parser.add_argument("--cases", default="256x500,512x2000", help="comma-separated SIDExTRIANGLES (square)")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--size", type=float, default=0.08, help="triangle spread, fraction of the side")
    parser.add_argument("--bins", action="store_true", help="only count the binning's work per case (CPU)")
    parser.add_argument("--json", type=Path, help="with --bins: write the counts here too")
    args = parser.parse_args()
    if args.bins:
        counts = {**provenance(), "sigma": 0.3, "cutoff": 1e-6, "cases": [bin_counts(*case) for case in BIN_CASES]}
        text = json.dumps(counts, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
        return 0
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device on this machine, nothing measured")
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    render = []
    for case in args.cases.split(","):
        side, count = (int(v) for v in case.split("x"))
        for batch in batches:
            row = {"image": f"{side}x{side}", "triangles": count, "batch": batch}
            for backend in BACKENDS:
                row[backend] = missing(backend) or guarded(measure_render, backend, side, count, batch, args.size,
                                                            args.repeats)
            render.append(row)
            print(json.dumps(row), file=sys.stderr)
    fit = {}
    small, large = min(batches), max(batches)
    for backend in BACKENDS:
        fit[backend] = {f"batch_{b}": missing(backend) or guarded(measure_fit, backend, b, args.fit_iterations)
                        for b in batches}
        rates = [fit[backend][f"batch_{b}"] for b in (small, large)]
        if small == 1 < large and all(isinstance(r, dict) for r in rates):
            fit[backend]["batch_over_separate"] = round(rates[1]["scene_iterations_per_s"]
                                                        / rates[0]["scene_iterations_per_s"], 2)
        print(json.dumps({"fit": backend, **fit[backend]}), file=sys.stderr)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
                      "triton": _version("triton"), "python": platform.python_version(),
                      "render": render, "fit_quickstart": fit}, indent=2))
    return 0


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
