"""Shipping a trained model with the package: its weights as triangulate_ai/models/NAME.pt (a
model checkpoint without the optimiser's state, which only a resumed training needs) and a card,
NAME.json, saying what it is and how it was made, so `--init-from-model NAME`, `triangles.model:
NAME`, `fit(init="model")` and `predict()` find it by name.

    python -m triangulate_ai.model.ship runs/model_natural --name default \\
        --data "natural/train (Sun-Hays 80 + Urban100, 180 pictures); validated on natural/val (BSD68)" \\
        --command "python train_model.py --config configs/model/natural.yaml ..."
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import config_from_mapping
from ..errors import ArgumentParser, UserError, one_line_errors
from ..export import rasterize_svg, scene_to_dict, svg_from_dict
from ..io import load_image, write_atomic, write_json
from ..metrics import image_quality
from ..provenance import commit, cpu_name
from .config import ModelRunConfig
from .predict import SHIPPED, load_model
from .record import read_model_checkpoint


def ship(folder: Path, name: str, data: str, command: str, into: Path = SHIPPED, solve: int | None = None,
         mirrors: int | None = None) -> dict:
    """Copy the finished training in `folder` into `into` as NAME.pt with its card NAME.json;
    returns the card. `solve` and `mirrors` set model.solve and model.mirrors of the shipped copy
    (inference only: colours by least squares, the best of mirrored predictions); the card then
    also holds the validation of the shipped copy as it predicts."""
    path = folder / "checkpoint.pt"
    load_model(path)  # every check a user's load makes
    state = read_model_checkpoint(path, torch.device("cpu"))
    inference = {key: value for key, value in (("solve", solve), ("mirrors", mirrors)) if value is not None}
    if inference:
        state["config"] = {**state["config"], "model": {**state["config"]["model"], **inference}}
        config_from_mapping(state["config"], "the shipped settings", ModelRunConfig)  # refused before writing
    summary = json.loads((folder / "summary.json").read_text())
    if not summary.get("completed"):
        raise UserError(f"{folder}: the training did not finish (summary.json: completed is false)")
    trainer = state["trainer"]
    kept = {**state, "trainer": {key: value for key, value in trainer.items() if key != "optimizer"}}
    buffer = io.BytesIO()
    torch.save(kept, buffer)
    weights = buffer.getvalue()
    into.mkdir(parents=True, exist_ok=True)
    write_atomic(into / f"{name}.pt", weights)
    history = state["recorder"]["history"]
    card = {
        "name": name,
        "file": f"{name}.pt",
        "sha256": hashlib.sha256(weights).hexdigest(),
        "triangles": summary["triangles"],
        "encoder": summary["encoder"],
        "parameters": summary["parameters"],
        "data": data,
        "train_pictures": len(state["split"]["train"]),
        "val_pictures": len(state["split"]["val"]),
        "command": command,
        "seed": state["config"]["seed"],
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "wall_time_s": summary["wall_time_s"],
        "threads": summary["threads"],
        "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs",  # of this shipping; the training's is the same
        "date": datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d"),
        "shipped_from_commit": commit(),  # the training's own commit is in `command`
        "validation": {"metrics_on": summary["metrics_on"], "during_training": True, **history[-1]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "triangulate_ai": __version__},
    }
    if inference:
        card["inference"] = inference
        card["validation_shipped"] = validate(into / f"{name}.pt", state["split"]["val"])
    write_json(into / f"{name}.json", card)
    return card


def validate(path: Path, images: list[str]) -> dict:
    """The shipped copy's one-pass scores on the validation pictures, whole, as training validated
    them (the hard-edged drawing; means over the pictures)."""
    model, cfg = load_model(path)
    scores = []
    for image in images:
        target = load_image(image, cfg.data.max_size).colour
        with torch.no_grad():
            scene = model(torch.from_numpy(target).permute(2, 0, 1)[None])
        drawing = rasterize_svg(svg_from_dict(scene_to_dict(scene, *target.shape[:2])))
        scores.append(image_quality(drawing, target))
    return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]} | {"pictures": len(scores)}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m triangulate_ai.model.ship", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a finished training folder (triangulate-train-model --out)")
    parser.add_argument("--name", required=True, help="the name it loads by (e.g. default)")
    parser.add_argument("--data", required=True, help="what it was trained and validated on, for the card")
    parser.add_argument("--command", required=True, help="the command that trained it, for the card")
    parser.add_argument("--solve", type=int, help="model.solve of the shipped copy (px; colours by least squares)")
    parser.add_argument("--mirrors", type=int, choices=(1, 2, 4), help="model.mirrors of the shipped copy")
    args: argparse.Namespace = parser.parse_args(argv)

    def run() -> int:
        card = ship(args.folder, args.name, args.data, args.command, solve=args.solve, mirrors=args.mirrors)
        print(json.dumps(card, indent=2))
        return 0

    return one_line_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
