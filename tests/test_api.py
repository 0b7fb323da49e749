"""The public Python API: fit() in memory and to a folder, arrays as input, render, and the
README's example run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import triangulate_ai as tai
from triangulate_ai.export import rasterize_svg

from .conftest import smooth_image

ROOT = Path(__file__).parent.parent
SMALL = {"triangles.size": 0.25, "eval.lpips": None, "log.every": 5}


def test_fit_in_memory_writes_nothing_and_returns_the_drawing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = tai.fit(smooth_image(), overrides=SMALL, triangles=20, iterations=30)
    assert list(tmp_path.iterdir()) == [] and result.folder is None
    assert result.completed and result.image.shape == (64, 64, 3) and result.metrics["iterations"] == 30
    assert result.metrics["psnr"] > result.metrics["psnr_initial"] + 2
    assert np.abs(rasterize_svg(result.svg()) - result.image).max() == 0  # the metrics describe the SVG
    assert result.scene.vertices.shape == (1, 20, 3, 2) and not result.scene.vertices.requires_grad


def test_fit_to_a_folder_matches_the_command_line(tmp_path, image_path):
    from triangulate_ai.cli import main

    result = tai.fit(image_path, out=tmp_path / "api", overrides={**SMALL, "log.progress_bar": False},
                     triangles=20, iterations=10)
    assert main(["--image", str(image_path), "--out", str(tmp_path / "cli"), *sum(
        (["--set", f"{k}={'null' if v is None else v}"] for k, v in
         {**SMALL, "triangles.count": 20, "optim.iterations": 10, "log.progress_bar": False}.items()), [])]) == 0
    for name in ("triangles.json", "triangles.svg", "final.png", "config.yaml"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    saved = result.save_svg(tmp_path / "x.svg")
    assert saved.read_text() == (tmp_path / "api" / "triangles.svg").read_text()


def test_arrays_of_each_kind_and_bad_ones(tmp_path):
    rgb = smooth_image(24, 32)
    for image in (rgb, rgb.astype(np.float32) / 255, rgb[..., 0], np.dstack([rgb, np.full((24, 32), 255, np.uint8)])):
        result = tai.fit(image, overrides=SMALL, triangles=5, iterations=2)
        assert result.image.shape == (24, 32, 3)
    with pytest.raises(tai.UserError, match="shape"):
        tai.fit(np.zeros((4, 4, 2)), overrides=SMALL)
    with pytest.raises(tai.UserError, match="NaN"):
        tai.fit(np.full((4, 4, 3), np.nan), overrides=SMALL)


def test_render_and_load_triangles_round_trip(tmp_path):
    result = tai.fit(smooth_image(32, 48), overrides=SMALL, triangles=10, iterations=5)
    result.save_json(tmp_path / "t.json")
    scene = tai.load_triangles(tmp_path / "t.json")
    assert torch.allclose(scene.vertices, result.scene.vertices, atol=1e-4 / 32)
    small = tai.render(scene, 32, 48, backend="reference")
    big = tai.render(scene, 64, 96)
    assert small.shape == (1, 3, 32, 48) and big.shape == (1, 3, 64, 96)
    soft = torch.from_numpy(result.soft).permute(2, 0, 1)[None]
    assert (tai.render(result.scene, 32, 48) - soft).abs().max() < 1e-6  # what the fit drew last
    with pytest.raises(tai.UserError, match="backend"):
        tai.render(scene, 8, 8, backend="nope")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(tai.UserError, match="not a triangles.json"):
        tai.load_triangles(tmp_path / "bad.json")


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for name in ("examples", "configs"):
        os.symlink(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "kodim23.svg").read_text().startswith("<svg")
    assert namespace["result"].metrics["iterations"] == 200
    assert namespace["big"].shape == (1, 3, 342, 512) and namespace["run"].fitter.step == 50
