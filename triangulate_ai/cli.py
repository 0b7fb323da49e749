"""`train.py`: fit one image with triangles and write a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .api import FitFailed, Run, budget_values, check_folder, random_network_warnings
from .config import Config, load_config
from .errors import UserError, program_name
from .fit import Fitter
from .io import TargetImage
from .progress import ProgressBar
from .run import CHECKPOINT
from .stop import StopRequest

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(), description="Fit an image with learnable triangles.")
    parser.add_argument("--config", type=Path, help="YAML config (defaults: configs/base.yaml)")
    parser.add_argument("--image", type=Path, help="target image (PNG or JPEG); overrides image.path")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<image name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set render.sigma=0.3 (repeatable)")
    parser.add_argument("--iterations", type=int, metavar="N", help="optimisation steps (optim.iterations)")
    parser.add_argument("--time", type=float, metavar="SECONDS",
                        help="time budget of the optimisation loop (optim.time_limit); without --iterations (or "
                             "--set optim.iterations=N) the run is bounded by time alone")
    parser.add_argument("--target-psnr", type=float, metavar="DB",
                        help="stop once the hard-edged export reaches this PSNR (optim.target_psnr), checked "
                             "every eval.every steps")
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
    run = Run(cfg, folder, resume=args.resume is not None, overwrite=args.overwrite, on_warning=_print_warning)
    for line in random_network_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    if run.note:
        print(run.note)
    print(banner(cfg, run.image, run.fitter, run.device, run.folder, resumed=args.resume is not None))
    progress = ProgressBar(cfg, run.fitter)
    stop = StopRequest("\nstopping after this step (Ctrl-C again to abort without saving)")
    failure = None
    try:
        with stop:
            result = run.execute([progress], stop.requested)
    except FitFailed as exc:
        result, failure = exc.result, str(exc)
    finally:
        progress.close()
    print(final_table(result.metrics))
    if failure is not None:
        print(f"error: {failure}; checkpoint and outputs of step {run.fitter.steps_done(0)} written to {run.folder}",
              file=sys.stderr)
        return 1
    if not result.completed:
        print(f"interrupted at step {run.fitter.step}: checkpoint and outputs saved; "
              f"continue with --resume {run.folder}")
        return EXIT_INTERRUPTED
    return 0


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
        ("modifiers", ", ".join(fitter.modifiers.names()) or "none"),
        ("networks", networks),
        ("run", f"{'resuming at step ' + str(fitter.step) + ', ' if resumed else ''}{budget_text(cfg)}, "
                f"checkpoint every {cfg.checkpoint.every} -> {folder}"),
    ]
    lines = [f"  {key:<12}{value}" for key, value in rows]
    if fitter.modifiers.names():  # the seeds' start-of-run line, for logs that grep for it
        lines.append(f"Enabled loss modifiers: {', '.join(fitter.modifiers.names())}")
    return "\n".join(lines)


def budget_text(cfg: Config) -> str:
    optim = cfg.optim
    parts = [f"{optim.iterations} iterations"] if optim.iterations is not None else []
    if optim.time_limit is not None:
        parts.append(f"{optim.time_limit:g} s")
    text = " or ".join(parts) + (", whichever comes first" if len(parts) > 1 else "")
    if optim.target_psnr is not None:
        text += f", or until the export reaches {optim.target_psnr:g} dB"
    return text


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
    lines.append(f"  {summary['iterations']} iterations in {summary['wall_time_s']:.1f} s (stopped by "
                 f"{summary['stopped_by']}), "
                 f"{len(summary['warnings'])} warning(s); summary.json has them all")
    return "\n".join(lines)


def _config_and_folder(args: argparse.Namespace) -> tuple[Config, Path]:
    if args.resume is not None:
        resolved = args.resume / "config.yaml"
        if not (args.resume / CHECKPOINT).is_file() or not resolved.is_file():
            raise UserError(f"nothing to resume in {args.resume}: it needs config.yaml and {CHECKPOINT}")
        if args.config or args.image or args.out:
            raise UserError("--resume takes its config, image and folder from the run; use --set to change values")
        values = budget_values(args.overrides, args.iterations, args.time, args.target_psnr)
        return load_config(resolved, args.overrides, values, values_source="--iterations/--time/--target-psnr"), \
            args.resume
    values = {"image.path": str(args.image)} if args.image else {}
    values.update(budget_values(args.overrides, args.iterations, args.time, args.target_psnr))
    cfg = load_config(args.config, args.overrides, values, values_source="--image/--iterations/--time/--target-psnr")
    if cfg.image.path is None:
        raise UserError("no image given: pass --image PATH or set image.path in the config")
    folder = args.out or Path("runs") / Path(cfg.image.path).stem
    check_folder(folder)
    return cfg, folder
