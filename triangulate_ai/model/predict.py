"""A trained model from its checkpoint: predictions, and the start of a per-image fit.

`triangles.init: model` (train.py --init-from-model CKPT) starts a fit from the model's one-pass
prediction for the target. The checkpoint is read with weights_only; its config rebuilds the
network (without fetching the encoder's starting weights, which the checkpoint replaces).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints import Mismatch, conform, refusal
from ..config import TrianglesConfig, config_from_mapping
from ..errors import UserError
from ..init import parked_vertices
from ..memory import require
from ..triangles import TriangleSet
from .config import ModelRunConfig
from .network import TriangleModel, memory_bytes
from .record import read_model_checkpoint

_LOADED: dict[tuple, tuple[TriangleModel, ModelRunConfig]] = {}
SHIPPED = Path(__file__).resolve().parent.parent / "models"  # models that come with the package: NAME.pt + NAME.json


def shipped_models() -> list[str]:
    """Names of the models that come with the package ("default", ...)."""
    return sorted(p.stem for p in SHIPPED.glob("*.pt"))


def model_path(model: str | Path) -> Path:
    """The checkpoint of `model`: a shipped model's name, a checkpoint file, or a training folder
    (its checkpoint.pt). Neither is a UserError naming the shipped models."""
    text = str(model)
    if "/" not in text and (SHIPPED / f"{text}.pt").is_file():
        return SHIPPED / f"{text}.pt"
    path = Path(model)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        names = ", ".join(shipped_models()) or "none here"
        raise UserError(f"model {text!r}: not a shipped model ({names}) nor a model checkpoint or training folder")
    return path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[TriangleModel, ModelRunConfig]:
    """The network of a model (a shipped model's name, a checkpoint, or a training folder), in
    inference mode, with its config. Loaded once per file version and device. Nothing is built
    before the checkpoint has passed the checks of a user's config (the config models, their
    limits, the memory estimate) and its weights those of checkpoints.conform."""
    path = model_path(path)
    device = torch.device(device)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device))
    if key not in _LOADED:
        state = read_model_checkpoint(path, device)
        cfg = config_from_mapping(state["config"], f"{path} (its config)", ModelRunConfig)
        side = cfg.model.input_size
        require(memory_bytes(cfg, 1, training=False), f"{path}: its model ({cfg.triangles.count} triangles, input "
                f"{side}x{side})", "this checkpoint cannot be used on this machine")
        with torch.device("meta"):
            template = TriangleModel(cfg, load_weights=False).state_dict()
        try:
            conform(state["trainer"].get("model"), template, "trainer.model")
        except Mismatch as exc:
            raise refusal(path, exc) from None
        model = TriangleModel(cfg, load_weights=False).to(device)
        model.load_state_dict(state["trainer"]["model"])
        _LOADED.clear()  # one model at a time is enough for a fit or a benchmark
        _LOADED[key] = (model.eval(), cfg)
    return _LOADED[key]


def predicted_triangles(cfg: TrianglesConfig, target: torch.Tensor, background: torch.Tensor) -> TriangleSet:
    """The starting TriangleSet of a fit of `target` (B, 3, H, W): the model's N triangles, and
    when triangles.count asks for more, the rest parked off the canvas for the progressive
    placement to bring in where the error is largest (Densifier). The background is the model's
    when the fit learns it, else the fit's configured one."""
    model, _ = load_model(cfg.model, target.device)
    if cfg.count < model.count:
        raise UserError(f"triangles.model = {cfg.model}: the model predicts {model.count} triangles but "
                        f"triangles.count is {cfg.count}; set triangles.count={model.count} or more (the ones past "
                        f"the model's are placed where the error is largest)")
    with torch.no_grad():
        scene = model(target.float())
    dtype = target.dtype
    extra = cfg.count - model.count
    vertices = torch.cat([scene.vertices.to(dtype), parked_vertices(target.shape[0], extra).to(target)], dim=1)
    colors = torch.cat([scene.colors.to(dtype), target.new_full((target.shape[0], extra, 3), 0.5)], dim=1)
    opacity = torch.cat([scene.opacity.to(dtype), target.new_full((target.shape[0], extra), cfg.opacity)], dim=1)
    start = scene.background.to(dtype) if cfg.learn_background else background
    return TriangleSet(vertices, colors, opacity, start, cfg.learn_background)
