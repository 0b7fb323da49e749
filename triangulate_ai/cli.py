"""`train.py`: fit one image with triangles and write a run folder."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import Config, load_config
from .errors import UserError
from .fit import Fitter, NonFiniteLoss, StepResult, resolve_device
from .init import resolve_background
from .metrics import Evaluator, psnr_torch
from .io import TargetImage, load_image, write_atomic
from .run import CHECKPOINT, RunRecorder

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description="Fit an image with learnable triangles.")
    parser.add_argument("--config", type=Path, help="YAML config (defaults: configs/base.yaml)")
    parser.add_argument("--image", type=Path, help="target image (PNG or JPEG); overrides image.path")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<image name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set render.sigma=0.3 (repeatable)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder instead of "
                        "choosing a new name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _train(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _train(args: argparse.Namespace) -> int:
    cfg, folder = _config_and_folder(args)
    image = load_image(cfg.image.path, cfg.image.max_size)  # before anything is written
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    target_np, target, background, mask = _prepare_target(image, cfg, device)

    _warn_random_weights(cfg)
    fitter = Fitter(cfg, target, background, mask)  # loads pretrained networks: may stop here
    evaluator = Evaluator(target_np, cfg.eval.lpips, device)
    if args.resume is None:
        folder = _make_folder(folder, args.overwrite)
        write_atomic(folder / "config.yaml", cfg.to_yaml())
    recorder = RunRecorder(folder, fitter, evaluator)
    if args.resume is not None:
        recorder.resume(fitter)
    print(f"fitting {image.path} ({image.size[0]}x{image.size[1]}) with {cfg.triangles.count} triangles, "
          f"{fitter.renderer.name} renderer on {device}, {cfg.optim.iterations} iterations, "
          f"loss {cfg.loss.type}({', '.join(fitter.terms)}) -> {folder}")

    progress = _Progress(cfg, fitter)
    stop = _StopRequest()
    try:
        with stop:
            completed = fitter.run([recorder, progress], stop.requested)
    except NonFiniteLoss as exc:
        progress.close()
        print(f"error: {exc}; last checkpoint kept in {folder / CHECKPOINT}", file=sys.stderr)
        return 1
    progress.close()
    summary = recorder.finish(fitter, completed, device)
    if not completed:
        print(f"interrupted at step {fitter.step}: checkpoint and outputs saved; continue with "
              f"--resume {folder}")
    lpips_text = "" if summary["lpips"] is None else \
        f", LPIPS {summary['lpips']:.4f}{'' if summary['lpips_meaningful'] else ' (random network)'}"
    print(f"PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f}{lpips_text} (initial {summary['psnr_initial']:.2f} dB, "
          f"flat mean colour {summary['psnr_flat_mean']:.2f} dB; soft render {summary['psnr_soft']:.2f} dB) "
          f"in {summary['wall_time_s']:.1f} s -> {folder}")
    return 0 if completed else EXIT_INTERRUPTED


def _warn_random_weights(cfg: Config) -> None:
    for key, weights in cfg.network_weights().items():
        if weights == "random":
            what = "the LPIPS metric is not meaningful" if key.startswith("eval.") else \
                "its values are not comparable with pretrained ones"
            print(f"warning: {key}=random: a randomly initialised network; {what} "
                  "(recorded in summary.json)", file=sys.stderr)


def _config_and_folder(args: argparse.Namespace) -> tuple[Config, Path]:
    if args.resume is not None:
        resolved = args.resume / "config.yaml"
        if not (args.resume / CHECKPOINT).is_file() or not resolved.is_file():
            raise UserError(f"nothing to resume in {args.resume}: it needs config.yaml and {CHECKPOINT}")
        if args.config or args.image or args.out:
            raise UserError("--resume takes its config, image and folder from the run; use --set to change values")
        return load_config(resolved, args.overrides), args.resume
    values = {"image.path": str(args.image)} if args.image else {}
    cfg = load_config(args.config, args.overrides, values, values_source="--image")
    if cfg.image.path is None:
        raise UserError("no image given: pass --image PATH or set image.path in the config")
    return cfg, args.out or Path("runs") / Path(cfg.image.path).stem


def _prepare_target(image: TargetImage, cfg: Config, device: torch.device):
    """Composited target (numpy and (1, 3, H, W) tensor), background (1, 3) and mask or None."""
    colour = torch.from_numpy(image.colour).permute(2, 0, 1)[None]
    mask = None if image.alpha is None else torch.from_numpy(image.alpha)[None, None]
    background = resolve_background(cfg.triangles.background, colour, mask)
    target_np = image.composite(background[0].numpy())
    target = torch.from_numpy(np.ascontiguousarray(target_np)).permute(2, 0, 1)[None]
    return target_np, target.to(device), background.to(device), None if mask is None else mask.to(device)


def _make_folder(folder: Path, overwrite: bool) -> Path:
    """A fresh run folder. An existing one is replaced only with --overwrite and only if it
    looks like a run folder; otherwise a free name with a numeric suffix is chosen."""
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            n = 1
            while (candidate := folder.with_name(f"{folder.name}_{n}")).exists():
                n += 1
            print(f"{folder} exists; writing to {candidate} instead (use --overwrite to replace it)")
            folder = candidate
        elif (folder / "config.yaml").is_file():
            shutil.rmtree(folder)
        else:
            raise UserError(f"--overwrite refuses to delete {folder}: it is not a run folder (no config.yaml)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Progress:
    """tqdm bar with loss and soft-render PSNR; silent when not on a terminal."""

    def __init__(self, cfg: Config, fitter: Fitter) -> None:
        self.every = cfg.log.every
        self.bar = tqdm(total=cfg.optim.iterations, initial=fitter.step, unit="it", dynamic_ncols=True,
                        disable=None if cfg.log.progress_bar else True)

    def on_step(self, fitter: Fitter, result: StepResult) -> None:
        self.bar.update(1)
        if result.step % self.every == 0 and not self.bar.disable:
            self.bar.set_postfix(loss=f"{result.total:.4f}", psnr=f"{psnr_torch(result.render, fitter.target):.2f}")

    def close(self) -> None:
        self.bar.close()


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current step; a second one aborts at once."""

    def __init__(self) -> None:
        self.flag = False
        self._previous = None

    def requested(self) -> bool:
        return self.flag

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

    def __enter__(self) -> "_StopRequest":
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)
