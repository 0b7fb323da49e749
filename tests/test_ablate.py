"""Ablation runner: a small grid end to end with both executors, resume, failures, the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from triangulate_ai.experiments.ablate import main

from .conftest import smooth_image

ROOT = Path(__file__).parent.parent


def _ablation(tmp_path: Path, executor: str, images=("a.png",)) -> Path:
    Image.fromarray(smooth_image(32, 32)).save(tmp_path / "a.png")
    cfg = {
        "name": "tiny",
        "base": str(ROOT / "configs" / "quickstart.yaml"),
        "output": str(tmp_path / "out"),
        "images": list(images),
        "seeds": [0, 1],
        "baseline": "equal",
        "methods": {"equal": {"loss.type": "fixed"}, "gm": {"loss.type": "geometric_mean"}},
        "set": {"optim.iterations": 12, "triangles.count": 12, "eval.lpips": None, "log.every": 4},
        "executor": {"type": executor, "workers": 2},
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(tmp_path):
    with open(tmp_path / "out" / "results.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_grid_runs_reports_and_resumes(executor, tmp_path, capsys):
    config = _ablation(tmp_path, executor)
    assert main(["--config", str(config)]) == 0
    rows = _rows(tmp_path)
    assert sorted((r["method"], r["image"], r["seed"]) for r in rows) == [
        ("equal", "a", "0"), ("equal", "a", "1"), ("gm", "a", "0"), ("gm", "a", "1")]
    assert all(r["status"] == "ok" and float(r["psnr"]) > 0 and r["iterations"] == "12" for r in rows)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| equal | 2/2 |" in table and "| gm | 2/2 |" in table and "/2 |" in table
    for name in ("metrics.png", "loss_curves.png", "weights.png", "contact_sheet.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    summaries = sorted((tmp_path / "out").glob("*/*/summary.json"))
    assert len(summaries) == 4
    stamps = [p.stat().st_mtime_ns for p in summaries]
    capsys.readouterr()
    assert main(["--config", str(config)]) == 0  # again: nothing re-runs
    assert "4 already finished, 0 to run" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in summaries] == stamps


def test_a_failed_run_is_recorded_the_others_finish_and_the_exit_code_says_so(tmp_path, capsys):
    config = _ablation(tmp_path, "local")
    assert main(["--config", str(config)]) == 0
    folder = tmp_path / "out" / "gm" / "a_seed0"
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    summary = json.loads((folder / "summary.json").read_text())
    summary["completed"] = False  # as if it had been stopped: it resumes, from the broken checkpoint
    (folder / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "gm / a / seed 0: failed (exit 2, see failed.json)" in captured.out
    assert "1 of 1 runs failed (see failed.json in their folders)" in captured.err
    assert "checkpoint.pt" in json.loads((folder / "failed.json").read_text())["error"]
    rows = _rows(tmp_path)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "checkpoint.pt" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 3
    assert "Runs without a result" in (tmp_path / "out" / "results.md").read_text()


def test_interrupted_run_is_resumed_from_its_checkpoint(tmp_path):
    config = _ablation(tmp_path, "local")
    assert main(["--config", str(config)]) == 0
    folder = tmp_path / "out" / "gm" / "a_seed0"
    summary = json.loads((folder / "summary.json").read_text())
    summary["completed"] = False  # as if it had been stopped; its checkpoint is the final one
    (folder / "summary.json").write_text(json.dumps(summary))
    assert main(["--config", str(config)]) == 0
    assert json.loads((folder / "summary.json").read_text())["completed"]


def test_bad_method_override_stops_before_anything_runs(tmp_path, capsys):
    config = _ablation(tmp_path, "local")
    data = yaml.safe_load(config.read_text())
    data["methods"]["gm"] = {"loss.type": "geometric_mean", "loss.alpha": 2}
    config.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config)]) == 2
    assert "run gm/a/seed 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["balancers.yaml", "collapse.yaml"])
def test_shipped_ablation_configs_plan(name, tmp_path):
    from triangulate_ai.experiments.ablate import load_ablation, plan

    path = ROOT / "configs" / "ablation" / name
    cfg = load_ablation(path)
    runs = plan(cfg, path, tmp_path)
    assert len(runs) == len(cfg.methods) * len(cfg.images) * len(cfg.seeds)


def test_changed_settings_are_refused_naming_the_keys_and_old_results_stay(tmp_path, capsys):
    config = _ablation(tmp_path, "local")
    assert main(["--config", str(config), "--seeds", "0"]) == 0
    recorded = (tmp_path / "out" / "ablation.yaml").read_text()
    results = (tmp_path / "out" / "results.csv").read_text()
    capsys.readouterr()
    assert main(["--config", str(config), "--seeds", "0", "--set", "optim.iterations=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.iterations: 12 -> 20" in err[0] and "--out" in err[0]
    assert (tmp_path / "out" / "ablation.yaml").read_text() == recorded  # still says what the runs are
    assert (tmp_path / "out" / "results.csv").read_text() == results
    other = tmp_path / "longer"
    assert main(["--config", str(config), "--seeds", "0", "--set", "optim.iterations=20", "--out", str(other)]) == 0
    assert {r["iterations"] for r in csv.DictReader(open(other / "results.csv"))} == {"20"}


def test_a_key_added_after_a_run_counts_as_a_change_only_when_set_away_from_its_default(tmp_path, capsys):
    """Runs made before the program grew a key (here respawn.candidates, deleted from their
    config.yaml) did what the key's default does: they are reused; asking for another value is
    a change."""
    config = _ablation(tmp_path, "local")
    assert main(["--config", str(config), "--seeds", "0"]) == 0
    for path in (tmp_path / "out").glob("*/*/config.yaml"):
        data = yaml.safe_load(path.read_text())
        del data["respawn"]["candidates"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["--config", str(config), "--seeds", "0"]) == 0
    assert "already finished, 0 to run" in capsys.readouterr().out
    assert main(["--config", str(config), "--seeds", "0", "--set", "respawn.candidates=8"]) == 2
    assert "respawn.candidates: <absent> -> 8" in capsys.readouterr().err


def test_a_folder_of_images_stands_for_the_images_it_holds(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i, name in enumerate(["b.png", "a.jpg"]):
        Image.fromarray(smooth_image(32, 32, seed=i)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    config = _ablation(tmp_path, "local", images=("imgs",))
    assert main(["--config", str(config), "--methods", "gm", "--seeds", "0"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert sorted((r["image"], r["status"]) for r in rows) == [("a", "ok"), ("b", "ok")]


def test_command_line_cuts_the_grid_down(tmp_path, capsys):
    config = _ablation(tmp_path, "local")
    out = tmp_path / "cut"
    assert main(["--config", str(config), "--methods", "gm", "--seeds", "1", "--images", "a", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], r["image"], r["seed"]) for r in rows] == [("gm", "a", "1")]
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/summary.json")) == ["gm/a_seed1/summary.json"]
    assert not (tmp_path / "out").exists()  # the config's output: is not touched
    capsys.readouterr()
    assert main(["--config", str(config), "--methods", "nope"]) == 2
    assert "--methods: 'nope' is not a method" in capsys.readouterr().err
    assert main(["--config", str(config), "--images", "missing"]) == 2
    assert "--images: 'missing'" in capsys.readouterr().err


def test_a_run_held_by_another_runner_is_skipped_and_not_touched(tmp_path, capsys):
    from triangulate_ai.experiments.ablate import load_ablation, plan
    from triangulate_ai.experiments.executors import lock_path, run_lock

    config = _ablation(tmp_path, "local")
    runs = plan(load_ablation(config), config, tmp_path / "out")
    held = next(r for r in runs if r.method == "gm" and r.seed == 0)
    with run_lock(lock_path(tmp_path / "out", held)) as got:
        assert got
        assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "gm / a / seed 0: skipped: another runner is working on it" in out
    assert not held.folder.exists()
    assert sum(r["status"] == "ok" for r in _rows(tmp_path)) == 3
    assert main(["--config", str(config)]) == 0  # the lock is gone: the run is done now
    assert sum(r["status"] == "ok" for r in _rows(tmp_path)) == 4


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(p) for p in text.split()}
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the workers")
def test_workers_end_when_the_runner_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config = _ablation(tmp_path, "local")
    data = yaml.safe_load(config.read_text())
    data["set"]["optim.iterations"] = 100000  # a fit that outlives the runner by far
    data["executor"]["workers"] = 1
    config.write_text(yaml.safe_dump(data))
    runner = subprocess.Popen([sys.executable, "-m", "triangulate_ai.experiments.ablate", "--config", str(config)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # a guard against hanging, not a speed limit
    workers: set[int] = set()
    while not list((tmp_path / "out").glob("*/*/metrics.jsonl")):
        assert runner.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    workers = _children(runner.pid)
    assert workers
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the runner"
        time.sleep(0.1)
    for pid in workers:  # reap, if we happen to be their new parent
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def test_estimate_times_a_few_steps_and_writes_nothing(tmp_path, capsys):
    config = _ablation(tmp_path, "local")
    assert main(["--config", str(config), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "4 runs in 2 tasks" in out and "| equal | 1 |" in out and "| gm | 1 |" in out
    assert "expected wall time:" in out
    assert not (tmp_path / "out").exists()
