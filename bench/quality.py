"""Fit quality at equal time (or equal steps) on the Kodak test images, scored on the export.

For each triangle count N and its time budget (100 triangles in 15 s, 500 in 55 s: the time
primitive takes to place as many), every image is fitted under the budget and the exported SVG,
drawn hard-edged by resvg, is scored with PSNR/SSIM; primitive's figures for the same images
are printed beside ours. Images are read from ../shared/data/kodak (or --images) and downscaled
in memory to 256 px on the long side (Lanczos); they are never copied into the repository.
At --size 768 (the images' full size) the runs are 1000 triangles in 30 s and 2000 in 60 s, and
primitive's figure is what it reached in the same 60 s of wall time.

    python bench/quality.py                                  # both budgets, all eight images
    python bench/quality.py --size 768                       # at full size
    python bench/quality.py --counts 100 --budgets 15 --only kodim01 kodim23 --set respawn.every=25
    python bench/quality.py --iterations 2000                # equal steps instead of equal time
    python bench/quality.py --repeats 3                      # every fit three times

A fit under a time budget depends on how many steps the machine gives it (its schedules are shares
of the budget), so the same settings land a few tenths of a dB apart from run to run. With
--repeats R every image is fitted R times (the repeats interleaved: all images once, then again)
and each image's figures are the mean of its R fits; the table also gives the spread of the R
means over the images. Prints a Markdown table and writes JSON (--json) with every fit.
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


from triangulate_ai import fit  # noqa: E402
from triangulate_ai.provenance import provenance  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "kodak"
PRIMITIVE = ROOT / "bench" / "results" / "primitive.json"


def primitive_figures(size: int, count: int, budget: float | None) -> tuple[dict, float | None]:
    """primitive's measured figures to compare with: ({image: {"psnr": ...}}, mean PSNR of all
    eight or None). At 256 px its frame with the same triangle count (it takes about our budget to
    place them); at full size (768 px) what it reached in the same wall time, whatever its count."""
    figures = json.loads(PRIMITIVE.read_text()) if PRIMITIVE.is_file() else {}
    if size == 256:
        images = {name: by_count[str(count)] for name, by_count in figures.get("images", {}).items()
                  if str(count) in by_count}
        return images, figures.get("mean", {}).get(str(count), {}).get("psnr")
    full = figures.get("full_size", {})
    if full.get("size") == size and budget == full.get("seconds"):
        return full["images"], full["mean"]["psnr"]
    return {}, None


def run(images: list[Path], count: int, budget: float | None, iterations: int | None, config: Path,
        overrides: dict, size: int = 256) -> list[dict]:
    """One fit of each image."""
    rows = []
    for path in images:
        started = time.perf_counter()
        result = fit(path, config=config, overrides={**overrides, "image.max_size": size, "eval.lpips": None,
                                                 "log.progress_bar": False},
                     triangles=count, time_limit=budget, iterations=iterations)
        wall = time.perf_counter() - started
        m = result.metrics
        rows.append({"image": path.stem, "size": [m["width"], m["height"]], "triangles": count, "psnr": m["psnr"],
                     "ssim": m["ssim"], "psnr_soft": m["psnr_soft"], "iterations": m["iterations"],
                     "loop_s": m["wall_time_s"], "wall_s": round(wall, 2), "stopped_by": m["stopped_by"]})
        print(f"  {path.stem} N={count}: {m['psnr']:.2f} dB / {m['ssim']:.3f} ({m['iterations']} steps, "
              f"{m['wall_time_s']:.1f} s loop)", file=sys.stderr, flush=True)
    return rows


def repeated(fits: list[list[dict]]) -> list[dict]:
    """Per image, the mean of its fits (one list of rows per repeat), with every fit kept."""
    rows = []
    for same in zip(*fits):
        row = {key: same[0][key] for key in ("image", "size", "triangles")}
        for key in ("psnr", "ssim", "psnr_soft", "iterations", "loop_s", "wall_s"):
            row[key] = statistics.mean(fit[key] for fit in same)
        row["fits"] = [{key: fit[key] for key in ("psnr", "ssim", "iterations", "loop_s", "stopped_by")}
                       for fit in same]
        rows.append(row)
    return rows


def table(rows: list[dict], count: int, budget: str, reference: tuple[dict, float | None]) -> str:
    ref_images, ref_mean = reference
    names = [r["image"] for r in rows]
    lines = [f"**N = {count}, {budget}**", "",
             "| image | PSNR (dB) | SSIM | primitive PSNR | Δ PSNR | steps | loop time (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = ref_images.get(r["image"])
        compared = f"{ref['psnr']:.2f} | {r['psnr'] - ref['psnr']:+.2f}" if ref else "– | –"
        lines.append(f"| {r['image']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {compared} | {r['iterations']:.0f} "
                     f"| {r['loop_s']:.1f} |")
    mean_psnr = sum(r["psnr"] for r in rows) / len(rows)
    mean_ssim = sum(r["ssim"] for r in rows) / len(rows)
    if ref_images and all(n in ref_images for n in names):
        ref_psnr = sum(ref_images[n]["psnr"] for n in names) / len(names)
    else:
        ref_psnr = ref_mean if len(names) == 8 else None
    delta = f"**{mean_psnr - ref_psnr:+.2f}**" if ref_psnr is not None else "–"
    ref_text = f"{ref_psnr:.2f}" if ref_psnr is not None else "–"
    lines.append(f"| **mean** | **{mean_psnr:.2f}** | **{mean_ssim:.3f}** | {ref_text} | {delta} | | |")
    repeats = len(rows[0].get("fits", [None]))
    if repeats > 1:
        means = [statistics.mean(r["fits"][i]["psnr"] for r in rows) for i in range(repeats)]
        lines += ["", f"Means of the {repeats} repeats: " + ", ".join(f"{m:.2f}" for m in means) + " dB"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of test images")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="image names (stems) to fit")
    parser.add_argument("--counts", type=int, nargs="+", help="default 100 500 (at --size 768: 1000 2000)")
    parser.add_argument("--budgets", type=float, nargs="+", help="seconds, one per count; default 15 55 (30 60)")
    parser.add_argument("--iterations", type=int, help="equal steps instead of equal time")
    parser.add_argument("--size", type=int, default=256, help="long side in pixels (Kodak's full size: 768)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quality.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=1, help="fits per image (interleaved); figures are means")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    full = args.size != 256
    args.counts = args.counts or ([1000, 2000] if full else [100, 500])
    args.budgets = args.budgets or ([30, 60] if full else [15, 55])
    if args.iterations is None and len(args.budgets) != len(args.counts):
        parser.error("give one --budgets value per --counts value")
    images = sorted(p for p in args.images.glob("*.png") if not args.only or p.stem in args.only)
    if not images:
        parser.error(f"no PNG images in {args.images}")
    from triangulate_ai.config import safe_load

    overrides = {key: safe_load(value) for key, _, value in (item.partition("=") for item in args.overrides)}
    out = {**provenance(), "size": args.size,
           "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
           "overrides": overrides, "repeats": args.repeats, "runs": []}
    tables = []
    for i, count in enumerate(args.counts):
        budget = None if args.iterations else args.budgets[i]
        label = f"{args.iterations} steps" if args.iterations else f"{budget:g} s"
        fits = [run(images, count, budget, args.iterations, args.config, overrides, args.size)
                for _ in range(args.repeats)]
        rows = repeated(fits) if args.repeats > 1 else fits[0]
        entry = {"triangles": count, "budget": label, "rows": rows}
        if args.repeats > 1:
            entry["repeat_means"] = [statistics.mean(fit["psnr"] for fit in one) for one in fits]
        out["runs"].append(entry)
        tables.append(table(rows, count, label, primitive_figures(args.size, count, budget)))
    print("\n\n".join(tables))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
