"""`triangulate-train-model` / `train_model.py`: train a model that triangulates any image in one
forward pass, over a folder of images, epoch by epoch.

Everything that can be wrong (config, images, the split, networks and their weights, the output
folder, a checkpoint to resume) is checked before the first file is written; each problem is one
line and exit code 2. Ctrl-C finishes the current step, writes a checkpoint and the summary, and
exits 130; a NaN stops before the bad update (checkpoint of the last good step, exit 1).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..api import check_folder, holds_config, make_folder, random_network_warnings
from ..checkpoints import shorten
from ..errors import EXIT_INTERRUPTED, ArgumentParser, UserError, one_line_errors, program_name
from ..io import clear_outputs, remove_temporaries, write_atomic
from ..loop import resolve_device
from ..metrics import Evaluator
from ..progress import print_warning
from ..runfolder import CHECKPOINT
from ..stop import StopRequest
from .config import ModelRunConfig, load_model_config
from .data import TrainCrops, data_split, validation_images
from .record import OUTPUTS, ModelRecorder, check_training_state, read_model_checkpoint
from .trainer import ModelTrainer, TrainingFailed, Validation, train_epochs


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=program_name(), description="Train a model that predicts the triangles "
                                     "of any image in one forward pass.")
    parser.add_argument("--config", type=Path, help="YAML model config (e.g. configs/model/l1.yaml)")
    parser.add_argument("--data", nargs="+", metavar="PATH", help="training images: files, folders, quoted glob "
                        "patterns (data.images); split into train and validation by source image")
    parser.add_argument("--out", type=Path, help="training folder (default runs/model_<config name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    parser.add_argument("--epochs", type=int, metavar="N", help="train.epochs (with --resume: train on to N)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the training in DIR from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing training folder")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: _train(args))


def _config(args: argparse.Namespace) -> tuple[ModelRunConfig, Path]:
    values = {"train.epochs": args.epochs} if args.epochs is not None else {}
    if args.resume is not None:
        if args.config or args.data or args.out:
            raise UserError("--resume takes its config, data and folder from the training; use --set to change values")
        if not (args.resume / "config.yaml").is_file():
            raise UserError(f"nothing to resume in {args.resume}: it has no config.yaml")
        if not (args.resume / CHECKPOINT).is_file() and (args.resume / "summary.json").is_file():
            raise UserError(f"{args.resume} has a summary.json but no {CHECKPOINT}: it cannot be continued")
        return load_model_config(args.resume / "config.yaml", args.overrides, values, "--epochs"), args.resume
    if args.data:
        values["data.images"] = args.data
    cfg = load_model_config(args.config, args.overrides, values, "--data/--epochs")
    name = args.config.stem if args.config else "default"
    return cfg, args.out or Path("runs") / f"model_{name}"


def _open_folder(args: argparse.Namespace, cfg: ModelRunConfig, folder: Path, state: dict | None,
                 trainer: ModelTrainer, split, images: list[torch.Tensor]) -> ModelRecorder:
    """The training folder and its recorder: made for a new training, cleared of its outputs (and
    nothing else) for a resumed one that stopped before its first checkpoint, of an interrupted
    write's temporaries for a resumed one; config.yaml written unless it already holds this
    config. A failure or Ctrl-C before the first step removes a folder made here."""
    made = None
    try:
        if args.resume is None:
            made, note = make_folder(folder, overwrite=args.overwrite)
            if note:
                print(note)
            folder = made
        elif state is None:  # again from step 0, in its own folder: only a training's outputs go
            print(f"{folder} has no {CHECKPOINT} (the training stopped before its first one): starting it again "
                  "from step 0")
            clear_outputs(folder, OUTPUTS)
        else:
            remove_temporaries(folder)
        if not (state is not None and holds_config(folder / "config.yaml", cfg)):
            write_atomic(folder / "config.yaml", cfg.to_yaml())
        recorder = ModelRecorder(folder, cfg, trainer, split, images, on_warning=print_warning)
        if state is not None:
            recorder.restore(state, trainer)
        return recorder
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _train(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    cfg, folder = _config(args)
    if args.resume is None:
        check_folder(folder)
    split = data_split(cfg.data, cfg.seed)
    data = TrainCrops(split.train, cfg.data, cfg.seed)
    steps_per_epoch = len(data) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"train.batch_size = {cfg.train.batch_size} is more than the {len(data)} training crops of an "
                        f"epoch ({len(split.train)} image(s) x data.crops_per_image {cfg.data.crops_per_image})")
    device = resolve_device(cfg.device)
    trainer = ModelTrainer(cfg, device, steps_per_epoch)  # networks and weights: may stop here
    val_images = validation_images(split.val, cfg.data, cfg.seed)
    evaluators = [Evaluator(image.permute(1, 2, 0).numpy(), cfg.eval.lpips, device) for image in val_images]
    path = folder / CHECKPOINT
    state = None
    if args.resume is not None and path.is_file():
        state = read_model_checkpoint(path, device)
        check_training_state(state, path, trainer)
        if state["split"] != split.names():
            raise UserError(f"{path}: the training images changed since this training started (the train/val split "
                            "differs); restore them or start a new training")
        try:
            trainer.load_state_dict(state["trainer"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise UserError(f"{path}: checkpoint does not fit this config ({type(exc).__name__}: {shorten(exc)})") \
                from None
    recorder = _open_folder(args, cfg, folder, state, trainer, split, val_images)
    for line in random_network_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    threads = torch.get_num_threads()
    folder = recorder.folder
    print(banner(cfg, trainer, split, len(val_images), folder, threads))
    progress = _Progress(cfg, trainer)
    stop = StopRequest("\nstopping after this step (Ctrl-C again to abort without saving)")
    error = None
    try:
        with stop:
            reason = train_epochs(trainer, data, val_images, evaluators, [recorder, progress], stop.requested,
                                  cfg.data.workers)
    except TrainingFailed as exc:
        reason, error = "error", str(exc)
    finally:
        progress.close()
    if reason != "epochs":
        recorder.save_checkpoint(trainer)
    summary = recorder.finish(trainer, reason, error, threads)
    print(final_table(summary))
    if error is not None:
        print(f"error: {error}; checkpoint of step {trainer.step} written to {folder}", file=sys.stderr)
        return 1
    if reason == "interrupted":
        print(f"interrupted at step {trainer.step} (epoch {trainer.step / steps_per_epoch:.2f}): checkpoint saved; "
              f"continue with --resume {folder}")
        return EXIT_INTERRUPTED
    return 0


class _Progress:
    """A bar over the steps of the training (on a terminal) and one line per epoch."""

    def __init__(self, cfg: ModelRunConfig, trainer: ModelTrainer) -> None:
        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step", dynamic_ncols=True,
                        disable=not (cfg.log.progress_bar and sys.stderr.isatty()))

    def on_step(self, trainer: ModelTrainer, result) -> None:
        self.bar.update(1)
        if result.step % trainer.cfg.log.every == 0:
            self.bar.set_postfix(total=f"{result.total:.4g}", epoch=f"{result.epoch:.2f}")

    def on_epoch(self, trainer: ModelTrainer, validation: Validation) -> None:
        tqdm.write(f"epoch {trainer.epoch}/{trainer.cfg.train.epochs}: {epoch_line(validation.summary())} "
                   f"({trainer.elapsed:.0f} s)")

    def close(self) -> None:
        self.bar.close()


def epoch_line(val: dict) -> str:
    lpips = f", LPIPS {val['lpips']:.4f}" if "lpips" in val else ""
    return (f"val PSNR {val['psnr']:.2f} dB (flat mean {val['psnr_flat_mean']:.2f}), SSIM {val['ssim']:.4f}{lpips}, "
            f"collapsed {val['collapsed_share']:.0%}")


def banner(cfg: ModelRunConfig, trainer: ModelTrainer, split, val_images: int, folder: Path, threads: int) -> str:
    """One screen saying what is about to run."""
    terms = ", ".join(f"{name} (weight {term.weight:g})" for name, term in cfg.loss.active_terms().items())
    options = ", ".join(f"{k}={v}" for k, v in cfg.loss.options().items()) or "no options"
    networks = ", ".join(f"{k}={v}" for k, v in cfg.network_weights().items()) or "none"
    enc = cfg.model.encoder
    rows = [
        ("data", f"{len(split.train)} training image(s), {len(split.val)} validation image(s) ("
                 + ("whole" if cfg.data.val == "whole" else f"{val_images} fixed crops") + f"), "
                 f"{cfg.data.crop}x{cfg.data.crop} training crops"),
        ("model", f"{enc.type} (starting weights {enc.weights}) -> {cfg.triangles.count} triangles, input "
                  f"{cfg.model.input_size}x{cfg.model.input_size}, "
                  f"{sum(p.numel() for p in trainer.model.parameters()):,} parameters"),
        ("renderer", f"{trainer.renderer.name}, sigma {cfg.render.sigma} px, on {trainer.device}, {threads} thread(s)"),
        ("loss terms", terms),
        ("balancer", f"{cfg.loss.type} ({options}), on the batch means (one scene)"),
        ("schedules", ", ".join(f"{p} ({s.type}, {s.unit})" for p, s in cfg.schedules.items()) or "none"),
        ("networks", networks),
        ("run", f"{'resuming at step ' + str(trainer.step) + ', ' if trainer.step else ''}{cfg.train.epochs} epochs "
                f"of {trainer.steps_per_epoch} steps (batch {cfg.train.batch_size}), checkpoint every epoch -> "
                f"{folder}"),
    ]
    return "\n".join(f"  {key:<12}{value}" for key, value in rows)


def final_table(summary: dict) -> str:
    val = summary["validation"]
    lines = [f"  {summary['epochs']} epoch(s), {summary['steps']} steps in {summary['wall_time_s']:.1f} s "
             f"(stopped by {summary['stopped_by']}), {len(summary['warnings'])} warning(s)"]
    if val is not None:
        lines.append(f"  last validation: {epoch_line(val)}")
        if "lpips" in val and not summary["lpips_meaningful"]:
            lines.append("  LPIPS from a randomly initialised network: not meaningful")
    if summary["perceptual_weights"] == "random":
        lines.append("  loss or metric networks ran on random weights (see network_weights in summary.json)")
    return "\n".join(lines)
