"""The CLI end to end on a 64x64 image: quality rises, outputs are complete and consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from triangulate_ai.cli import main
from triangulate_ai.config import RenderConfig
from triangulate_ai.export import rasterize_svg, svg_from_dict
from triangulate_ai.raster import make_renderer

from .conftest import QUICK

ROOT = Path(__file__).parent.parent
OUTPUTS = ["config.yaml", "metrics.jsonl", "final.png", "compare.png", "triangles.json", "triangles.svg",
           "progress.gif", "checkpoint.pt", "summary.json"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    from .conftest import smooth_image

    Image.fromarray(smooth_image()).save(tmp / "target.png")
    out = tmp / "run"
    assert main(["--image", str(tmp / "target.png"), "--out", str(out), *QUICK]) == 0
    return out


def test_fit_raises_psnr_by_a_real_margin(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["completed"] and summary["iterations"] == 40
    assert summary["psnr"] > summary["psnr_initial"] + 3.0
    assert summary["psnr"] > summary["psnr_flat_mean"] + 3.0
    for key in ["ssim", "psnr_soft", "wall_time_s", "triangles", "seed", "backend", "versions", "device"]:
        assert key in summary
    assert summary["backend"] == make_renderer(RenderConfig()).name and summary["triangles"] == 40
    assert summary["perceptual_weights"] == "random" and summary["lpips_meaningful"] is False
    assert summary["network_weights"] == {"eval.lpips.weights": "random"}
    assert 0 <= summary["lpips"] < summary["lpips_initial"]


def test_run_folder_has_every_output(finished_run):
    for name in OUTPUTS:
        assert (finished_run / name).is_file(), name
    assert not list(finished_run.glob(".*.tmp"))  # no leftovers from atomic writes
    gif = Image.open(finished_run / "progress.gif")
    assert gif.n_frames == 40 // 5 + 1
    compare = Image.open(finished_run / "compare.png")
    assert compare.size == (64 * 3 + 8, 64)
    resolved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert resolved["triangles"]["count"] == 40 and resolved["image"]["path"].endswith("target.png")


def test_metrics_jsonl_has_one_record_per_logged_step(finished_run):
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(0, 40, 5)) + [39, 40]
    assert {"total", "loss/l1", "weight/l1", "psnr_soft", "time_s"} <= set(records[0])
    assert records[-2]["psnr_soft"] > records[0]["psnr_soft"]
    evaluated = [r["step"] for r in records if "eval/psnr" in r]
    assert evaluated == [0, 20, 40]  # eval.every=20, and the final drawing
    assert {"eval/psnr", "eval/ssim", "eval/lpips"} <= set(records[0])
    summary = json.loads((finished_run / "summary.json").read_text())
    assert records[-1]["eval/psnr"] == summary["psnr"] and records[0]["eval/psnr"] == summary["psnr_initial"]


def test_svg_draws_the_same_picture_as_final_png_and_the_render(finished_run):
    data = json.loads((finished_run / "triangles.json").read_text())
    assert data["format"] == "triangulate_ai.triangles" and len(data["triangles"]) == 40
    svg_raster = rasterize_svg((finished_run / "triangles.svg").read_text())
    final = np.asarray(Image.open(finished_run / "final.png"), dtype=np.float32) / 255
    assert np.abs(svg_raster - final).max() <= 1 / 255 + 1e-6
    assert svg_from_dict(data) == (finished_run / "triangles.svg").read_text()


def test_existing_folder_gets_a_new_name_unless_overwrite(finished_run, capsys):
    image = yaml.safe_load((finished_run / "config.yaml").read_text())["image"]["path"]
    args = ["--image", image, *QUICK, "--set", "optim.iterations=2"]
    before = (finished_run / "summary.json").read_bytes()
    assert main([*args, "--out", str(finished_run)]) == 0
    assert (finished_run / "summary.json").read_bytes() == before
    assert (finished_run.with_name(finished_run.name + "_1") / "summary.json").is_file()
    assert "exists; writing to" in capsys.readouterr().out
    other = finished_run.with_name("other")
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([*args, "--out", str(other), "--overwrite"]) == 2
    assert (other / "notes.txt").read_text() == "mine"


def test_resume_rejects_a_folder_without_checkpoint(tmp_path, capsys):
    assert main(["--resume", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def _params(folder: Path) -> list:
    return json.loads((folder / "triangles.json").read_text())["triangles"]


def test_ctrl_c_saves_and_resume_ends_like_an_uninterrupted_run(tmp_path, image_path):
    """A real SIGINT to a real process, wherever it lands, then --resume."""
    args = [sys.executable, str(ROOT / "train.py"), "--image", str(image_path), *QUICK,
            "--set", "optim.iterations=150", "--set", "checkpoint.every=7"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full = tmp_path / "full"
    subprocess.run([*args, "--out", str(full)], check=True, env=env, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen([*args, "--out", str(cut)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (cut / "metrics.jsonl").exists() or len((cut / "metrics.jsonl").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    interrupted = json.loads((cut / "summary.json").read_text())
    assert not interrupted["completed"] and 0 < interrupted["iterations"] < 150
    assert (cut / "final.png").is_file() and (cut / "checkpoint.pt").is_file()

    subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", str(cut)], check=True, env=env,
                   capture_output=True)
    assert _params(cut) == _params(full)
    resumed = json.loads((cut / "summary.json").read_text())
    assert resumed["completed"] and resumed["iterations"] == 150
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (full / "metrics.jsonl").read_text().splitlines()]
