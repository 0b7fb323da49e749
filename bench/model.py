"""The shipped model on the Kodak test images: its one-pass prediction, and fits started from it.

On the 8 Kodak images at 256 px (whole images, read from ../shared/data/kodak and downscaled in
memory; no model trains, validates or is selected on them), every figure scored on the
hard-edged drawing of the exported SVG (resvg), as everywhere else:

  one_pass   PSNR/SSIM of the model's one-pass prediction, and milliseconds per image: the
             network alone, with the soft render, and with the SVG drawing (median of --repeats,
             one image at a time);
  fits       fits with configs/quality.yaml at the model's N, started from the model
             (triangles.init: model) and as quality.yaml starts them (progressive), each with
             --budgets seconds of optimisation loop: the PSNR at the end of each budget, and in
             the longest one snapshots every --every seconds, for the loop time at which the
             mean over the images reaches primitive's PSNR for N triangles
             (bench/results/primitive.json) and --level (today's 15-s PSNR).

    python bench/model.py --model default --json bench/results/model.json

Prints a Markdown table (progress on stderr) and writes JSON with every figure, the date, the
machine, the threads and the commit.
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
import torch  # noqa: E402

from triangulate_ai.api import Run  # noqa: E402
from triangulate_ai.config import RenderConfig, load_config  # noqa: E402
from triangulate_ai.export import rasterize_svg, scene_to_dict, svg_from_dict  # noqa: E402
from triangulate_ai.io import load_image  # noqa: E402
from triangulate_ai.metrics import flat_mean_psnr, image_quality  # noqa: E402
from triangulate_ai.model.predict import load_model  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402
from triangulate_ai.raster import Scene, make_renderer  # noqa: E402

IMAGES = ROOT.parent / "shared" / "data" / "kodak"
PRIMITIVE = ROOT / "bench" / "results" / "primitive.json"
CONFIG = ROOT / "configs" / "quality.yaml"


def drawing(scene: Scene, height: int, width: int) -> np.ndarray:
    return rasterize_svg(svg_from_dict(scene_to_dict(scene, height, width)))


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def one_pass(model, paths: list[Path], repeats: int) -> list[dict]:
    """The prediction of each image, scored, and timed three ways."""
    renderer = make_renderer(RenderConfig(), "cpu")
    rows = []
    for path in paths:
        image = load_image(path, 256)
        target = torch.from_numpy(image.colour).permute(2, 0, 1)[None]
        height, width = target.shape[-2:]
        with torch.no_grad():
            scene = model(target)
            quality = image_quality(drawing(scene, height, width), image.colour)

            def forward():
                return model(target)

            def with_render():
                return renderer(model(target), height, width)

            def with_drawing():
                return drawing(model(target), height, width)

            rows.append({"image": path.stem, "size": [width, height], "psnr": quality["psnr"],
                         "ssim": quality["ssim"], "psnr_flat_mean": flat_mean_psnr(target),
                         "ms_model": median_ms(forward, repeats), "ms_model_render": median_ms(with_render, repeats),
                         "ms_model_svg": median_ms(with_drawing, repeats)})
        print(f"  one pass {path.stem}: {quality['psnr']:.2f} dB, {rows[-1]['ms_model_svg']:.1f} ms with the drawing",
              file=sys.stderr, flush=True)
    return rows


class Snapshots:
    """Copies of the triangles every `every` seconds of optimisation loop (copying is cheap;
    the drawing and scoring happen after the fit, outside its clock)."""

    def __init__(self, every: float) -> None:
        self.every, self.next, self.taken = every, 0.0, []

    def on_step(self, fitter, result) -> None:
        if fitter.elapsed >= self.next:
            scene = Scene(*(t.detach().clone() for t in fitter.triangles.scene()))
            self.taken.append((fitter.elapsed, scene))
            self.next += self.every


def fit(path: Path, model: str, count: int, budget: float, start: str, every: float | None) -> dict:
    values = {"image.path": str(path), "triangles.count": count, "optim.time_limit": budget,
              "optim.iterations": None, "eval.lpips": None, "log.progress_bar": False}
    if start == "model":
        values.update({"triangles.init": "model", "triangles.model": model})
    cfg = load_config(CONFIG, values=values, values_source="bench")
    run = Run(cfg)
    snapshots = Snapshots(every) if every else None
    result = run.execute([snapshots] if snapshots else [])
    out = {"psnr": result.metrics["psnr"], "ssim": result.metrics["ssim"], "steps": result.metrics["iterations"],
           "loop_s": result.metrics["wall_time_s"]}
    if snapshots:
        target, (height, width) = result.target, (result.height, result.width)
        out["curve"] = [[round(t, 3), image_quality(drawing(scene, height, width), target)["psnr"]]
                        for t, scene in snapshots.taken]
    return out


def reach(curves: list[list[list[float]]], level: float, every: float) -> float | None:
    """The first snapshot time at which the mean of the images' PSNR reaches `level`."""
    length = min(len(c) for c in curves)
    means = np.mean([[p for _, p in c[:length]] for c in curves], axis=0)
    hits = np.nonzero(means >= level)[0]
    return round(float(hits[0] * every), 3) if len(hits) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a shipped model's name or a model checkpoint")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--budgets", type=float, nargs="+", default=[2.0, 5.0, 15.0], help="loop seconds per fit")
    parser.add_argument("--every", type=float, default=0.25, help="snapshot interval in the longest budget (s)")
    parser.add_argument("--level", type=float, default=24.6, help="the PSNR to reach besides primitive's")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-fits", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(args.images.glob("*.png"))
    model, cfg = load_model(args.model)
    count = model.count
    primitive = json.loads(PRIMITIVE.read_text())["mean"][str(count)]["psnr"]
    out = {**provenance(), "model": args.model, "triangles": count, "images": [p.stem for p in paths], "size": "256 px long side",
           "primitive_psnr": primitive, "level": args.level}
    rows = one_pass(model, paths, args.repeats)
    out["one_pass"] = {"images": rows, **{key: float(np.mean([r[key] for r in rows])) for key in
                                          ("psnr", "ssim", "psnr_flat_mean", "ms_model", "ms_model_render",
                                           "ms_model_svg")}}
    if not args.skip_fits:
        longest = max(args.budgets)
        fits: dict[str, dict] = {}
        for start in ("model", "quality"):
            fits[start] = {}
            for budget in args.budgets:
                per_image = {}
                for path in paths:
                    per_image[path.stem] = fit(path, args.model, count, budget, start,
                                               args.every if budget == longest else None)
                    print(f"  {start} {budget:g} s {path.stem}: {per_image[path.stem]['psnr']:.2f} dB",
                          file=sys.stderr, flush=True)
                fits[start][f"{budget:g}"] = {"mean_psnr": float(np.mean([r["psnr"] for r in per_image.values()])),
                                              "mean_ssim": float(np.mean([r["ssim"] for r in per_image.values()])),
                                              "images": per_image}
            curves = [r["curve"] for r in fits[start][f"{longest:g}"]["images"].values()]
            fits[start]["seconds_to_primitive"] = reach(curves, primitive, args.every)
            fits[start]["seconds_to_level"] = reach(curves, args.level, args.every)
        out["fits"] = fits
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def table(out: dict) -> str:
    one = out["one_pass"]
    lines = [f"one pass ({out['model']}, N = {out['triangles']}): {one['psnr']:.2f} dB PSNR, {one['ssim']:.4f} SSIM "
             f"(flat mean {one['psnr_flat_mean']:.2f} dB); {one['ms_model']:.1f} ms model, "
             f"{one['ms_model_render']:.1f} ms with the soft render, {one['ms_model_svg']:.1f} ms with the SVG drawing"]
    if "fits" in out:
        budgets = [k for k in out["fits"]["model"] if k[0].isdigit()]
        lines += ["", "| start | " + " | ".join(f"PSNR at {b} s" for b in budgets)
                  + f" | s to {out['primitive_psnr']:.2f} dB | s to {out['level']:.2f} dB |",
                  "|---|" + "---|" * (len(budgets) + 2)]
        for start, fits in out["fits"].items():
            cells = [f"{fits[b]['mean_psnr']:.2f}" for b in budgets]
            reached = [fits["seconds_to_primitive"], fits["seconds_to_level"]]
            lines.append(f"| {start} | " + " | ".join(cells) + " | "
                         + " | ".join("not reached" if r is None else f"{r:.2f}" for r in reached) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
