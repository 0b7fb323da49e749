"""Landscape tools: analytic values against formulas, the empirical slice at the fit, figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from triangulate_ai.cli import main as train
from triangulate_ai.experiments import landscape
from triangulate_ai.experiments.visualize import build_parser, main

from .conftest import QUICK


def test_analytic_surfaces_match_the_formulas():
    l1, l2 = np.array([0.1, 1.0, 2.0]), np.array([0.5, 0.25, 4.0])
    s = landscape.analytic_surfaces(l1, l2, eps=0.0)
    value, g1, g2 = s["sum of logs"]
    assert value == pytest.approx(np.log(l1) + np.log(l2))
    assert g1 == pytest.approx(1 / l1) and g2 == pytest.approx(1 / l2)
    value, g1, _ = s["geometric mean"]
    assert value[1] == pytest.approx(0.5) and g1[1] == pytest.approx(0.5 / 2)
    value, g1, g2 = s["uncertainty (equilibrium)"]
    assert value[0] == pytest.approx(0.5 * (2 + math.log(0.1) + math.log(0.5)))
    assert g1 == pytest.approx(1 / (2 * l1)) and g2 == pytest.approx(1 / (2 * l2))
    value, g1, g2 = s["sum 1·L1 + 10·L2"]
    assert value == pytest.approx(l1 + 10 * l2) and set(g1) == {1.0} and set(g2) == {10.0}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from PIL import Image

    from .conftest import smooth_image

    tmp = tmp_path_factory.mktemp("landscape")
    Image.fromarray(smooth_image(32, 32)).save(tmp / "t.png")
    assert train(["--image", str(tmp / "t.png"), "--out", str(tmp / "run"), *QUICK,
                  "--set", "loss.terms.vgg={weights: random, layers: [relu1_2], weight: 0.1}"]) == 0
    return tmp / "run"


def test_empirical_slice_at_the_origin_is_the_checkpoint_loss(run_folder):
    fitter = landscape.load_fitter(run_folder / "config.yaml", checkpoint=run_folder / "checkpoint.pt")
    with torch.no_grad():
        expected = {name: float(loss) for name, loss in fitter.compute_losses(fitter.render()).items()}
    alphas, losses = landscape.slice_1d(fitter, points=5, span=0.5)
    assert alphas[2] == 0
    for name in expected:
        assert losses[name][2] == pytest.approx(expected[name], rel=1e-5)
        assert losses[name][0] != pytest.approx(expected[name])
    axis, surfaces = landscape.slice_2d(fitter, points=3, span=0.5)
    assert surfaces["l1"][1, 1] == pytest.approx(expected["l1"], rel=1e-5)


def test_directions_are_filter_normalised(run_folder):
    fitter = landscape.load_fitter(run_folder / "config.yaml", checkpoint=run_folder / "checkpoint.pt")
    d = landscape.random_directions(fitter, 1)[0]
    norms = d["positions"].norm(dim=(2, 3))
    assert torch.allclose(norms, fitter.triangles.positions.detach().norm(dim=(2, 3)), rtol=1e-5)


def test_every_mode_writes_its_figures(run_folder, tmp_path):
    out = tmp_path / "figs"
    assert main(["analytic", "--out", str(out), "--pdf"]) == 0
    assert main(["empirical", "--run", str(run_folder), "--out", str(out), "--points", "5"]) == 0
    assert main(["curves", str(run_folder), "--out", str(out)]) == 0
    for name in ("analytic.png", "analytic.pdf", "slice_1d.png", "slice_2d.png", "curves.png"):
        assert (out / name).stat().st_size > 5000, name
    assert main(["curves", str(tmp_path), "--out", str(out)]) == 2


def test_help_shows_an_example_for_each_mode():
    text = build_parser().format_help()
    for mode in ("analytic", "empirical", "curves"):
        assert f"visualize_geometric_loss.py {mode}" in text


def test_runs_with_the_same_leaf_name_get_their_own_curves(run_folder, tmp_path, monkeypatch):
    import shutil

    from triangulate_ai.experiments import plots, visualize

    for method in ("equal", "gm"):
        shutil.copytree(run_folder, tmp_path / "abl" / method / "t_seed0")
    seen = {}

    def capture(runs, out, pdf, note=None):
        seen.update(runs=runs, note=note)
        return []

    monkeypatch.setattr(plots, "plot_curves", capture)
    assert main(["curves", *(str(tmp_path / "abl" / m / "t_seed0") for m in ("equal", "gm")),
                 "--out", str(tmp_path / "figs")]) == 0
    assert list(seen["runs"]) == ["equal/t_seed0", "gm/t_seed0"]
    assert "vgg: randomly initialised" in seen["note"]  # the run's VGG term has random weights
    paths = [Path("/r/x/a/run"), Path("/r/y/a/run"), Path("/r/z/b/run")]
    assert visualize.run_labels(paths) == ["x/a/run", "y/a/run", "z/b/run"]
