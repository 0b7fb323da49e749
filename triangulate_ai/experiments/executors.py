"""Running an ablation's tasks: a local process pool or Ray, each task fitting its runs of one
method in one loop while holding their locks, every failure recorded in the run's folder; pool
workers die with the runner. And the estimate of how long the runs will take.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from ..errors import EXIT_INTERRUPTED, UserError
from ..io import write_json
from ..stop import StopRequest
from .plan import ExecutorConfig, PlannedRun, pack, status

LOCKS = ".locks"


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
# In a pool worker (its initializer makes it False): whether Ctrl-C was seen there, so the tasks that
# reach the worker later start nothing. None elsewhere: a process that is not a worker never latches.
_interrupted: bool | None = None


def lock_path(output: Path, run: PlannedRun) -> Path:
    """One lock file per run, outside its folder (which --overwrite may delete)."""
    folder = run.folder
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


def run_batch(runs: list[PlannedRun], threads: int, locks: list[str]) -> list[dict]:
    """Fit runs of one method together in this process (a pool worker or a Ray task), holding
    their locks; record failures in their folders. The runner listed these runs before this task
    started, so each run's state is read again under its lock: one another runner finished since
    is left alone (a fresh fit would delete its folder), resumable ones continue alone (their
    checkpoints may be at other steps), fresh ones share one loop. Returns only folders and
    outcomes (see `_outcome`): results are read from the folders, never from here."""
    if _interrupted:
        return _not_started(runs)
    import torch

    torch.set_num_threads(max(1, threads))
    outcomes = {str(run.folder): _outcome(skipped="busy") for run in runs}
    with contextlib.ExitStack() as stack:
        mine = [run for run, lock in zip(runs, locks) if stack.enter_context(run_lock(Path(lock)))]
        states = {run.folder: status(run.folder) for run in mine}
        for run in mine:
            if states[run.folder] == "finished":
                outcomes[str(run.folder)] = _outcome(skipped="finished")
            else:
                (run.folder / "failed.json").unlink(missing_ok=True)
        fresh = [run for run in mine if states[run.folder] == "todo"]
        codes: dict[str, int] = {}
        try:
            if fresh:
                codes = _fit(fresh[0], resume=False) if len(fresh) == 1 else _fit_batch(fresh)
            for run in mine:
                if states[run.folder] == "resumable" and not _interrupted:
                    codes.update(_fit(run, resume=True))
        except KeyboardInterrupt:  # a second Ctrl-C aborts the fit
            _note_interrupt()
            raise
        outcomes.update({folder: _outcome(code) for folder, code in codes.items()})
        outcomes.update({str(run.folder): _outcome(skipped="stopped") for run in mine
                         if states[run.folder] == "resumable" and str(run.folder) not in codes})
    return [{"folder": str(run.folder), **outcomes[str(run.folder)]} for run in runs]


def _outcome(exit_code: int | None = None, skipped: Literal["busy", "finished", "stopped"] | None = None) -> dict:
    """What became of a run in a task: the exit code of its fit here, or why it was not fitted
    here (busy: another runner holds it; finished: another runner finished it meanwhile;
    stopped: the ablation was interrupted before it started)."""
    return {"exit_code": exit_code, "skipped": skipped}


def _not_started(runs: list[PlannedRun]) -> list[dict]:
    """The outcomes of a task the interrupted ablation did not start (cancelled or refused)."""
    return [{"folder": str(run.folder), **_outcome(skipped="stopped")} for run in runs]


def _fit_batch(runs: list[PlannedRun]) -> dict[str, int]:
    """Fresh runs (their folders hold no finished run: overwrite deletes only what is left of a
    failed or unstarted one) in one loop."""
    from ..api import Job, Run

    try:
        jobs = [Job(r.load_config(), r.folder) for r in runs]
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
        return {str(r.folder): _failed(r, 1, f"{type(exc).__name__}: {exc}") for r in runs}
    if stop.requested():  # the loop took a Ctrl-C as its stop
        _note_interrupt()
    codes = {}
    for run, result in zip(runs, results):
        error = result.metrics["error"]
        codes[str(run.folder)] = _failed(run, 1, error) if error else 0 if result.completed else EXIT_INTERRUPTED
    return codes


def _fit(run: PlannedRun, resume: bool) -> dict[str, int]:
    """One run alone, every way it can fail recorded in its folder. `resume` is decided by the
    caller under the run's lock; a fresh run's folder holds no finished run (see _fit_batch)."""
    from ..api import FitFailed, Run

    folder = str(run.folder)
    stop = StopRequest()
    try:
        cfg = run.load_config()
        with stop:
            result = Run(cfg, run.folder, resume=resume, overwrite=True).execute(should_stop=stop.requested)
        if stop.requested():  # the fit took a Ctrl-C as its stop
            _note_interrupt()
        return {folder: 0 if result.completed else EXIT_INTERRUPTED}
    except UserError as exc:
        return {folder: _failed(run, exc.exit_code, str(exc))}
    except FitFailed as exc:
        return {folder: _failed(run, 1, str(exc))}
    except Exception as exc:  # a bug or a crash in one run must not stop the others
        return {folder: _failed(run, 1, f"{type(exc).__name__}: {exc}")}


def _failed(run: PlannedRun, code: int, error: str) -> int:
    folder = run.folder
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "failed.json", {"exit_code": code, "error": error})
    return code


def _start_worker(parent: int) -> None:
    """Pool-worker initializer: Ctrl-C between fits is noted (a fit notes its own), and the
    worker ends with the runner."""
    global _interrupted
    _interrupted = False
    signal.signal(signal.SIGINT, _note_interrupt)
    _die_with_parent(parent)


def _note_interrupt(*signal_args) -> None:
    """Latch the worker's Ctrl-C (a signal handler, and called after a fit that stopped on it)."""
    global _interrupted
    if _interrupted is not None:
        _interrupted = True


def _die_with_parent(parent: int) -> None:
    """End this worker when the runner ends, however it ends (kill -9 included), so no orphan
    keeps fitting or spinning on its cores."""
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


def execute(runs: list[PlannedRun], executor: ExecutorConfig, output: Path) -> list[dict]:
    """Run `runs` with the configured executor, packed into tasks of up to `batch_size` runs,
    printing one line per run as its task ends; returns every run's outcome (see run_batch)."""
    tasks = pack(runs, executor.batch_size)
    cpus = os.cpu_count() or 1
    workers = max(1, min(executor.workers or cpus, len(tasks)))
    threads = max(1, cpus // workers)
    outcomes: list[dict] = []

    def done(task: list[PlannedRun], results: list[dict]) -> None:
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

    # Ctrl-C in the terminal reaches the workers too: their fits save and end; the runner then
    # cancels the tasks not started (a worker refuses the one already queued to it) and reports
    with StopRequest() as stop, ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                                    initializer=_start_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(run_batch, task, threads, [str(lock_path(output, r)) for r in task]): task
                   for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            done(task, _not_started(task) if future.cancelled() else future.result())
            if stop.requested():
                for other in futures:
                    other.cancel()
    return outcomes


def estimate(runs: list[PlannedRun], executor: ExecutorConfig, steps: int = 3, warmup: int = 2) -> str:
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
        for method in dict.fromkeys(run.method for run in runs):
            mine = [t for t in tasks if t[0].method == method]
            first = mine[0]
            cfgs = [r.load_config() for r in first]
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


SKIPPED = {"busy": "skipped: another runner is working on it", "finished": "ok: finished by another runner",
           "stopped": "not started: the ablation was interrupted (runs on the next run)"}


def _report(run: PlannedRun, result: dict) -> None:
    code = result["exit_code"]
    state = SKIPPED[result["skipped"]] if result["skipped"] else {
        0: "ok", EXIT_INTERRUPTED: "interrupted (resumes on the next run)"}.get(
        code, f"failed (exit {code}, see failed.json)")
    print(f"  {run.label}: {state}", flush=True)
