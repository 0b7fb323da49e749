"""Ablation runner: a grid of fits (methods x images x seeds x other config values), each in its
own run folder, run by a local process pool or Ray, then summarised from the run folders.

    python -m triangulate_ai.experiments.ablate --config configs/ablation/balancers.yaml

A killed ablation resumes: finished runs are skipped, interrupted ones continue from their
checkpoint, failed ones are tried again. A failed run is recorded (failed.json) and does not
stop the others.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError

from ..config import CLI, Section, safe_load, load_config
from ..errors import UserError
from .report import write_report


class ExecutorConfig(Section):
    type: Literal["local", "ray"] = "local"
    workers: int = Field(0, ge=0)  # parallel runs; 0 = one per CPU core
    address: Optional[str] = None  # ray: "auto", a cluster address, or none for a local instance


class AblationConfig(Section):
    name: str
    base: str  # the fit config every run starts from (relative to this file)
    output: Optional[str] = None  # experiment folder; default runs/ablation/<name>
    images: list[str]  # relative to this file
    seeds: list[int] = [0, 1, 2]
    methods: dict[str, dict[str, Any]]  # name -> config overrides (dotted keys)
    baseline: Optional[str] = None  # the method others are compared with (default: the first)
    grid: dict[str, list[Any]] = {}  # any other config path -> values, crossed with everything
    set: dict[str, Any] = {}  # overrides for every run
    executor: ExecutorConfig = ExecutorConfig()


def load_ablation(path: Path) -> AblationConfig:
    try:
        data = safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read ablation config {path}: {exc.strerror}") from None
    try:
        cfg = AblationConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise UserError(f"{path}: {key}: {err['msg']}") from None
    if cfg.baseline is not None and cfg.baseline not in cfg.methods:
        raise UserError(f"{path}: baseline = {cfg.baseline!r} is not one of the methods {list(cfg.methods)}")
    return cfg


def _set_args(overrides: dict[str, Any]) -> list[str]:
    """--set arguments; values as JSON, which the config reader parses as YAML."""
    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def plan(cfg: AblationConfig, config_path: Path, output: Path) -> list[dict]:
    """Every run of the ablation with its folder and command-line arguments. All configs are
    validated here, before anything runs."""
    root = config_path.parent
    base = (root / cfg.base).resolve()
    grid_items = list(cfg.grid.items())
    runs = []
    for method, overrides in cfg.methods.items():
        for values in itertools.product(*[v for _, v in grid_items]):
            extra = dict(zip([k for k, _ in grid_items], values))
            suffix = "".join(f"__{k}={v}" for k, v in extra.items())
            variant = method + suffix
            for image in cfg.images:
                for seed in cfg.seeds:
                    image_path = (root / image).resolve()
                    folder = output / _label(variant) / f"{_label(Path(image).stem)}_seed{seed}"
                    sets = {**cfg.set, **overrides, **extra, "seed": seed, "log.progress_bar": False}
                    args = ["--config", str(base), "--image", str(image_path), "--out", str(folder),
                            "--overwrite", *_set_args(sets)]
                    runs.append({"method": variant, "family": method, "grid": suffix, "image": Path(image).stem,
                                 "seed": seed, "folder": str(folder), "args": args, "sets": sets})
    for run in runs:  # config mistakes stop the ablation before it starts, with the run named
        try:
            load_config(base, _set_args(run["sets"])[1::2])
        except UserError as exc:
            raise UserError(f"run {run['method']}/{run['image']}/seed {run['seed']}: {exc}") from None
    return runs


def status(folder: Path) -> str:
    """finished | resumable | todo, from what the run folder holds."""
    summary = folder / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("completed"):
        return "finished"
    if (folder / "checkpoint.pt").is_file() and (folder / "config.yaml").is_file():
        return "resumable"
    return "todo"


def run_one(run: dict, threads: int) -> dict:
    """Run one fit in this process (a pool worker or a Ray task); record a failure in the folder.
    Returns only the folder and exit code: results are read from the folder, never from here."""
    import torch

    from ..cli import main

    torch.set_num_threads(max(1, threads))
    folder = Path(run["folder"])
    failed = folder / "failed.json"
    if failed.exists():
        failed.unlink()
    args = ["--resume", str(folder)] if status(folder) == "resumable" else run["args"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(args)
    except Exception as exc:  # a bug or a crash in one run must not stop the others
        code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    if code != 0:
        folder.mkdir(parents=True, exist_ok=True)
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        (folder / "failed.json").write_text(json.dumps({"exit_code": code, "error": lines[-1] if lines else ""}))
    return {"folder": str(folder), "exit_code": code}


def execute(runs: list[dict], executor: ExecutorConfig) -> None:
    """Run `runs` with the configured executor, printing one line per finished run."""
    cpus = os.cpu_count() or 1
    workers = executor.workers or cpus
    threads = max(1, cpus // workers)
    if executor.type == "ray":
        import ray

        ray.init(address=executor.address, **({} if executor.address else {"num_cpus": workers}),
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        task = ray.remote(num_cpus=1)(run_one)
        pending = {task.remote(run, threads): run for run in runs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            _report(pending.pop(done[0]), ray.get(done[0]))
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, run, threads): run for run in runs}
        for future in as_completed(futures):
            _report(futures[future], future.result())


def _report(run: dict, result: dict) -> None:
    state = "ok" if result["exit_code"] == 0 else f"failed (exit {result['exit_code']}, see failed.json)"
    print(f"  {run['method']} / {run['image']} / seed {run['seed']}: {state}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m triangulate_ai.experiments.ablate",
        description="Run an ablation grid of fits and summarise it (results.csv, results.md, plots).",
        epilog="example: python -m triangulate_ai.experiments.ablate --config configs/ablation/balancers.yaml "
               "--set optim.iterations=100")
    parser.add_argument("--config", type=Path, required=True, help="ablation YAML (see configs/ablation/)")
    parser.add_argument("--executor", choices=["local", "ray"], help="override executor.type")
    parser.add_argument("--workers", type=int, help="override executor.workers")
    parser.add_argument("--address", help="override executor.address (ray)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="fit config override for every run (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="only summarise the run folders")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_ablation(args.config)
        extra = {}
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"{CLI} {item!r}: expected key.path=value")
            extra[key] = safe_load(value)
        updates = {k: v for k, v in (("type", args.executor), ("workers", args.workers),
                                     ("address", args.address)) if v is not None}
        cfg = cfg.model_copy(update={"set": {**cfg.set, **extra},
                                     "executor": cfg.executor.model_copy(update=updates)})
        output = Path(cfg.output) if cfg.output else Path("runs") / "ablation" / _label(cfg.name)
        runs = plan(cfg, args.config, output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "ablation.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        if not args.report_only:
            todo = [run for run in runs if status(Path(run["folder"])) != "finished"]
            print(f"ablation {cfg.name}: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
                  f"{len(todo)} to run with the {cfg.executor.type} executor -> {output}", flush=True)
            execute(todo, cfg.executor)
        baseline = cfg.baseline or next(iter(cfg.methods))
        report = write_report(runs, output, baseline)
        print(report)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
