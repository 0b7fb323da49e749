"""Figures and a table from finished model trainings (docs/model.md's seed experiment).

    python -m triangulate_ai.model.report runs/model_exp/fixed runs/model_exp/geometric_mean \
        runs/model_exp/uncertainty --out docs/model

Reads only the training folders (summary.json, metrics.jsonl, checkpoint.pt): validation curves
per epoch, the predictions of every model on the same validation crops, and a markdown table on
stdout. Whatever ran on a randomly initialised network says so in red on the figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..export import rasterize_svg, scene_to_dict, svg_from_dict  # noqa: E402
from ..errors import ArgumentParser  # noqa: E402
from ..io import to_uint8  # noqa: E402
from .data import load_sources, validation_images  # noqa: E402
from .predict import load_model  # noqa: E402
from .record import picture_rows, read_model_checkpoint  # noqa: E402

SHOWN = 8  # validation crops in predictions.png


def random_note(summaries: dict[str, dict]) -> str | None:
    """A warning line naming the settings that used random networks, if any did."""
    keys = sorted({key for s in summaries.values() for key, value in s["network_weights"].items()
                   if value == "random"})
    return f"random (untrained) networks: {', '.join(keys)}: not comparable to pretrained ones" if keys else None


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def history(folder: Path) -> list[dict]:
    return [r for r in records(folder) if "eval/psnr" in r]


def plot_curves(folders: dict[str, Path], out: Path, note: str | None) -> Path:
    """Validation PSNR (and the flat mean's) and SSIM per epoch, and the collapse sign during
    training: the renders' colour variance relative to their crops' (flat colour is 0)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for name, folder in folders.items():
        rows = history(folder)
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["eval/psnr"] for r in rows], label=name)
        axes[1].plot(epochs, [r["eval/ssim"] for r in rows], label=name)
        steps = [r for r in records(folder) if "variance_ratio" in r]
        axes[2].plot([r["epoch"] for r in steps], [r["variance_ratio"] for r in steps], label=name, linewidth=0.8)
    first = next(iter(folders.values()))
    axes[0].axhline(history(first)[0]["eval/psnr_flat_mean"], color="grey", linestyle="--", label="flat mean colour")
    threshold = json.loads((first / "summary.json").read_text())["config"]["log"]["warnings"]["collapse_ratio"]
    axes[2].axhline(threshold, color="tab:red", linestyle=":", label="collapse threshold")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(fontsize=7)
    titles = ["val PSNR (dB), hard-edged", "val SSIM, hard-edged", "training renders: colour variance / crops'"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    if note:
        fig.suptitle(note, color="tab:red", fontsize=8)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_predictions(folders: dict[str, Path], out: Path) -> Path:
    """Validation crops of every held-out picture (top row) over each model's one-pass prediction
    as the SVG draws it, one row per model, in the order given."""
    first = next(iter(folders.values()))
    _, cfg = load_model(first)
    val = read_model_checkpoint(first / "checkpoint.pt", torch.device("cpu"))["split"]["val"]
    data = cfg.data.model_copy(update={"images": val})
    images = validation_images(load_sources(data), data, cfg.seed)
    images = images[::max(1, len(images) // SHOWN)][:SHOWN]  # spread over the held-out pictures
    rows = [[image.permute(1, 2, 0).numpy() for image in images]]
    for folder in folders.values():
        model, _ = load_model(folder)
        with torch.no_grad():
            scenes = [model(image[None]) for image in images]
        rows.append([rasterize_svg(svg_from_dict(scene_to_dict(scene, *image.shape[-2:])))
                     for scene, image in zip(scenes, images)])
    picture = picture_rows(rows, height=max(image.shape[-2] for image in images))
    path = out / "predictions.png"
    Image.fromarray(to_uint8(picture)).quantize(256).save(path, optimize=True)  # a palette keeps the file small
    return path


def table(summaries: dict[str, dict]) -> str:
    lines = ["| model | val PSNR (dB) | flat mean (dB) | gain (dB) | SSIM | LPIPS | collapsed | epochs | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        v = s["validation"]
        lpips = f"{v['lpips']:.4f}" + ("" if s["lpips_meaningful"] else " (random net)") if "lpips" in v else "-"
        lines.append(f"| {name} | {v['psnr']:.2f} | {v['psnr_flat_mean']:.2f} | {v['psnr_gain']:+.2f} | "
                     f"{v['ssim']:.3f} | {lpips} | {v['collapsed_share']:.0%} | {s['epochs']} | "
                     f"{s['wall_time_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="training folders (their names label the figures)")
    parser.add_argument("--out", type=Path, required=True, help="folder for curves.png and predictions.png")
    args = parser.parse_args(argv)
    folders = {folder.name: folder for folder in args.folders}
    summaries = {name: json.loads((folder / "summary.json").read_text()) for name, folder in folders.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    note = random_note(summaries)
    plot_curves(folders, args.out, note)
    plot_predictions(folders, args.out)
    if note:
        print(f"**{note}**\n")
    print(table(summaries))


if __name__ == "__main__":
    main()
