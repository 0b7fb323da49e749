"""Ablation runner, its command line: a grid of fits (methods x images x seeds x other config
values), each in its own run folder (plan.py makes the runs), run by a local process pool or Ray
(executors.py), then summarised from the run folders (report.py).

    triangulate-ablate --config configs/ablation/balancers.yaml

Every image of the grid is read before anything is written: missing or unreadable ones stop the
ablation (exit code 2), each named on a line of its own. A killed ablation resumes: finished runs are
skipped, interrupted ones continue from their checkpoint, failed ones are tried again. A finished
run is reused only while its config.yaml equals the config the ablation asks for now; otherwise the
runner refuses, naming the keys. A failed run is recorded (failed.json) and does not stop the
others; the exit code is 1 when a run of this invocation failed (130 when one was interrupted).
Each run is locked while it runs, and whether it is finished, resumable or fresh is decided under
its lock, so two runners on one folder never write into the same run folder and a finished run is
never refitted (nor its folder deleted) by the other; pool workers die with the runner.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from ..config import parse_override
from ..errors import EXIT_INTERRUPTED, ArgumentParser, UserError, one_line_errors, program_name
from ..io import load_image, write_atomic
from .executors import estimate, execute
from .plan import AblationConfig, PlannedRun, _label, config_changes, load_ablation, plan, status
from .report import write_report


def _failures(outcomes: list[dict]) -> int:
    """Runs whose fit here failed (not those skipped or interrupted)."""
    return sum(o["skipped"] is None and o["exit_code"] not in (0, EXIT_INTERRUPTED) for o in outcomes)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=program_name(),
        description="Run an ablation grid of fits and summarise it (results.csv, results.md, plots).",
        epilog="example: triangulate-ablate --config configs/ablation/balancers.yaml --set optim.iterations=100 "
               "--methods equal geometric_mean --seeds 0")
    parser.add_argument("--config", type=Path, required=True, help="ablation YAML (see configs/ablation/)")
    parser.add_argument("--out", type=Path, help="experiment folder (overrides output:, default runs/ablation/<name>)")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="run only these methods of the config")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds to run (replaces seeds:)")
    parser.add_argument("--images", nargs="+", metavar="IMAGE",
                        help="images to run: names or paths of the config's images, or other image files")
    parser.add_argument("--executor", choices=["local", "ray"], help="override executor.type")
    parser.add_argument("--workers", type=int, help="override executor.workers")
    parser.add_argument("--batch-size", type=int, help="override executor.batch_size (runs per task)")
    parser.add_argument("--address", help="override executor.address (ray)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="fit config override for every run (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="only summarise the run folders")
    parser.add_argument("--estimate", action="store_true",
                        help="print the expected wall time of the runs still to do (a few timed steps), run nothing")
    return parser


def _selected(cfg: AblationConfig, args: argparse.Namespace, config_path: Path) -> AblationConfig:
    """The config cut down (or re-pointed) by --methods, --seeds, --images, --set and executor options."""
    extra = dict(parse_override(item) for item in args.overrides)
    update: dict[str, Any] = {"set": {**cfg.set, **extra}}
    if args.methods:
        unknown = [m for m in args.methods if m not in cfg.methods]
        if unknown:
            raise UserError(f"--methods: {unknown[0]!r} is not a method of {config_path} ({', '.join(cfg.methods)})")
        update["methods"] = {m: cfg.methods[m] for m in args.methods}
        if cfg.baseline is not None and cfg.baseline not in args.methods:
            update["baseline"] = None
    if args.seeds:
        update["seeds"] = list(dict.fromkeys(args.seeds))
    if args.images:
        update["images"] = [_image_entry(cfg, item, config_path) for item in args.images]
    if args.out:
        update["output"] = str(args.out)
    executor = {k: v for k, v in (("type", args.executor), ("workers", args.workers), ("address", args.address),
                                  ("batch_size", args.batch_size)) if v is not None}
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be >= 0 (0 = one per CPU core)")
    update["executor"] = cfg.executor.model_copy(update=executor)
    return cfg.model_copy(update=update)


def _image_entry(cfg: AblationConfig, item: str, config_path: Path) -> str:
    """A config image named by its stem or as written, else an image file (as a path the config
    can resolve: absolute)."""
    for image in cfg.images:
        if item in (image, Path(image).stem, Path(image).name):
            return image
    if Path(item).is_file() or Path(item).is_dir():
        return str(Path(item).resolve())
    names = ", ".join(Path(i).stem for i in cfg.images)
    raise UserError(f"--images: {item!r} is neither an image of {config_path} ({names}) nor an image file or folder")


def check_images(runs: list[PlannedRun]) -> None:
    """Read every distinct image of `runs` (as its first run will: at image.max_size) before
    anything is written, so a missing or unreadable one stops the ablation up front instead of
    failing each of its runs; every bad image is named, one line each, as train.py does."""
    images = {}
    for run in runs:
        images.setdefault(run.sets["image.path"], run.config["image"]["max_size"])
    problems = []
    for path, max_size in images.items():
        try:
            load_image(path, max_size)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        "\nerror: ".join([f"{len(problems)} images cannot be used:"] + problems))


def check_changes(runs: list[PlannedRun], output: Path) -> None:
    """Refuse when runs already in `output` were made with other settings than asked now."""
    changed = [(run, changes) for run in runs if (changes := config_changes(run))]
    if changed:
        run, changes = changed[0]
        raise UserError(
            f"{len(changed)} run(s) in {output} were made with other settings than asked now, e.g. "
            f"{run.method}/{run.image}/seed {run.seed}: {'; '.join(changes[:3])}"
            f"{' ...' if len(changes) > 3 else ''}. Finished runs are reused only when their config is "
            "the same; give a new experiment folder with --out (or delete the old runs)")


def run_all(cfg: AblationConfig, runs: list[PlannedRun], output: Path) -> list[dict]:
    """The runs not finished yet, with a line before and after; their outcomes."""
    todo = [run for run in runs if status(run.folder) != "finished"]
    print(f"ablation {cfg.name}: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
          f"{len(todo)} to run with the {cfg.executor.type} executor -> {output}", flush=True)
    outcomes = execute(todo, cfg.executor, output)
    busy = sum(o["skipped"] == "busy" for o in outcomes)
    if busy:
        print(f"{busy} run(s) were skipped because another runner is working on them; their rows "
              "show what their folders hold now", flush=True)
    return outcomes


def exit_code_of(outcomes: list[dict]) -> int:
    """130 when a run was interrupted (it resumes next time), 1 when one failed, else 0; the
    failures are counted on stderr, after the report, where they are seen."""
    failed = _failures(outcomes)
    if failed:
        print(f"error: {failed} of {len(outcomes)} runs failed (see failed.json in their folders)",
              file=sys.stderr, flush=True)
    if any(o["skipped"] == "stopped" or (o["skipped"] is None and o["exit_code"] == EXIT_INTERRUPTED)
           for o in outcomes):
        return EXIT_INTERRUPTED
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return one_line_errors(lambda: _ablate(args))


def _ablate(args: argparse.Namespace) -> int:
    cfg = _selected(load_ablation(args.config), args, args.config)
    output = Path(cfg.output) if cfg.output else Path("runs") / "ablation" / _label(cfg.name)
    runs = plan(cfg, args.config, output)
    if not args.report_only:
        check_changes(runs, output)
    if args.estimate:
        print(estimate([run for run in runs if status(run.folder) != "finished"], cfg.executor))
        return 0
    if not args.report_only:
        check_images(runs)
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / "ablation.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    outcomes = [] if args.report_only else run_all(cfg, runs, output)
    baseline = cfg.baseline or next(iter(cfg.methods))
    print(write_report(runs, output, baseline))
    return exit_code_of(outcomes)


if __name__ == "__main__":
    sys.exit(main())
