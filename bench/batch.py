"""Batched fitting throughput: fits per minute at B = 1, 4, 8, 16 scenes per launch.

For each image size and loss setting, B scenes (one image under B seeds) are fitted in one loop
for a few warm-up steps and then timed over `--steps` steps in each of `--rounds` rounds that
interleave the batch sizes (the median round counts); a fit is `--fit-steps` steps long,
so fits/min = 60 x B / (seconds per step x fit steps). The ratio to B = 1 of the same run is
what the numbers are for (the machine is noisy). Logging, evaluation and exports are switched
off: this measures the loop. Perceptual networks use random weights (speed does not depend on
the values), so it runs offline; the numbers they produce are not looked at.

    python bench/batch.py                       # 128 and 256 px, L1 and L1 + VGG + LPIPS
    python bench/batch.py --sizes 128 --batches 1 8 --terms l1

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from triangulate_ai.api import Job, Run  # noqa: E402
from triangulate_ai.config import load_config  # noqa: E402
from triangulate_ai.io import image_from_array  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402

TERMS = {
    "l1": [],
    "l1+vgg+lpips": ["loss.terms.vgg={weights: random}", "loss.terms.lpips={weights: random, net: vgg}"],
}
QUIET = ["log.every=1000000", "log.gif_every=1000000", "log.tensorboard.enabled=false", "log.warnings.enabled=false",
         "eval.every=1000000", "eval.lpips=null", "checkpoint.every=1000000", "log.progress_bar=false"]


def target(side: int):
    """The bundled image resized to side x side (Lanczos)."""
    with Image.open(ROOT / "examples" / "kodim23.png") as img:
        pixels = np.asarray(img.convert("RGB").resize((side, side), Image.LANCZOS))
    return image_from_array(pixels)


def make_fitter(side: int, batch: int, terms: str, triangles: int, rounds: int, steps: int, warmup: int,
                backend: str):
    """A batched Fitter of `batch` scenes (one image under `batch` seeds), warmed up."""
    image = target(side)
    sets = [f"triangles.count={triangles}", f"optim.iterations={warmup + rounds * steps}",
            f"render.backend={backend}", *QUIET, *TERMS[terms]]
    fitter = Run.batch([Job(load_config(None, [*sets, f"seed={seed}"]), image=image) for seed in range(batch)]).fitter
    for _ in range(warmup):
        fitter.train_step()
    return fitter


def seconds_per_step(fitters: dict, rounds: int, steps: int) -> dict[int, float]:
    """Median over rounds of the mean step time of each fitter; the rounds interleave the batch
    sizes (B=1, 4, 8, ..., B=1, 4, 8, ...) so that drift of a shared machine hits them alike."""
    times: dict[int, list[float]] = {batch: [] for batch in fitters}
    for _ in range(rounds):
        for batch, fitter in fitters.items():
            started = time.perf_counter()
            for _ in range(steps):
                fitter.train_step()
            times[batch].append((time.perf_counter() - started) / steps)
    return {batch: statistics.median(values) for batch, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/batch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--terms", nargs="+", choices=list(TERMS), default=list(TERMS))
    parser.add_argument("--triangles", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fit-steps", type=int, default=1000, help="steps of one fit, for fits/min")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    out = {**provenance(), "triangles": args.triangles, "fit_steps": args.fit_steps,
           "note": "perceptual networks with random weights (speed only)", "cases": []}
    for side in args.sizes:
        for terms in args.terms:
            fitters = {batch: make_fitter(side, batch, terms, args.triangles, args.rounds, args.steps, args.warmup,
                                          args.backend) for batch in args.batches}
            steps = seconds_per_step(fitters, args.rounds, args.steps)
            base = 60 * args.batches[0] / (steps[args.batches[0]] * args.fit_steps)
            for batch, step in steps.items():
                fits = 60 * batch / (step * args.fit_steps)
                case = {"size": side, "terms": terms, "batch": batch, "ms_per_step": round(step * 1000, 2),
                        "ms_per_scene_step": round(step * 1000 / batch, 2), "fits_per_min": round(fits, 3),
                        f"vs_b{args.batches[0]}": round(fits / base, 2)}
                out["cases"].append(case)
                print(json.dumps(case), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
