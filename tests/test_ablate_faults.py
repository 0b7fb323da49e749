"""Ablation runner under faults: two runners on one folder, bad images, failed and interrupted runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from triangulate_ai.experiments import ablate
from triangulate_ai.experiments import plan as plan_module
from triangulate_ai.experiments.ablate import EXIT_INTERRUPTED, execute, load_ablation, main, plan, status

from .test_ablate import ROOT, _ablation


def _snapshot(folders: list[Path]) -> dict[Path, tuple[int, bytes, int]]:
    """Each run folder's inode with its summary.json's bytes and mtime: what a refit would change."""
    return {f: (f.stat().st_ino, (f / "summary.json").read_bytes(), (f / "summary.json").stat().st_mtime_ns)
            for f in folders}


def test_a_stale_todo_list_never_refits_a_run_finished_meanwhile(tmp_path, capsys):
    """Runner B lists its runs, runner A finishes them all, then B works through its stale list:
    it leaves every run as A left it and says another runner finished it."""
    config = _ablation(tmp_path, "local")
    cfg, output = load_ablation(config), tmp_path / "out"
    todo = [run for run in plan(cfg, config, output) if status(run.folder) != "finished"]  # B's list
    assert len(todo) == 4
    assert main(["--config", str(config)]) == 0  # runner A
    folders = [run.folder for run in todo]
    before = _snapshot(folders)
    capsys.readouterr()
    execute(todo, cfg.executor.model_copy(update={"workers": 1, "batch_size": 2}), output)  # runner B
    assert _snapshot(folders) == before
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.endswith(": ok: finished by another runner") for line in lines)


def _finished_summaries(out: Path, seen: dict[Path, tuple[int, bytes]]) -> None:
    """Record each run folder's inode and summary.json the first time its summary says completed."""
    for path in out.glob("*/*/summary.json"):
        if path.parent in seen:
            continue
        try:
            data, inode = path.read_bytes(), path.parent.stat().st_ino
        except FileNotFoundError:  # deleted between glob and read
            continue
        if json.loads(data).get("completed"):
            seen[path.parent] = (inode, data)


def _fits(stdout: str) -> int:
    """Runs this runner fitted to the end itself (not those it found finished by the other)."""
    return sum(line.rstrip().endswith(": ok") for line in stdout.splitlines())


def test_two_runners_on_one_folder_fit_each_run_exactly_once(tmp_path):
    """Runner B starts once runner A has finished a run; with other task sizes B's stale tasks
    meet runs A finished since. Every run is fitted once: no folder recreated, no summary rewritten."""
    config = _ablation(tmp_path, "local")
    data = yaml.safe_load(config.read_text())
    data["seeds"] = [0, 1, 2]
    data["set"]["optim.iterations"] = 300  # long enough that the runners overlap
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "triangulate_ai.experiments.ablate", "--config", str(config), "--workers", "1"]
    logs = {name: (open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")) for name in "AB"}
    seen: dict[Path, tuple[int, bytes]] = {}
    deadline = time.monotonic() + 600  # a guard against hanging, not a speed limit
    runners = {"A": subprocess.Popen(command + ["--batch-size", "1"], cwd=ROOT, stdout=logs["A"][0],
                                     stderr=logs["A"][1])}
    try:
        while not seen:
            assert runners["A"].poll() is None and time.monotonic() < deadline
            _finished_summaries(out, seen)
            time.sleep(0.05)
        runners["B"] = subprocess.Popen(command + ["--batch-size", "3"], cwd=ROOT, stdout=logs["B"][0],
                                        stderr=logs["B"][1])
        while any(runner.poll() is None for runner in runners.values()):
            assert time.monotonic() < deadline, "the runners did not end"
            _finished_summaries(out, seen)
            time.sleep(0.05)
    finally:
        for runner in runners.values():
            if runner.poll() is None:
                runner.kill()
                runner.wait()
        for handles in logs.values():
            for handle in handles:
                handle.close()
    _finished_summaries(out, seen)
    stdout = {name: (tmp_path / f"{name}.out").read_text() for name in "AB"}
    stderr = {name: (tmp_path / f"{name}.err").read_text() for name in "AB"}
    assert [runners[name].returncode for name in "AB"] == [0, 0], stderr
    assert len(seen) == 6
    for folder, (inode, summary) in seen.items():
        assert folder.stat().st_ino == inode, f"{folder} was recreated"
        assert (folder / "summary.json").read_bytes() == summary, f"{folder} was fitted again"
    assert _fits(stdout["A"]) + _fits(stdout["B"]) == 6, stdout


def test_ctrl_c_ends_the_running_fit_and_starts_no_other(tmp_path):
    """Ctrl-C in the terminal (SIGINT to the runner's process group) while the first of four
    tasks runs: that fit saves and ends, the three others are never started (one of them already
    waits in the pool's queue), and the runner reports every run and exits 130."""
    config = _ablation(tmp_path, "local")
    data = yaml.safe_load(config.read_text())
    data["set"]["optim.iterations"] = 10**7  # a fit that does not end by itself in the test's life
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "triangulate_ai.experiments.ablate", "--config", str(config), "--workers", "1",
               "--batch-size", "1"]
    runner = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own process group, as a terminal's job is
    deadline = time.monotonic() + 300  # a guard against hanging, not a speed limit
    try:
        while not list(out.glob("*/*/metrics.jsonl")):
            assert runner.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(runner.pid, signal.SIGINT)
        while runner.poll() is None:
            assert time.monotonic() < deadline, "the runner went on after Ctrl-C"
            time.sleep(0.1)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    stdout, stderr = runner.communicate()
    assert runner.returncode == EXIT_INTERRUPTED, stderr
    started = [folder for folder in out.glob("*/*") if (folder / "metrics.jsonl").exists()]
    assert len(started) == 1 and (started[0] / "checkpoint.pt").is_file()
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    assert len(lines) == 4 and sum(line.endswith(": interrupted (resumes on the next run)") for line in lines) == 1
    assert sum(": not started: the ablation was interrupted" in line for line in lines) == 3, stdout


def test_a_missing_image_stops_the_ablation_before_anything_is_written(tmp_path, capsys):
    config = _ablation(tmp_path, "local", images=("a.png", "missing.png"))
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: image not found") and "missing.png" in err[0]
    assert not (tmp_path / "out").exists()


def test_each_image_is_read_once_however_many_runs_use_it(tmp_path, monkeypatch):
    reads = []
    real = ablate.load_image

    def spy(path, max_size=0):
        reads.append(Path(path).name)
        return real(path, max_size)

    monkeypatch.setattr(ablate, "load_image", spy)
    config = _ablation(tmp_path, "local", images=("a.png", "missing.png"))  # 2 methods x 2 seeds each
    assert main(["--config", str(config)]) == 2
    assert sorted(reads) == ["a.png", "missing.png"]


def test_two_bad_images_are_named_one_line_each(tmp_path, capsys):
    config = _ablation(tmp_path, "local", images=("a.png", "missing.png", "gone.png"))
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "2 images" in err[0]
    assert "missing.png" in err[1] and "gone.png" in err[2]
    assert not (tmp_path / "out").exists()


def test_an_image_over_pillows_pixel_limit_stops_the_ablation_before_anything_is_written(tmp_path, capsys,
                                                                                         monkeypatch):
    from PIL import Image

    config = _ablation(tmp_path, "local")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the 32x32 image (1024 px) is over twice the limit
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "a.png" in err[0] and "pixels" in err[0]
    assert not (tmp_path / "out").exists()


def test_an_interrupted_run_makes_the_exit_code_130(tmp_path, monkeypatch):
    """A run stopped by Ctrl-C in its worker (saved, resumes next time) is not a success."""
    config = _ablation(tmp_path, "local")
    monkeypatch.setattr(ablate, "execute", lambda runs, executor, output: [
        {"folder": str(run.folder), "exit_code": EXIT_INTERRUPTED, "skipped": None} for run in runs])
    assert main(["--config", str(config)]) == EXIT_INTERRUPTED


def test_packing_does_not_crash_on_an_image_over_pillows_pixel_limit(tmp_path, monkeypatch):
    """pack() reads image headers also where the images were not checked first (--estimate): an
    image Pillow refuses has no size, and its run is packed alone, to fail where it is read."""
    from PIL import Image

    from .conftest import smooth_image

    path = tmp_path / "a.png"
    Image.fromarray(smooth_image(32, 32)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)
    assert plan_module._image_size(str(path), 0) is None


def test_a_damaged_summary_is_a_run_to_do_again_and_a_row_that_says_so(tmp_path):
    from triangulate_ai.experiments.report import collect

    folder = tmp_path / "gm" / "a_seed0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"completed": tr')  # cut short
    assert status(folder) == "todo"
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "checkpoint.pt").write_bytes(b"")
    assert status(folder) == "resumable"
    run = plan_module.PlannedRun("gm", "gm", "", "a", 0, folder, tmp_path / "base.yaml", {}, {})
    (row,) = collect([run])
    assert row["status"] == "unreadable" and "damaged" in row["error"]
    (folder / "summary.json").write_text("[1, 2]")  # JSON, but not a summary
    assert status(folder) == "resumable" and collect([run])[0]["status"] == "unreadable"
