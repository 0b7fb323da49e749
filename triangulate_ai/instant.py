"""Instant triangulation: a trained model's one-pass prediction for each image, exported as a fit's
run folder is (config.yaml, triangles.json and .svg, final.png, compare.png, summary.json with the
PSNR, SSIM and colour shift of the hard-edged drawing).

Images are grouped by their working size (after image.max_size) and predicted in batches, so a
folder of thousands goes through at the model's speed. Every image's header is read before the
first prediction (a missing, unreadable or too large one stops everything with one line); an image
whose data then cannot be decoded stops the run with one line, the folders already written kept.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .api import ImageLike, make_folder, prepare_target
from .config import Config, load_config
from .errors import UserError
from .export import rasterize_svg, scene_to_dict, svg_from_dict
from .io import TargetImage, image_from_array, load_image, working_size, write_atomic
from .loop import resolve_device
from .metrics import Evaluator, flat_mean_psnr
from .model.predict import load_model
from .raster.scene import Scene
from .result import Triangulation


@dataclass
class _Item:
    """One image to predict: where it comes from, its working size, where its folder goes."""

    source: Path | np.ndarray
    size: tuple[int, int]  # (width, height) after image.max_size
    folder: Path | None
    name: str


def predict(images: ImageLike | Sequence[ImageLike], model: str | Path = "default", *,
            out: str | Path | None = None, overwrite: bool = False, max_size: int = 256, batch_size: int = 16,
            device: str = "auto", progress: bool = False) -> list[Triangulation]:
    """Triangulate images in one pass with a trained model: no fitting.

    Args:
        images: a path, an (H, W, 3|4) array or a PIL image, or a list of them.
        model: a shipped model's name ("default"), a model checkpoint or a training folder.
        out: write each image's run folder (config.yaml, triangles.json/.svg, final.png,
            compare.png, summary.json): `out` itself for one image, `out/<name>` for a list.
        overwrite: replace existing folders instead of taking free names.
        max_size: images are downscaled so their longer side is at most this (0 keeps them).
        batch_size: images of one working size predicted together.
        device: "auto", "cpu" or "cuda".
        progress: show a progress bar.

    Returns:
        One Triangulation per image, in order: `scene`, `image` (the hard-edged drawing),
        `target`, `metrics` (PSNR, SSIM, colour shift, milliseconds), `folder`, `to_dict()`, `svg()`.

    Raises:
        UserError: an unreadable image, an unknown model, a file that is not a model checkpoint.

    Example:
        >>> drawing = predict("examples/kodim23.png")[0]
        >>> len(drawing.to_dict()["triangles"]), drawing.image.shape
        (100, (171, 256, 3))
        >>> drawing.metrics["psnr"] > drawing.metrics["psnr_flat_mean"] + 3
        True
    """
    many = isinstance(images, (list, tuple))
    sources = list(images) if many else [images]
    cfg = load_config(None, values={"image.max_size": max_size, "device": device}, values_source="predict()")
    return predict_all(instant_items(sources, cfg, None if out is None else Path(out), many), model, cfg,
                       overwrite=overwrite, batch_size=batch_size, progress=progress)


def instant_items(sources: list, cfg: Config, out: Path | None, many: bool) -> list[_Item]:
    """Every image's working size (from its header) and folder, before anything is predicted."""
    items = []
    for i, source in enumerate(sources):
        if isinstance(source, (str, Path)):
            path = Path(source)
            size, name = working_size(path, cfg.image.max_size), path.stem
        else:
            array = np.asarray(source)
            target = image_from_array(array, cfg.image.max_size)
            size, name, path = target.size, f"image{i}", array
        folder = None if out is None else (out / name if many else out)
        items.append(_Item(path, size, folder, name))
    names = [item.name for item in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if out is not None and twice:
        raise UserError(f"two images are named {twice[0]}: their run folders would collapse into one; rename one")
    return items


def predict_all(items: list[_Item], model: str | Path, cfg: Config, overwrite: bool = False, batch_size: int = 16,
                progress: bool = False) -> list[Triangulation]:
    """Predict `items` in batches of one working size, writing each folder as its batch is done."""
    if batch_size < 1:
        raise UserError(f"batch size {batch_size}: must be >= 1")
    device = resolve_device(cfg.device)
    network, model_cfg = load_model(model, device)
    if "count" in cfg.triangles.model_fields_set and cfg.triangles.count != network.count:
        raise UserError(f"triangles.count = {cfg.triangles.count}: the model {model} predicts {network.count} "
                        "triangles; an instant prediction has the model's count (or fit with --init-from-model)")
    name = str(model)
    results: dict[int, Triangulation] = {}
    order = sorted(range(len(items)), key=lambda i: items[i].size)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [chunk for batch in batches for chunk in _by_size(batch, items)]
    with tqdm(total=len(items), unit="image", disable=not progress) as bar:
        for batch in batches:
            for i, result in zip(batch, _predict_batch([items[i] for i in batch], network, cfg, name, device)):
                if items[i].folder is not None:
                    folder, _ = make_folder(items[i].folder, overwrite)
                    result.folder = folder
                    source = items[i].source
                    image_path = str(source) if isinstance(source, Path) else None
                    write_atomic(folder / "config.yaml", load_config(cfg, values={"image.path": image_path}).to_yaml())
                    result.write_exports(folder)
                results[i] = result
            bar.update(len(batch))
    return [results[i] for i in range(len(items))]


def _by_size(batch: list[int], items: list[_Item]) -> Iterable[list[int]]:
    """A sorted batch cut where the working size changes."""
    start = 0
    for end in range(1, len(batch) + 1):
        if end == len(batch) or items[batch[end]].size != items[batch[start]].size:
            yield batch[start:end]
            start = end


def _predict_batch(items: list[_Item], network, cfg: Config, name: str, device: torch.device) -> list[Triangulation]:
    images = [_load(item, cfg) for item in items]
    prepared = [prepare_target(image, cfg, device) for image in images]
    targets = torch.cat([p[1] for p in prepared])
    started = time.perf_counter()
    with torch.no_grad():
        scene = network(targets)
    forward = (time.perf_counter() - started) / len(items)
    height, width = targets.shape[-2:]
    results = []
    for b, (item, image, (target_np, target, _, _)) in enumerate(zip(items, images, prepared)):
        started = time.perf_counter()
        data = scene_to_dict(scene, height, width, index=b)
        drawing = rasterize_svg(svg_from_dict(data))
        drawn = time.perf_counter() - started
        quality = Evaluator(target_np, None, device)(drawing)
        metrics = {
            "image": str(item.source) if isinstance(item.source, Path) else None,
            "width": width, "height": height, "triangles": network.count,
            "psnr": quality["psnr"], "ssim": quality["ssim"], "colour_shift": quality["colour_shift"],
            "psnr_flat_mean": flat_mean_psnr(target),
            "metrics_on": "triangles.svg rasterised by resvg (hard edges, anti-aliased)",
            "model": name, "mode": "instant (one-pass prediction, no fitting)",
            "seconds_forward": round(forward, 6), "seconds_drawing": round(drawn, 6),
            "device": str(device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "triangulate_ai": __version__},
        }
        one = Scene(*(t[b:b + 1].detach().cpu() for t in scene))
        results.append(Triangulation(one, height, width, drawing, target_np, metrics, None))
    return results


def _load(item: _Item, cfg: Config) -> TargetImage:
    if isinstance(item.source, Path):
        return load_image(item.source, cfg.image.max_size)
    return image_from_array(item.source, cfg.image.max_size)

