"""Ablation runner: a grid of fits (methods x images x seeds x other config values), each in its
own run folder, run by a local process pool or Ray, then summarised from the run folders.

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
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError

from ..config import Config, Section, load_config, parse_override, safe_load
from ..errors import EXIT_INTERRUPTED, ArgumentParser, UserError, one_line_errors, program_name
from ..io import batches_by, expand_images, load_image, write_atomic, write_json
from ..stop import StopRequest
from .report import write_report

LOCKS = ".locks"
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


class ExecutorConfig(Section):
    type: Literal["local", "ray"] = "local"
    workers: int = Field(0, ge=0)  # parallel tasks; 0 = one per CPU core
    address: Optional[str] = None  # ray: "auto", a cluster address, or none for a local instance
    batch_size: int = Field(8, ge=1)  # runs of one method fitted together in one task (one loop)


class AblationConfig(Section):
    name: str
    base: str  # the fit config every run starts from (relative to this file)
    output: Optional[str] = None  # experiment folder; default runs/ablation/<name>
    images: list[str]  # image files or folders of images, relative to this file
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


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def plan(cfg: AblationConfig, config_path: Path, output: Path) -> list[dict]:
    """Every run of the ablation with its folder and config values. All configs are validated
    here, before anything runs; each run carries its resolved config (`config`, as config.yaml
    holds it) so a finished run can be checked against what is asked now."""
    root = config_path.parent
    base = (root / cfg.base).resolve()
    grid_items = list(cfg.grid.items())
    runs = []
    for method, overrides in cfg.methods.items():
        for values in itertools.product(*[v for _, v in grid_items]):
            extra = dict(zip([k for k, _ in grid_items], values))
            suffix = "".join(f"__{k}={v}" for k, v in extra.items())
            variant = method + suffix
            for image in image_files(cfg, root):
                for seed in cfg.seeds:
                    image_path = (root / image).resolve()
                    folder = output / _label(variant) / f"{_label(Path(image).stem)}_seed{seed}"
                    sets = {**cfg.set, **overrides, **extra, "seed": seed, "log.progress_bar": False,
                            "image.path": str(image_path)}
                    runs.append({"method": variant, "family": method, "grid": suffix, "image": Path(image).stem,
                                 "seed": seed, "folder": str(folder), "base": str(base), "sets": sets})
    for run in runs:  # config mistakes stop the ablation before it starts, with the run named
        try:
            run["config"] = load_config(run["base"], values=run["sets"], values_source="ablation").dump()
        except UserError as exc:
            raise UserError(f"run {run['method']}/{run['image']}/seed {run['seed']}: {exc}") from None
    return runs


def image_files(cfg: AblationConfig, root: Path) -> list[str]:
    """The config's images with each folder replaced by the images it holds (sorted by name)."""
    files: list[str] = []
    for image in cfg.images:
        if (root / image).is_dir():
            files += [str(Path(image) / p.name) for p in expand_images([str(root / image)])]
        else:
            files.append(image)
    return list(dict.fromkeys(files))


def status(folder: Path) -> str:
    """finished | resumable | todo, from what the run folder holds."""
    summary = folder / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("completed"):
        return "finished"
    if (folder / "checkpoint.pt").is_file() and (folder / "config.yaml").is_file():
        return "resumable"
    return "todo"


def config_changes(run: dict) -> list[str]:
    """Keys whose value in the run folder's config.yaml differs from what the ablation asks now
    ("key: old -> new"); empty when they agree or the folder holds no run yet."""
    path = Path(run["folder"]) / "config.yaml"
    if status(Path(run["folder"])) == "todo" or not path.is_file():
        return []
    old, new = _flat(safe_load(path.read_text()) or {}), _flat(run["config"])
    defaults = _defaults()
    # a key added to the program after the run was made, left at its default, is what the run did
    return [f"{key}: {old.get(key, '<absent>')} -> {new.get(key, '<absent>')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)
            and not (key not in old and key in defaults and new.get(key) == defaults[key])]


@functools.cache
def _defaults() -> dict[str, Any]:
    """Every config key at its default, flattened (built once: the check runs for every run)."""
    return _flat(Config().dump())


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def lock_path(output: Path, run: dict) -> Path:
    """One lock file per run, outside its folder (which --overwrite may delete)."""
    folder = Path(run["folder"])
    return output / LOCKS / f"{folder.parent.name}__{folder.name}.lock"


@contextlib.contextmanager
def run_lock(path: Path):
    """An exclusive, non-blocking lock on `path`: yields True when held, False when another
    process holds it. The kernel drops it when the holder dies, however it dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_batch(runs: list[dict], threads: int, locks: list[str]) -> list[dict]:
    """Fit runs of one method together in this process (a pool worker or a Ray task), holding
    their locks; record failures in their folders. The runner listed these runs before this task
    started, so each run's state is read again under its lock: one another runner finished since
    is left alone (a fresh fit would delete its folder), resumable ones continue alone (their
    checkpoints may be at other steps), fresh ones share one loop. Returns only folders and
    outcomes (see `_outcome`): results are read from the folders, never from here."""
    import torch

    torch.set_num_threads(max(1, threads))
    outcomes = {run["folder"]: _outcome(skipped="busy") for run in runs}
    with contextlib.ExitStack() as stack:
        mine = [run for run, lock in zip(runs, locks) if stack.enter_context(run_lock(Path(lock)))]
        states = {run["folder"]: status(Path(run["folder"])) for run in mine}
        for run in mine:
            if states[run["folder"]] == "finished":
                outcomes[run["folder"]] = _outcome(skipped="finished")
            else:
                (Path(run["folder"]) / "failed.json").unlink(missing_ok=True)
        fresh = [run for run in mine if states[run["folder"]] == "todo"]
        codes: dict[str, int] = {}
        if fresh:
            codes = _fit(fresh[0], resume=False) if len(fresh) == 1 else _fit_batch(fresh)
        for run in mine:
            if states[run["folder"]] == "resumable":
                codes.update(_fit(run, resume=True))
        outcomes.update({folder: _outcome(code) for folder, code in codes.items()})
    return [{"folder": run["folder"], **outcomes[run["folder"]]} for run in runs]


def _outcome(exit_code: int | None = None, skipped: Literal["busy", "finished"] | None = None) -> dict:
    """What became of a run in a task: the exit code of its fit here, or why it was not fitted
    here (busy: another runner holds it; finished: another runner finished it meanwhile)."""
    return {"exit_code": exit_code, "skipped": skipped}


def _fit_batch(runs: list[dict]) -> dict[str, int]:
    """Fresh runs (their folders hold no finished run: overwrite deletes only what is left of a
    failed or unstarted one) in one loop."""
    from ..api import Job, Run

    try:
        jobs = [Job(load_config(r["base"], values=r["sets"], values_source="ablation"), Path(r["folder"]))
                for r in runs]
        batch = Run.batch(jobs, overwrite=True)
    except Exception:  # noqa: BLE001 - set-up problems are found and charged run by run below
        codes = {}
        for run in runs:
            codes.update(_fit(run, resume=False))
        return codes
    stop = StopRequest()  # Ctrl-C in the terminal reaches the workers too: finish the step, save
    try:
        with stop:
            results = batch.execute_all(should_stop=stop.requested)
    except Exception as exc:  # a crash in the loop: every run of the batch failed with it
        return {r["folder"]: _failed(r, 1, f"{type(exc).__name__}: {exc}") for r in runs}
    codes = {}
    for run, result in zip(runs, results):
        error = result.metrics["error"]
        codes[run["folder"]] = _failed(run, 1, error) if error else 0 if result.completed else EXIT_INTERRUPTED
    return codes


def _fit(run: dict, resume: bool) -> dict[str, int]:
    """One run alone, every way it can fail recorded in its folder. `resume` is decided by the
    caller under the run's lock; a fresh run's folder holds no finished run (see _fit_batch)."""
    from ..api import FitFailed, Run

    folder = Path(run["folder"])
    stop = StopRequest()
    try:
        cfg = load_config(run["base"], values=run["sets"], values_source="ablation")
        with stop:
            result = Run(cfg, folder, resume=resume, overwrite=True).execute(should_stop=stop.requested)
        return {run["folder"]: 0 if result.completed else EXIT_INTERRUPTED}
    except UserError as exc:
        return {run["folder"]: _failed(run, exc.exit_code, str(exc))}
    except FitFailed as exc:
        return {run["folder"]: _failed(run, 1, str(exc))}
    except Exception as exc:  # a bug or a crash in one run must not stop the others
        return {run["folder"]: _failed(run, 1, f"{type(exc).__name__}: {exc}")}


def _failed(run: dict, code: int, error: str) -> int:
    folder = Path(run["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "failed.json", {"exit_code": code, "error": error})
    return code


def pack(runs: list[dict], size: int) -> list[list[dict]]:
    """Tasks of up to `size` runs that can share one loop: the same method and grid values, the
    same state (fresh, or resuming: those go alone, their checkpoints may be at other steps),
    and images of one size."""
    def key(run: dict) -> tuple:
        resuming = status(Path(run["folder"])) == "resumable"
        return run["method"], _image_size(run), run["folder"] if resuming else ""
    return batches_by(runs, key, size)


def _image_size(run: dict) -> tuple[int, int] | None:
    """The size the fit will work at (after image.max_size), from the file's header only."""
    from PIL import Image

    path, limit = run["sets"]["image.path"], run["config"]["image"]["max_size"]
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - unreadable in any way (too many pixels too): it is fitted alone, and fails there
        return None
    scale = limit / max(width, height) if limit else 1.0
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else (width, height)


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: end this worker when the runner ends, however it ends (kill -9
    included), so no orphan keeps fitting or spinning on its cores."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:  # other systems, and belt and braces
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def execute(runs: list[dict], executor: ExecutorConfig, output: Path) -> list[dict]:
    """Run `runs` with the configured executor, packed into tasks of up to `batch_size` runs,
    printing one line per run as its task ends; returns every run's outcome (see run_batch)."""
    tasks = pack(runs, executor.batch_size)
    cpus = os.cpu_count() or 1
    workers = max(1, min(executor.workers or cpus, len(tasks)))
    threads = max(1, cpus // workers)
    outcomes: list[dict] = []

    def done(task: list[dict], results: list[dict]) -> None:
        for run, result in zip(task, results):
            outcomes.append(result)
            _report(run, result)

    if not tasks:
        return outcomes
    if executor.type == "ray":
        import ray

        ray.init(address=executor.address, **({} if executor.address else {"num_cpus": workers}),
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        remote = ray.remote(num_cpus=1)(run_batch)
        pending = {remote.remote(task, threads, [str(lock_path(output, r)) for r in task]): task for task in tasks}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            done(pending.pop(finished[0]), ray.get(finished[0]))
        return outcomes
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(run_batch, task, threads, [str(lock_path(output, r)) for r in task]): task
                   for task in tasks}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return outcomes


def estimate(runs: list[dict], executor: ExecutorConfig, steps: int = 3, warmup: int = 2) -> str:
    """Expected wall time of running `runs`: for each method, its first task is built (in memory,
    nothing written) and a few steps timed with the threads a worker would get; the evaluations
    (hard-edged export, PSNR/SSIM/LPIPS every eval.every steps and at the end) are timed once.
    Tasks then share the workers."""
    import torch

    from ..api import Job, Run

    tasks = pack(runs, executor.batch_size)
    cpus = os.cpu_count() or 1
    workers = max(1, min(executor.workers or cpus, len(tasks)))
    threads = max(1, cpus // workers)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    lines = [f"estimate: {len(runs)} runs in {len(tasks)} tasks of up to {executor.batch_size}, {workers} worker(s) "
             f"x {threads} thread(s)", "", "| method | tasks | s/step (task) | steps | evaluations | task time (s) |",
             "|---|---|---|---|---|---|"]
    total = 0.0
    try:
        for method in dict.fromkeys(run["method"] for run in runs):
            mine = [t for t in tasks if t[0]["method"] == method]
            first = mine[0]
            cfgs = [load_config(r["base"], values=r["sets"], values_source="ablation") for r in first]
            run = Run.batch([Job(cfg) for cfg in cfgs])
            for _ in range(warmup):
                run.fitter.train_step()
            started = time.perf_counter()
            for _ in range(steps):
                run.fitter.train_step()
            per_step = (time.perf_counter() - started) / steps
            started = time.perf_counter()
            for recorder in run.recorders:
                recorder._evaluate(run.fitter)
            per_eval = time.perf_counter() - started
            optim = cfgs[0].optim
            budget = optim.iterations if optim.iterations is not None else 10**9
            if optim.time_limit is not None:
                budget = min(budget, int(optim.time_limit / per_step))
            evaluations = budget // cfgs[0].eval.every + 2  # the first, the periodic ones, the final
            task = budget * per_step + evaluations * per_eval
            total += task * len(mine)
            lines.append(f"| {method} | {len(mine)} | {per_step:.3f} | {budget} | {evaluations} x {per_eval:.2f} s | "
                         f"{task:.0f} |")
    finally:
        torch.set_num_threads(previous)
    wall = total / workers
    lines += ["", f"expected wall time: {wall / 3600:.2f} h ({wall / 60:.0f} min) on this machine, for the runs "
              "not finished yet; an estimate from a few timed steps (runs stopping early on a target or an error "
              "take less)"]
    return "\n".join(lines)


SKIPPED = {"busy": "skipped: another runner is working on it", "finished": "ok: finished by another runner"}


def _report(run: dict, result: dict) -> None:
    code = result["exit_code"]
    state = SKIPPED[result["skipped"]] if result["skipped"] else {
        0: "ok", EXIT_INTERRUPTED: "interrupted (resumes on the next run)"}.get(
        code, f"failed (exit {code}, see failed.json)")
    print(f"  {run['method']} / {run['image']} / seed {run['seed']}: {state}", flush=True)


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


def check_images(runs: list[dict]) -> None:
    """Read every distinct image of `runs` (as its first run will: at image.max_size) before
    anything is written, so a missing or unreadable one stops the ablation up front instead of
    failing each of its runs; every bad image is named, one line each, as train.py does."""
    images = {}
    for run in runs:
        images.setdefault(run["sets"]["image.path"], run["config"]["image"]["max_size"])
    problems = []
    for path, max_size in images.items():
        try:
            load_image(path, max_size)
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else
                        "\nerror: ".join([f"{len(problems)} images cannot be used:"] + problems))


def check_changes(runs: list[dict], output: Path) -> None:
    """Refuse when runs already in `output` were made with other settings than asked now."""
    changed = [(run, changes) for run in runs if (changes := config_changes(run))]
    if changed:
        run, changes = changed[0]
        raise UserError(
            f"{len(changed)} run(s) in {output} were made with other settings than asked now, e.g. "
            f"{run['method']}/{run['image']}/seed {run['seed']}: {'; '.join(changes[:3])}"
            f"{' ...' if len(changes) > 3 else ''}. Finished runs are reused only when their config is "
            "the same; give a new experiment folder with --out (or delete the old runs)")


def run_all(cfg: AblationConfig, runs: list[dict], output: Path) -> list[dict]:
    """The runs not finished yet, with a line before and after; their outcomes."""
    todo = [run for run in runs if status(Path(run["folder"])) != "finished"]
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
    if any(o["skipped"] is None and o["exit_code"] == EXIT_INTERRUPTED for o in outcomes):
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
        print(estimate([run for run in runs if status(Path(run["folder"])) != "finished"], cfg.executor))
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
