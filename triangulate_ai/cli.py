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
    target_np, target, background, mask = prepare_target(image, cfg, device)

    _warn_random_weights(cfg)
    fitter = Fitter(cfg, target, background, mask)  # loads pretrained networks: may stop here
    evaluator = Evaluator(target_np, cfg.eval.lpips, device)
    if args.resume is None:
        folder = _make_folder(folder, args.overwrite)
        write_atomic(folder / "config.yaml", cfg.to_yaml())
    recorder = RunRecorder(folder, fitter, evaluator, on_warning=_print_warning)
    if args.resume is not None:
        recorder.resume(fitter)
    print(banner(cfg, image, fitter, device, folder, resumed=args.resume is not None))

    progress = _Progress(cfg, fitter)
    stop = _StopRequest()
    error = None
    try:
        with stop:
            completed = fitter.run([recorder, progress], stop.requested)
    except NonFiniteLoss as exc:
        completed, error = False, str(exc)
    progress.close()
    if error is not None and not fitter.parameters_finite():  # a bad update already went in
        print(f"error: {error}; the parameters are no longer finite, so nothing new was written: the last "
              f"good checkpoint is {folder / CHECKPOINT}", file=sys.stderr)
        return 1
    summary = recorder.finish(fitter, completed, device, error)
    print(final_table(summary))
    if error is not None:
        print(f"error: {error}; checkpoint and outputs of step {fitter.step} written to {folder}", file=sys.stderr)
        return 1
    if not completed:
        print(f"interrupted at step {fitter.step}: checkpoint and outputs saved; continue with --resume {folder}")
    return 0 if completed else EXIT_INTERRUPTED


def _print_warning(warning: dict) -> None:
    tqdm.write(f"warning: step {warning['step']}: {warning['message']}", file=sys.stderr)


def banner(cfg: Config, image: TargetImage, fitter: Fitter, device: torch.device, folder: Path,
           resumed: bool) -> str:
    """One screen saying what is about to run."""
    terms = ", ".join(f"{name} (weight {getattr(term, 'weight', 1.0):g})"
                      for name, term in cfg.loss.active_terms().items())
    options = ", ".join(f"{k}={v}" for k, v in cfg.loss.options().items()) or "no options"
    schedules = ", ".join(f"{path} ({s.type})" for path, s in cfg.schedules.items()) or "none"
    networks = ", ".join(f"{k}={v}" for k, v in cfg.network_weights().items()) or "none"
    width, height = image.size
    rows = [
        ("image", f"{image.path} ({width}x{height}" + (f", from {image.original_size[0]}x{image.original_size[1]}"
                                                       if image.original_size != image.size else "")
         + (", alpha used as mask" if image.alpha is not None else "") + ")"),
        ("triangles", f"{cfg.triangles.count}, init {cfg.triangles.init}, background {cfg.triangles.background}"),
        ("renderer", f"{fitter.renderer.name}, sigma {cfg.render.sigma} px, on {device}"),
        ("loss terms", terms),
        ("balancer", f"{cfg.loss.type} ({options})"),
        ("schedules", schedules),
        ("regularizer", f"weight {cfg.regularizer.weight:g}" if cfg.regularizer.weight else "off"),
        ("modifiers", "Enabled loss modifiers: " + (", ".join(fitter.modifiers.names()) or "none")),
        ("networks", networks),
        ("run", f"{'resuming at step ' + str(fitter.step) + ' of ' if resumed else ''}{cfg.optim.iterations} "
                f"iterations, checkpoint every {cfg.checkpoint.every} -> {folder}"),
    ]
    return "\n".join(f"  {key:<12}{value}" for key, value in rows)


def final_table(summary: dict) -> str:
    """The metrics of the run, initial and final, on the SVG drawing and the soft render."""
    def row(label: str, psnr, ssim, lpips) -> str:
        cells = [f"{psnr:8.2f}" if psnr is not None else f"{'':8}", f"{ssim:8.4f}" if ssim is not None else f"{'':8}",
                 f"{lpips:8.4f}" if lpips is not None else f"{'':8}"]
        return f"  {label:<14}" + "".join(cells)

    lines = [f"  {'':<14}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>8}",
             row("initial", summary["psnr_initial"], summary["ssim_initial"], summary.get("lpips_initial")),
             row("final (SVG)", summary["psnr"], summary["ssim"], summary["lpips"]),
             row("soft render", summary["psnr_soft"], summary["ssim_soft"], summary["lpips_soft"]),
             row("flat mean", summary["psnr_flat_mean"], None, None)]
    if summary["lpips"] is not None and not summary["lpips_meaningful"]:
        lines.append("  LPIPS from a randomly initialised network: not meaningful")
    lines.append(f"  {summary['iterations']} iterations in {summary['wall_time_s']:.1f} s, "
                 f"{len(summary['warnings'])} warning(s); summary.json has them all")
    return "\n".join(lines)


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


def prepare_target(image: TargetImage, cfg: Config, device: torch.device):
    """Composited target (numpy and (1, 3, H, W) tensor), background (1, 3) and mask or None."""
    colour = torch.from_numpy(image.colour).permute(2, 0, 1)[None]
    mask = None if image.alpha is None else torch.from_numpy(image.alpha)[None, None]
    mask_file = cfg.modifiers.mask_ratio.mask_file
    if mask_file is not None:  # white = valid, resized to the target
        grey = load_image(mask_file).composite(np.zeros(3)).mean(axis=-1)
        resized = torch.from_numpy(grey)[None, None]
        mask = torch.nn.functional.interpolate(resized, size=colour.shape[-2:], mode="bilinear", align_corners=False)
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
