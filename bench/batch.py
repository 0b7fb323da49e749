"""Batched fitting throughput: fits per minute at B = 1, 4, 8, 16 scenes per launch.

For each image size and loss setting, B scenes (one image under B seeds) are fitted in one loop
for a few warm-up steps and then timed over `--steps` steps; a fit is `--fit-steps` steps long,
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
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from triangulate_ai.api import Job, Run  # noqa: E402
from triangulate_ai.config import load_config  # noqa: E402
from triangulate_ai.io import image_from_array  # noqa: E402

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


def seconds_per_step(side: int, batch: int, terms: str, triangles: int, steps: int, warmup: int,
                     backend: str) -> float:
    image = target(side)
    sets = [f"triangles.count={triangles}", f"optim.iterations={warmup + steps}", f"render.backend={backend}",
            *QUIET, *TERMS[terms]]
    jobs = [Job(load_config(None, [*sets, f"seed={seed}"]), image=image) for seed in range(batch)]
    run = Run.batch(jobs)
    fitter = run.fitter
    for _ in range(warmup):
        fitter.train_step()
    started = time.perf_counter()
    for _ in range(steps):
        fitter.train_step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/batch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--terms", nargs="+", choices=list(TERMS), default=list(TERMS))
    parser.add_argument("--triangles", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--fit-steps", type=int, default=1000, help="steps of one fit, for fits/min")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    out = {"machine": {"threads": torch.get_num_threads(), "platform": platform.platform(),
                       "torch": torch.__version__}, "triangles": args.triangles, "fit_steps": args.fit_steps,
           "note": "perceptual networks with random weights (speed only)", "cases": []}
    for side in args.sizes:
        for terms in args.terms:
            base = None
            for batch in args.batches:
                step = seconds_per_step(side, batch, terms, args.triangles, args.steps, args.warmup, args.backend)
                fits = 60 * batch / (step * args.fit_steps)
                base = fits if batch == args.batches[0] else base
                case = {"size": side, "terms": terms, "batch": batch, "ms_per_step": round(step * 1000, 2),
                        "ms_per_scene_step": round(step * 1000 / batch, 2), "fits_per_min": round(fits, 3),
                        f"vs_b{args.batches[0]}": round(fits / base, 2)}
                out["cases"].append(case)
                print(json.dumps(case), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
