"""Per-iteration cost of each balancing method relative to `fixed`, on a 256x256 fit.

Terms: L1 + VGG16 (relu1_2..relu4_3) + LPIPS-alex with random weights (speed does not depend
on the values, so this runs offline). Each method runs the same fit for a few steps in this
process; the median step time is compared with that of `fixed` measured in the same run.
Prints JSON.

    python bench/balancers.py [--steps 6] [--triangles 300] [--rounds 3] [--json bench/results/balancers.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from triangulate_ai.balance import REGISTRY  # noqa: E402
from triangulate_ai.config import load_config  # noqa: E402
from triangulate_ai.loop import Fitter  # noqa: E402
from triangulate_ai.io import load_image  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402

METHODS = list(REGISTRY)  # every registered balancing method
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "kodim23.png"


def step_ms(method: str, target: torch.Tensor, steps: int, triangles: int) -> float:
    cfg = load_config(None, [f"loss.type={method}", f"triangles.count={triangles}",
                             "loss.terms.vgg={weights: random}", "loss.terms.lpips={net: alex, weights: random}"])
    fitter = Fitter(cfg, target, target.mean(dim=(2, 3)))
    times = []
    for i in range(steps + 1):  # the first step warms up and is not timed
        start = time.perf_counter()
        fitter.train_step()
        if i:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--triangles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1, help="every method measured this many times, interleaved")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    image = load_image(EXAMPLE)
    target = torch.nn.functional.interpolate(torch.from_numpy(image.colour).permute(2, 0, 1)[None],
                                             size=(256, 256), mode="bilinear", align_corners=False)
    methods = list(dict.fromkeys(["fixed", *args.methods]))
    times: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(args.rounds):  # interleaved, so a slow spell of the machine touches every method
        for method in methods:
            times[method].append(step_ms(method, target, args.steps, args.triangles))
            print(method, round(times[method][-1], 1), file=sys.stderr, flush=True)
    results = {method: {"ms_per_step": round(statistics.median(values), 1)} for method, values in times.items()}
    base = results["fixed"]["ms_per_step"]
    for row in results.values():
        row["over_fixed"] = round(row["ms_per_step"] / base, 3)
    out = {**provenance(), "image": "256x256", "triangles": args.triangles, "steps": args.steps, "rounds": args.rounds,
           "terms": "l1 + vgg16 + lpips-alex (random)", "results": results}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
