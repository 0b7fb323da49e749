"""Renderer speed and memory: forward and forward+backward per iteration for the tiled torch,
fused (CPU) and dense reference renderers; iterations per second of a whole fit; and the cost of
each loss term next to the render step.

Prints JSON. Each measurement runs in a fresh process so its peak memory (max RSS on CPU,
torch's peak allocation on CUDA) is its own. Times are the fastest of `--repeats` iterations
after a warm-up: on a shared machine the fastest is the least disturbed. Speed is compared as
ratios to the tiled renderer measured in the same run: the torch and fused processes alternate
for `--rounds` rounds, and the ratio quoted is the median of the per-round ratios (times quoted:
the fastest round), so a machine whose speed drifts still gives a fair comparison. `--threads`
sets the thread count of every measuring process (default: torch's). Perceptual networks use
random weights (speed does not depend on the values), so this runs offline.

    python bench/render.py [--device cpu|cuda] [--repeats 10] [--rounds 3] [--threads N]
                           [--cases 128x100,256x500,256x500x0.3,512x2000] [--fit-steps 100]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from triangulate_ai.api import prepare_target  # noqa: E402
from triangulate_ai.config import RenderConfig, load_config  # noqa: E402
from triangulate_ai.loss.perceptual import LpipsTermConfig  # noqa: E402
from triangulate_ai.loop import Fitter  # noqa: E402
from triangulate_ai.io import load_image  # noqa: E402
from triangulate_ai.loss import build_terms  # noqa: E402
from triangulate_ai.loss.perceptual import LPIPSTerm  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402
from triangulate_ai.raster import Scene, TiledRenderer, make_renderer  # noqa: E402
from triangulate_ai.raster.nvdiffrast import available as nvdiffrast_available  # noqa: E402

DENSE_BYTES_LIMIT = 12e9  # skip the dense renderer where its autograd graph would not fit
DENSE_BYTES_PER_PIXEL_TRIANGLE = 240  # measured: 7.8 GB at 256x256 with 500 triangles
ROOT = Path(__file__).resolve().parent.parent


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
    renderer = make_renderer(RenderConfig(backend=backend), device)  # the defaults a fit uses
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        (renderer(scene, side, side) - target).abs().mean().backward()

    forward_ms = _timed(lambda: renderer(scene, side, side), device, repeats)  # as in a fit: graph built
    step_ms = _timed(step, device, repeats)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    queue.put({"forward_ms": round(forward_ms, 2), "forward_backward_ms": round(step_ms, 2),
               "peak_mib": round(peak, 1)})


def _timed(fn, device: str, repeats: int) -> float:
    """Fastest milliseconds of fn() over `repeats` runs after one warm-up run."""
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
    return 1000 * min(times)


def _measure_terms(queue, side: int, count: int, size: float, device: str, repeats: int) -> None:
    """Forward+backward of each loss term on a (1, 3, side, side) image, and of the render step
    (tiled torch render + L1, the reference point the README quotes), in one process."""
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


def _fit_rate(queue, backend: str, steps: int) -> None:
    """Iterations per second of the quickstart fit of examples/kodim23.png (after one warm-up step)."""
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"image.path={ROOT / 'examples' / 'kodim23.png'}", f"render.backend={backend}"])
    image = load_image(cfg.image.path, cfg.image.max_size)
    torch.manual_seed(cfg.seed)
    _, target, background, mask = prepare_target(image, cfg, torch.device("cpu"))
    fitter = Fitter(cfg, target, background, mask)
    fitter.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        fitter.train_step()
    queue.put({"iterations_per_s": round(steps / (time.perf_counter() - start), 2)})


def measure(backend: str, side: int, count: int, size: float, device: str, repeats: int) -> dict:
    return _in_fresh_process(_measure, backend, side, count, size, device, repeats)


def fit_rate(backend: str, steps: int) -> dict:
    return _in_fresh_process(_fit_rate, backend, steps)


def _in_fresh_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _parse_case(case: str, size: float) -> tuple[int, int, float]:
    """SIDExTRIANGLES[xSIZE] -> (side, count, size)."""
    parts = case.split("x")
    return int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else size


def _alternate(backends: list[str], rounds: int, run, *args) -> dict:
    """run(backend, *args) for each backend once per round, in turn; per backend the fastest round
    (and each round's figures for the ratios)."""
    per_round = [{b: run(b, *args) for b in backends} for _ in range(rounds)]
    return {"rounds": per_round, "best": {b: _best([r[b] for r in per_round]) for b in backends}}


def _best(results: list[dict]) -> dict:
    """Fastest time and largest rate over rounds; the median peak memory."""
    out = {}
    for key in results[0]:
        values = [r[key] for r in results]
        out[key] = statistics.median(values) if key == "peak_mib" else (
            max(values) if key.endswith("_per_s") else min(values))
    return out


def _ratio(per_round: list[dict], backend: str, key: str) -> float:
    """Median over rounds of backend / torch for one figure."""
    return round(statistics.median(r[backend][key] / r["torch"][key] for r in per_round), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating torch/fused processes per case")
    parser.add_argument("--dense-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="threads per measuring process (0: torch's default)")
    parser.add_argument("--cases", default="128x100,256x500,256x500x0.3,512x2000",
                        help="comma-separated SIDExTRIANGLES[xSIZE] cases (square images)")
    parser.add_argument("--size", type=float, default=0.08, help="default triangle spread, fraction of the side")
    parser.add_argument("--fit-steps", type=int, default=100, help="quickstart fit steps timed (0 skips the fit)")
    parser.add_argument("--terms-case", default="256x500", help="SIDExTRIANGLES for the loss-term costs")
    parser.add_argument("--json", type=Path, help="also write the JSON here (with date, machine and commit)")
    args = parser.parse_args()
    if args.threads:  # read by torch when each spawned process imports it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    fast = ["torch"] + (["fused"] if args.device == "cpu" else ["nvdiffrast"] if nvdiffrast_available() else [])
    rows = []
    for case in args.cases.split(","):
        side, count, size = _parse_case(case, args.size)
        row = {"image": f"{side}x{side}", "triangles": count, "triangle_size": size}
        timed = _alternate(fast, args.rounds, measure, side, count, size, args.device, args.repeats)
        row.update(timed["best"])
        for backend in fast[1:]:
            row[f"{backend}_over_torch"] = {key: _ratio(timed["rounds"], backend, key) for key in row["torch"]}
        if side * side * count * DENSE_BYTES_PER_PIXEL_TRIANGLE <= DENSE_BYTES_LIMIT:
            row["reference"] = measure("reference", side, count, size, args.device, args.dense_repeats)
            row["reference_over_torch"] = {key: round(row["reference"][key] / row["torch"][key], 4)
                                           for key in row["torch"]}
        else:
            row["reference"] = "skipped: its graph would need more than 12 GB"
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    out = {**provenance(), "device": args.device, "threads": args.threads or torch.get_num_threads(),
           "results": rows}
    if args.fit_steps and args.device == "cpu":
        timed = _alternate(fast, args.rounds, fit_rate, args.fit_steps)
        out["quickstart_fit"] = {"image": "examples/kodim23.png", "config": "configs/quickstart.yaml",
                                 "steps": args.fit_steps, **timed["best"],
                                 "fused_over_torch_rate": _ratio(timed["rounds"], "fused", "iterations_per_s")}
        print(json.dumps(out["quickstart_fit"]), file=sys.stderr)
    side, count = (int(v) for v in args.terms_case.split("x"))
    out["loss_terms"] = {"image": f"{side}x{side}", "triangles": count,
                         **_in_fresh_process(_measure_terms, side, count, args.size, args.device, args.repeats)}
    print(json.dumps(out["loss_terms"]), file=sys.stderr)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
