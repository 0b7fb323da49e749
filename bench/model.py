"""The amortized model against the flat mean colour and against per-image fits.

On crops of the model's held-out (validation) images, drawn with another seed than its
validation crops:
  one_pass    the model's one-pass prediction, PSNR/SSIM of the hard-edged export, against the
              flat mean colour of each crop (target: >= 3 dB better);
  refinement  per-image fits at the model's N, from scratch (the fit config's initialiser) and
              from the model's prediction (triangles.init: model), same config otherwise; the
              hard-edged PSNR is measured every --every steps. The target (<= 1/3 of --steps) is
              read on the mean curves: the first step at which the refinements' mean PSNR reaches
              the from-scratch fits' final mean; per crop, the steps each refinement takes to reach
              its own crop's from-scratch final PSNR are given too. The gap of the one-pass
              prediction to the from-scratch fit's final PSNR is the goal's figure (within 2 dB of
              a 1000-step fit);
  inference   the model's forward pass on one 128x128 image (and with the soft render, and with
              the hard-edged export), median of --repeats (goal: <= 20 ms).

    python bench/model.py --model runs/model_l1 --threads 1 --figure docs/model/refinement.png

Run it from the folder the model was trained in (its image paths are relative to it). Prints
JSON (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from triangulate_ai.config import load_config  # noqa: E402
from triangulate_ai.export import rasterize_svg, scene_to_dict, svg_from_dict  # noqa: E402
from triangulate_ai.loop import Fitter  # noqa: E402
from triangulate_ai.metrics import image_quality  # noqa: E402
from triangulate_ai.model.data import load_sources, validation_crops  # noqa: E402
from triangulate_ai.model.predict import load_model  # noqa: E402
from triangulate_ai.model.record import read_model_checkpoint  # noqa: E402
from triangulate_ai.raster import Scene, make_renderer  # noqa: E402

QUIET = ["log.progress_bar=false", "eval.lpips=null"]


def drawing(scene: Scene, index: int, height: int, width: int) -> np.ndarray:
    return rasterize_svg(svg_from_dict(scene_to_dict(scene, height, width, index=index)))


def held_out_crops(checkpoint: Path, per_image: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Crops of the checkpoint's validation images (its data settings, another seed)."""
    state = read_model_checkpoint(checkpoint, torch.device("cpu"))
    _, cfg = load_model(checkpoint)
    val = set(state["split"]["val"])
    data = cfg.data.model_copy(update={"images": sorted(val), "val_crops": per_image})
    sources = [s for s in load_sources(data) if str(s.path) in val]
    return validation_crops(sources, data, seed), [str(s.path) for s in sources]


def fit_curve(fit_cfg, crops: torch.Tensor, every: int) -> tuple[list[int], np.ndarray]:
    """Fit every crop (one batch), PSNR of each crop's hard-edged export at steps 0, every, ..."""
    fitter = Fitter(fit_cfg, crops, crops.mean(dim=(2, 3)))
    height, width = crops.shape[-2:]
    targets = [c.permute(1, 2, 0).numpy() for c in crops]
    steps, rows = [], []
    while True:
        scene = fitter.triangles.scene()
        rows.append([image_quality(drawing(scene, b, height, width), targets[b])["psnr"] for b in range(len(crops))])
        steps.append(fitter.step)
        if fitter.step >= fit_cfg.optim.iterations:
            return steps, np.asarray(rows)
        for _ in range(min(every, fit_cfg.optim.iterations - fitter.step)):
            fitter.train_step()


def inference_ms(model, image: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of the forward pass, + soft render, + hard-edged export, on one image."""
    renderer = make_renderer(load_config(None, QUIET).render)
    height, width = image.shape[-2:]

    def forward():
        return model(image)

    def soft():
        return renderer(model(image), height, width)

    def hard():
        return drawing(model(image), 0, height, width)

    out = {}
    with torch.no_grad():
        for name, fn in (("forward", forward), ("forward_soft_render", soft), ("forward_hard_export", hard)):
            for _ in range(5):
                fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000)
            out[f"{name}_ms"] = round(statistics.median(times), 3)
    return out


def machine() -> str:
    """The CPU's model name and core count, for the record."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} logical CPUs"


def first_reach(steps: list[int], curve: np.ndarray, level: float) -> int | None:
    """The first measured step at which `curve` reaches `level`, or None."""
    hits = np.nonzero(curve >= level)[0]
    return int(steps[hits[0]]) if len(hits) else None


def plot(path: Path, steps: list[int], scratch: np.ndarray, refined: np.ndarray, one_pass: float,
         flat: float, note: str) -> None:
    """Mean hard-edged PSNR over the held-out crops against fit steps, both starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(steps, scratch.mean(axis=1), label="fit from scratch")
    ax.plot(steps, refined.mean(axis=1), label="fit from the model's prediction")
    ax.axhline(one_pass, color="tab:green", linestyle=":", label="one-pass prediction")
    ax.axhline(flat, color="grey", linestyle="--", label="flat mean colour")
    ax.axvline(steps[-1] / 3, color="black", linewidth=0.6, label="1/3 of the steps")
    ax.set_xlabel("fit step")
    ax.set_ylabel("mean PSNR (dB), hard-edged")
    ax.set_title(note, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a training folder or its checkpoint.pt")
    parser.add_argument("--fit-config", type=Path, help="config of the per-image fits (default: configs/base.yaml's "
                        "defaults, L1, with the model's triangle count)")
    parser.add_argument("--crops", type=int, default=16, help="crops per held-out image")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out crops")
    parser.add_argument("--steps", type=int, default=1000, help="steps of each per-image fit")
    parser.add_argument("--every", type=int, default=10, help="steps between PSNR measurements during the fits")
    parser.add_argument("--size", type=int, default=128, help="side of the image the inference time is taken on")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the fit config (both starts), e.g. triangles.init=structure")
    parser.add_argument("--figure", type=Path, help="also save the mean PSNR curves as this PNG")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = args.model / "checkpoint.pt" if args.model.is_dir() else args.model
    model, cfg = load_model(checkpoint)
    crops, images = held_out_crops(checkpoint, args.crops, args.seed)
    height, width = crops.shape[-2:]
    print(f"{len(crops)} held-out crops of {images}", file=sys.stderr)

    with torch.no_grad():
        scenes = model(crops)
    targets = [c.permute(1, 2, 0).numpy() for c in crops]
    one_pass = [image_quality(drawing(scenes, b, height, width), targets[b]) for b in range(len(crops))]
    flat = [image_quality(np.broadcast_to(t.mean(axis=(0, 1)), t.shape), t) for t in targets]
    gain = [o["psnr"] - f["psnr"] for o, f in zip(one_pass, flat)]

    sets = [f"triangles.count={cfg.triangles.count}", f"optim.iterations={args.steps}", *QUIET, *args.overrides]
    scratch_cfg = load_config(args.fit_config, sets)
    refine_cfg = load_config(args.fit_config, [*sets, "triangles.init=model", f"triangles.model={checkpoint}"])
    started = time.perf_counter()
    steps, scratch = fit_curve(scratch_cfg, crops, args.every)
    print(f"from-scratch fits: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    started = time.perf_counter()
    _, refined = fit_curve(refine_cfg, crops, args.every)
    print(f"refinements: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    final = scratch[-1]
    mean_reach = first_reach(steps, refined.mean(axis=1), float(final.mean()))
    reached = [first_reach(steps, refined[:, b], float(final[b])) for b in range(len(crops))]
    counted = [r if r is not None else args.steps for r in reached]

    whole = crops[:1]
    big = torch.nn.functional.interpolate(whole, size=(args.size, args.size), mode="bilinear", antialias=True)
    result = {
        "model": str(checkpoint),
        "triangles": cfg.triangles.count,
        "held_out_images": images,
        "crops": len(crops),
        "crop_size": height,
        "one_pass": {
            "psnr": float(np.mean([o["psnr"] for o in one_pass])),
            "ssim": float(np.mean([o["ssim"] for o in one_pass])),
            "flat_mean_psnr": float(np.mean([f["psnr"] for f in flat])),
            "gain_db": float(np.mean(gain)),
            "gain_db_median": float(np.median(gain)),
            "share_below_flat": float(np.mean([g < 0 for g in gain])),
        },
        "refinement": {
            "fit_steps": args.steps,
            "fit_config": str(args.fit_config or "configs/base.yaml defaults"),
            "scratch_init": scratch_cfg.triangles.init,
            "every": args.every,
            "scratch_psnr_start": float(scratch[0].mean()),
            "scratch_psnr_final": float(final.mean()),
            "refined_psnr_start": float(refined[0].mean()),
            "refined_psnr_final": float(refined[-1].mean()),
            "one_pass_gap_to_fit_db": float(final.mean() - np.mean([o["psnr"] for o in one_pass])),
            "mean_curve_steps_to_scratch_final": mean_reach,
            "mean_curve_share_of_fit_steps": None if mean_reach is None else mean_reach / args.steps,
            "per_crop_steps_to_own_scratch_final_median": float(np.median(counted)),
            "per_crop_share_of_fit_steps_median": float(np.median(counted)) / args.steps,
            "per_crop_within_a_third": float(np.mean([r is not None and r <= args.steps / 3 for r in reached])),
            "crops_never_reached": sum(r is None for r in reached),
            "curve_steps": steps,
            "scratch_curve_mean": [round(float(v), 3) for v in scratch.mean(axis=1)],
            "refined_curve_mean": [round(float(v), 3) for v in refined.mean(axis=1)],
        },
        "inference": {"image": f"{args.size}x{args.size}", **inference_ms(model, big, args.repeats)},
        "encoder": f"{cfg.model.encoder.type}, starting weights {cfg.model.encoder.weights}",
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__,
    }
    if args.figure:
        plot(args.figure, steps, scratch, refined, result["one_pass"]["psnr"], result["one_pass"]["flat_mean_psnr"],
             f"{len(crops)} held-out {height}x{width} crops, {cfg.triangles.count} triangles, "
             f"{scratch_cfg.triangles.init} init from scratch")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
