"""`train.py`: fit images with triangles, one run folder per (image, seed).

One image and one seed: a single fit into `--out` (default runs/<image name>). Several images
(files, folders, glob patterns) and/or several seeds: B scenes per launch (`--batch-size`),
batched by image size, each in `<out>/<image name>_seed<N>` (default out: runs/), and a table
of all of them (also written to <out>/summary.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .api import FitFailed, Job, Run, budget_values, check_folder, random_network_warnings
from .config import Config, load_config
from .errors import EXIT_INTERRUPTED, ArgumentParser, UserError, one_line_errors, program_name
from .loop import Fitter
from .instant import instant_items, predict_all
from .io import TargetImage, batches_by, expand_images, load_image, write_atomic
from .model.predict import load_model
from .progress import ProgressBar, print_warning
from .runfolder import CHECKPOINT
from .stop import StopRequest

DEFAULT_BATCH = 8  # scenes per launch; see the README's batching figures


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=program_name(), description="Fit an image with learnable triangles.")
    parser.add_argument("--config", type=Path, help="YAML config (defaults: configs/base.yaml)")
    parser.add_argument("--image", nargs="+", metavar="IMAGE",
                        help="target image(s): files, folders of images, or glob patterns (quoted); overrides "
                             "image.path")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="fit every image once per seed")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B",
                        help=f"scenes (image, seed) fitted together in one launch (default {DEFAULT_BATCH})")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<image name>); with several images or "
                        "seeds, the folder holding one run folder per image and seed (default: runs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set render.sigma=0.3 (repeatable)")
    parser.add_argument("--iterations", type=int, metavar="N", help="optimisation steps (optim.iterations)")
    parser.add_argument("--time", type=float, metavar="SECONDS",
                        help="time budget of the optimisation loop (optim.time_limit); without --iterations (or "
                             "--set optim.iterations=N) the run is bounded by time alone")
    parser.add_argument("--target-psnr", type=float, metavar="DB",
                        help="stop once the hard-edged export reaches this PSNR (optim.target_psnr), checked "
                             "every eval.every steps")
    parser.add_argument("--init-from-model", metavar="MODEL",
                        help="start from a trained model's prediction for each image: a shipped model's name "
                             "(default) or a triangulate-train-model checkpoint.pt or its folder (sets "
                             "triangles.init=model, triangles.model=MODEL and the model's triangles.count)")
    parser.add_argument("--instant", action="store_true",
                        help="no fitting: draw each image with a trained model's one-pass prediction (the shipped "
                             "model 'default', or --init-from-model MODEL) and write the usual exports")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder instead of "
                        "choosing a new name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.instant:
        return _instant(args)
    if args.init_from_model is not None:
        if args.resume is not None:
            raise UserError("--init-from-model starts a fit; a resumed run goes on from its checkpoint")
        count = load_model(args.init_from_model)[0].count
        explicit = [item for item in args.overrides if item.partition("=")[0].strip() == "triangles.count"]
        args.overrides = [f"triangles.count={count}", *args.overrides, "triangles.init=model",
                          f"triangles.model={json.dumps(str(args.init_from_model))}"]  # quoted: any path is a string
        if explicit:  # a count asked for explicitly must be the model's (the fit then says so)
            args.overrides.append(explicit[-1])
    images = expand_images(args.image) if args.image else None
    if args.resume is None and ((images and len(images) > 1) or (args.seeds and len(args.seeds) > 1)):
        return _train_many(args, images)
    if images:
        args.image = images[0]
    if args.seeds:
        args.overrides = [*args.overrides, f"seed={args.seeds[0]}"]
    cfg, folder = _config_and_folder(args)
    if args.resume is not None and not (folder / CHECKPOINT).is_file():
        print(f"{folder} has no {CHECKPOINT} (the run stopped before its first one): starting it again from step 0")
    run = Run(cfg, folder, resume=args.resume is not None, overwrite=args.overwrite, on_warning=print_warning)
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


def _instant(args: argparse.Namespace) -> int:
    """--instant: the model's one-pass prediction of every image, exported; a table of them."""
    unused = [flag for flag, value in (("--resume", args.resume), ("--seeds", args.seeds), ("--iterations",
              args.iterations), ("--time", args.time), ("--target-psnr", args.target_psnr)) if value is not None]
    if unused:
        raise UserError(f"--instant draws a model's one-pass prediction, nothing is fitted: {unused[0]} has no "
                        "meaning with it")
    if not args.image:
        raise UserError("--instant needs --image IMAGE ... (files, folders or glob patterns)")
    images = expand_images(args.image)
    cfg = load_config(args.config, args.overrides, values_source="--instant")
    many = len(images) > 1
    out = args.out or (Path("runs") if many else Path("runs") / images[0].stem)
    check_folder(out)
    model = args.init_from_model or "default"
    items = instant_items(images, cfg, out, many)
    print(f"{len(images)} image(s), one-pass prediction of the model {model} -> {out}")
    results = predict_all(items, model, cfg, overwrite=args.overwrite, batch_size=args.batch_size,
                          progress=cfg.log.progress_bar and sys.stderr.isatty())
    table = instant_table(results)
    print(table)
    if many:
        write_atomic(out / "summary.md", table + "\n")
    return 0


def instant_table(results) -> str:
    """One Markdown row per image: PSNR and SSIM of the hard-edged drawing, milliseconds, folder."""
    lines = ["| image | PSNR (dB) | SSIM | flat mean (dB) | ms (model) | ms (drawing) | folder |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.metrics
        lines.append(f"| {Path(m['image']).stem} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_flat_mean']:.2f} | "
                     f"{1000 * m['seconds_forward']:.1f} | {1000 * m['seconds_drawing']:.1f} | {r.folder} |")
    if len(results) > 1:
        mean = sum(r.metrics["psnr"] for r in results) / len(results)
        lines.append(f"| **mean of {len(results)}** | **{mean:.2f}** | | | | | |")
    return "\n".join(lines)


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
        ("triangles", f"{cfg.triangles.count}, init {cfg.triangles.init}"
                      + (f" ({cfg.triangles.model})" if cfg.triangles.model else "")
                      + f", background {cfg.triangles.background}"),
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


def _train_many(args: argparse.Namespace, images: list[Path] | None) -> int:
    """Many scenes: every (image, seed), B per launch, then one table of all of them."""
    if args.resume is not None:
        raise UserError("--resume continues one run folder; give it without --image lists or --seeds")
    base = load_config(args.config, args.overrides,
                       budget_values(args.overrides, args.iterations, args.time, args.target_psnr),
                       values_source="--iterations/--time/--target-psnr")
    if images is None:
        if base.image.path is None:
            raise UserError("no image given: pass --image PATH or set image.path in the config")
        images = [Path(base.image.path)]
    stems = [p.stem for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UserError(f"two images are named {twice[0]}: their run folders would collide; rename one")
    loaded = {}
    problems = []
    for path in images:  # every image is read before any fit starts
        try:
            loaded[path] = load_image(path, base.image.max_size)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("\n".join(problems) if len(problems) == 1 else
                        "\nerror: ".join([f"{len(problems)} images cannot be used:"] + problems))
    out = args.out or Path("runs")
    seeds = args.seeds or [base.seed]
    jobs = []
    for path in images:
        for seed in seeds:
            cfg = load_config(args.config, args.overrides, {
                "image.path": str(path), "seed": seed,
                **budget_values(args.overrides, args.iterations, args.time, args.target_psnr)},
                values_source="--image/--seeds")
            jobs.append(Job(cfg, out / f"{path.stem}_seed{seed}", image=loaded[path]))
    check_folder(out)
    for line in random_network_warnings(base):
        print(f"warning: {line}", file=sys.stderr)
    batches = plan_batches(jobs, args.batch_size)
    print(f"{len(jobs)} scene(s) ({len(images)} image(s) x {len(seeds)} seed(s)) in {len(batches)} launch(es) of up "
          f"to {args.batch_size}, {budget_text(base)} -> {out}")
    results, stop = [], StopRequest("\nstopping after this step (Ctrl-C again to abort without saving)")
    with stop:
        for i, batch in enumerate(batches, start=1):
            run = Run.batch(batch, overwrite=args.overwrite, on_warning=_print_scene_warning(batch))
            for note in run.notes:
                print(note)
            names = ", ".join(f"{job.folder.name}" for job in batch)
            print(f"launch {i}/{len(batches)}: {names} ({run.images[0].size[0]}x{run.images[0].size[1]}, "
                  f"{run.fitter.renderer.name} on {run.device})")
            progress = ProgressBar(base, run.fitter)
            try:
                results += run.execute_all([progress], stop.requested)
            finally:
                progress.close()
            if stop.requested():
                break
    table = scenes_table(results)
    print(table)
    write_atomic(out / "summary.md", table + "\n")
    failed = [r for r in results if r.metrics["error"]]
    if stop.requested():
        print(f"interrupted: {len(results)} of {len(jobs)} scene(s) saved; run the same command with --overwrite "
              "to start again, or --resume one folder to continue it")
        return EXIT_INTERRUPTED
    return 1 if failed else 0


def plan_batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Scenes grouped by image size (a batch shares one canvas), then cut into batches of `size`."""
    return batches_by(jobs, lambda job: job.image.size, size)


def _print_scene_warning(batch: list[Job]):
    def show(scene: int, warning: dict) -> None:
        tqdm.write(f"warning: {batch[scene].folder.name}: step {warning['step']}: {warning['message']}",
                   file=sys.stderr)
    return show


def scenes_table(results) -> str:
    """One Markdown row per scene: image, seed, PSNR/SSIM of the export, steps, time, how it ended."""
    lines = ["| run | PSNR (dB) | SSIM | steps | loop time (s) | stopped by | folder |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.metrics
        end = m["stopped_by"] + (f": {m['error']}" if m["error"] else "")
        lines.append(f"| {r.folder.name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['iterations']} | "
                     f"{m['wall_time_s']:.1f} | {end} | {r.folder} |")
    if results:
        mean = sum(r.metrics["psnr"] for r in results) / len(results)
        lines.append(f"| **mean of {len(results)}** | **{mean:.2f}** | | | | | |")
    return "\n".join(lines)


def _config_and_folder(args: argparse.Namespace) -> tuple[Config, Path]:
    if args.resume is not None:
        resolved = args.resume / "config.yaml"
        if not resolved.is_file():
            raise UserError(f"nothing to resume in {args.resume}: it has no config.yaml")
        if not (args.resume / CHECKPOINT).is_file() and (args.resume / "summary.json").is_file():
            raise UserError(f"{args.resume} has a summary.json but no {CHECKPOINT}: it cannot be continued")
        if args.config or args.image or args.out:
            raise UserError("--resume takes its config, image and folder from the run; use --set to change values")
        values = budget_values(args.overrides, args.iterations, args.time, args.target_psnr)
        return load_config(resolved, args.overrides, values, values_source="--iterations/--time/--target-psnr"), \
            args.resume
    values = {"image.path": str(args.image)} if args.image else {}
    values.update(budget_values(args.overrides, args.iterations, args.time, args.target_psnr))
    cfg = load_config(args.config, args.overrides, values,
                      values_source="--image/--iterations/--time/--target-psnr")
    if cfg.image.path is None:
        raise UserError("no image given: pass --image PATH or set image.path in the config")
    folder = args.out or Path("runs") / Path(cfg.image.path).stem
    check_folder(folder)
    return cfg, folder
