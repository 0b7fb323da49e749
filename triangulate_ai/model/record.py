"""A model's training folder: metrics.jsonl, TensorBoard, warning signs, checkpoints, figures.

It observes the trainer and never changes it, with the fit recorder's parts: the same record keys
(`loss/<term>`, `weight/<term>`, `eval/*`), TensorBoardSink, WarningMonitor (its flat-collapse
sign fed with the renders' colour variance relative to their crops'), atomic writes, and
checkpoints that load with weights_only. A checkpoint is written after every epoch (and on
Ctrl-C or a failure, at the step reached) and holds everything to resume and to predict.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..io import json_text, save_png, to_uint8, write_json
from ..checkpoints import WARNING, Mismatch, conform, list_of, number, optimizer_state, read_checkpoint, record, refusal
from ..run import weights_summary
from ..runfolder import CHECKPOINT, RunFolder
from ..metrics import psnr_torch
from .config import ModelRunConfig
from .data import Split
from .trainer import ModelStep, ModelTrainer, Validation

MODEL_FORMAT = "triangulate_ai.model/1"
OUTPUTS = ("metrics.jsonl", "tensorboard", CHECKPOINT, "val.png", "summary.json")  # a training's, besides config.yaml
SECTIONS = ("config", "trainer", "recorder", "split")
SHEET_IMAGES = 8  # validation images shown in val.png and TensorBoard
SHEET_HEIGHT = 128  # pixels of each row of val.png


def read_model_checkpoint(path: Path, device: torch.device) -> dict:
    """A model checkpoint, loaded with weights_only, of our format and sections (UserError naming
    the file); their contents are checked by whoever uses them (check_training_state, load_model)."""
    return read_checkpoint(path, device, MODEL_FORMAT, SECTIONS)


# one entry of the validation history: Validation.summary() of an epoch (psnr, ssim, loss/<term>, ...)
HISTORY = record({"epoch": number(minimum=0, integer=True), "step": number(minimum=0, integer=True)},
                 rest=number(allow_inf=True))


def check_training_state(state: dict, path: Path, trainer: ModelTrainer) -> None:
    """Everything a resumed training takes from a checkpoint, against this config's trainer:
    weights, optimiser, balancer, counters, history, warnings and split, each of the right type,
    shape, dtype and finite. Anything else is a UserError naming the file and the value."""
    params = [p.detach() for group in trainer.optimizer.param_groups for p in group["params"]]
    spec = {
        "trainer": {"model": trainer.model.state_dict(), "optimizer": optimizer_state(trainer.optimizer, params),
                    "balancer": trainer.objective.balancer.state_dict(), "step": number(minimum=0, integer=True),
                    "elapsed": number(minimum=0), "steps_per_epoch": number(minimum=1, integer=True)},
        "recorder": {"history": list_of(HISTORY), "warnings": list_of(WARNING)},
        "split": {"train": list_of(str()), "val": list_of(str())},
    }
    try:
        for section, template in spec.items():
            conform(state[section], template, section)
    except Mismatch as exc:
        raise refusal(path, exc) from None


def picture_rows(rows: list[list[np.ndarray]], height: int = SHEET_HEIGHT) -> np.ndarray:
    """Rows of (H, W, 3) pictures of any sizes, each scaled to `height`, one row over the next."""
    def row(pictures: list[np.ndarray]) -> np.ndarray:
        scaled = [np.asarray(Image.fromarray(to_uint8(p)).resize(
            (max(1, round(p.shape[1] * height / p.shape[0])), height), Image.LANCZOS)) for p in pictures]
        return np.concatenate(scaled, axis=1).astype(np.float32) / 255.0

    joined = [row(pictures) for pictures in rows]
    gap = np.ones((2, joined[0].shape[1], 3), np.float32)
    return np.concatenate([part for picture in joined for part in (picture, gap)][:-1], axis=0)


def sheet(targets: list[torch.Tensor] | torch.Tensor, drawings: list[np.ndarray]) -> np.ndarray:
    """Images (top row) over the model's drawings of them (bottom row)."""
    return picture_rows([[t.permute(1, 2, 0).cpu().numpy() for t in targets], drawings])


class ModelRecorder:
    def __init__(self, folder: Path, cfg: ModelRunConfig, trainer: ModelTrainer, split: Split,
                 images: list[torch.Tensor], on_warning: Callable[[dict], None] = lambda warning: None) -> None:
        self.folder, self.cfg, self.split, self.images = folder, cfg, split, images
        # the renders' colour variance is given relative to their crops', so the target's is 1
        self.files = RunFolder(folder, cfg.log, list(trainer.objective.terms), 1.0, on_warning)
        self.history: list[dict] = []  # one validation summary per epoch
        self.last: ModelStep | None = None

    @property
    def warnings(self) -> list[dict]:
        return self.files.warnings

    def on_step(self, trainer: ModelTrainer, result: ModelStep) -> None:
        self.last = result
        step, log = result.step, self.cfg.log
        to_jsonl = step % log.every == 0 or result.grad_norms is not None
        to_board = self.files.tensorboard is not None and step % log.tensorboard.log_freq == 0
        if not (to_jsonl or to_board):
            return
        record = {"step": step, "epoch": round(result.epoch, 5), "time_s": round(trainer.elapsed, 3),
                  "total": result.total,
                  **{f"loss/{k}": v for k, v in result.losses.items()},
                  **{f"log_loss/{k}": math.log(v) for k, v in result.losses.items() if v > 0},
                  **{f"weight/{k}": v for k, v in result.weights.items()},
                  "psnr_soft": psnr_torch(result.render, result.targets),
                  "variance_ratio": result.variance_ratio, "grad_norm_total": result.gradient, "lr": result.lr,
                  **{f"schedule/{k}": v for k, v in result.scheduled.items()},
                  **{f"grad_norm/{k}": v for k, v in (result.grad_norms or {}).items()}}
        if result.regularizer is not None:
            record.update(regularizer=result.regularizer, regularizer_weight=trainer.objective.regularizer.weight)
        images = None
        every = log.tensorboard.image_every
        if to_board and every and step % every == 0:
            count = min(SHEET_IMAGES, len(result.targets))
            renders = [r.permute(1, 2, 0).cpu().clamp(0, 1).numpy() for r in result.render[:count]]
            images = {"images/train": sheet(result.targets[:count].cpu(), renders)}
        self.files.emit(record, jsonl=to_jsonl, images=images, variance=result.variance_ratio)

    def on_epoch(self, trainer: ModelTrainer, validation: Validation) -> None:
        """Log the validation, write val.png, and checkpoint."""
        summary = validation.summary()
        self.history.append({"epoch": trainer.epoch, "step": trainer.step, **summary})
        count = min(SHEET_IMAGES, len(self.images))
        picture = sheet(self.images[:count], validation.drawings[:count])
        save_png(self.folder / "val.png", picture)
        images = {"images/val": picture} if self.files.tensorboard is not None else None
        self.files.emit({"step": trainer.step, "epoch": trainer.epoch, **{f"eval/{k}": v for k, v in summary.items()}},
                        images=images)
        self.save_checkpoint(trainer)

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, trainer: ModelTrainer) -> None:
        """Atomic, tensors and plain values only (loads with weights_only=True)."""
        self.files.save_checkpoint({
            "format": MODEL_FORMAT, "config": self.cfg.dump(), "trainer": trainer.state_dict(),
            "recorder": {"history": self.history, "warnings": json.loads(json_text(self.warnings))},
            "split": self.split.names(), "version": __version__})

    def restore(self, state: dict, trainer: ModelTrainer) -> None:
        """This recorder's part of a checkpoint whose trainer state is loaded; metric lines
        logged after it are dropped, so none is written twice."""
        self.history = [dict(h) for h in state["recorder"]["history"]]

        def before(record: dict) -> bool:  # an epoch's validation is logged with the step that ends it
            if "eval/psnr" in record:
                return record["epoch"] <= trainer.epoch and record["step"] <= trainer.step
            return record["step"] < trainer.step
        self.files.restore(state["recorder"]["warnings"], before)

    def finish(self, trainer: ModelTrainer, stopped_by: str, error: str | None, threads: int) -> dict:
        """summary.json: how the training ended, the last validation, the history, the settings
        that qualify the numbers (random networks, threads)."""
        self.files.close()
        networks = self.cfg.network_weights()
        summary = {
            "config": self.cfg.dump(),
            "triangles": self.cfg.triangles.count,
            "encoder": f"{self.cfg.model.encoder.type} (starting weights: {self.cfg.model.encoder.weights})",
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "epochs": trainer.epoch,
            "epochs_planned": self.cfg.train.epochs,
            "steps": trainer.step,
            "stopped_by": stopped_by,  # epochs | interrupted | error
            "completed": stopped_by == "epochs",
            "error": error,
            "validation": self.history[-1] if self.history else None,
            "history": self.history,
            "metrics_on": "triangles.svg of each prediction rasterised by resvg (hard edges, anti-aliased)",
            "lpips_meaningful": self.cfg.eval.lpips is not None and self.cfg.eval.lpips.weights != "random",
            "network_weights": networks,
            "perceptual_weights": weights_summary(networks),
            "split": self.split.names(),
            "val_images": len(self.images),  # crops or whole pictures (data.val)
            "warnings": self.warnings,
            "wall_time_s": round(trainer.elapsed, 3),
            "seconds_per_step": round(trainer.elapsed / max(trainer.step, 1), 5),
            "threads": threads,
            "backend": trainer.renderer.name,
            "device": str(trainer.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "triangulate_ai": __version__},
        }
        write_json(self.folder / "summary.json", summary)
        return summary
