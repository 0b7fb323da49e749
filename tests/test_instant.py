"""Instant triangulation and shipped models: --instant and predict() write a fit's exports from a
model's one-pass prediction; models load by name; the shipped model's card describes it."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import triangulate_ai as tai
from triangulate_ai.cli import main as fit_main
from triangulate_ai.errors import UserError
from triangulate_ai.export import rasterize_svg, scene_to_dict, svg_from_dict
from triangulate_ai.metrics import image_quality
from triangulate_ai.model import predict as predict_module
from triangulate_ai.model.predict import SHIPPED, load_model, shipped_models
from triangulate_ai.model.ship import ship

from .conftest import smooth_image
from .test_model import data, trained  # noqa: F401 - fixtures

EXPORTS = {"config.yaml", "triangles.json", "triangles.svg", "final.png", "compare.png", "summary.json"}


@pytest.fixture
def shelf(trained, tmp_path, monkeypatch):  # noqa: F811 - the fixture of test_model
    """The tiny trained model shipped under the name 'tiny' into a shelf of its own."""
    folder = tmp_path / "shelf"
    card = ship(trained, "tiny", data="three synthetic pictures", command="pytest", into=folder)
    monkeypatch.setattr(predict_module, "SHIPPED", folder)
    return folder, card


def test_a_shipped_model_loads_by_name_and_its_card_describes_it(shelf, trained):  # noqa: F811
    folder, card = shelf
    assert predict_module.shipped_models() == ["tiny"]
    weights = (folder / "tiny.pt").read_bytes()
    assert card["sha256"] == hashlib.sha256(weights).hexdigest() == json.loads((folder / "tiny.json").read_text())[
        "sha256"]
    state = torch.load(folder / "tiny.pt", weights_only=True)
    assert "optimizer" not in state["trainer"] and state["recorder"]["history"][-1]["psnr"] == card["validation"][
        "psnr"]
    model, cfg = load_model("tiny")
    assert model.count == card["triangles"] == cfg.triangles.count == 8
    original, _ = load_model(trained)
    for key, value in original.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_a_model_ships_with_its_inference_settings_and_their_validation(trained, tmp_path):  # noqa: F811
    folder = tmp_path / "shelf"
    with pytest.raises(UserError, match="mirrors > 1 needs solve"):
        ship(trained, "bad", data="d", command="c", into=folder, mirrors=2)
    assert not folder.exists()  # refused before anything is written
    card = ship(trained, "tiny", data="d", command="c", into=folder, solve=16, mirrors=2)
    assert card["inference"] == {"solve": 16, "mirrors": 2}
    model, cfg = load_model(folder / "tiny.pt")
    assert (cfg.model.solve, cfg.model.mirrors) == (16, 2) == (model.solve, model.mirrors)
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert card["validation_shipped"]["pictures"] == len(state["split"]["val"])
    assert math.isfinite(card["validation_shipped"]["psnr"])


def test_instant_on_a_folder_writes_one_run_folder_per_image(shelf, data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "instant"
    assert fit_main(["--instant", "--image", str(data), "--init-from-model", "tiny", "--out", str(out),
                     "--batch-size", "2"]) == 0
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["img0", "img1", "img2"]
    model, _ = load_model("tiny")
    for folder in folders:
        assert {p.name for p in folder.iterdir()} == EXPORTS
        summary = json.loads((folder / "summary.json").read_text())
        target = np.asarray(Image.open(data / f"{folder.name}.png").convert("RGB"), np.float32) / 255
        with torch.no_grad():
            scene = model(torch.from_numpy(target).permute(2, 0, 1)[None])
        drawing = rasterize_svg(svg_from_dict(scene_to_dict(scene, *target.shape[:2])))
        assert summary["psnr"] == pytest.approx(image_quality(drawing, target)["psnr"], abs=1e-6)  # batched = alone
        assert summary["triangles"] == 8 and summary["model"] == "tiny"
        assert json.loads((folder / "triangles.json").read_text())["triangles"].__len__() == 8
    table = (out / "summary.md").read_text()
    assert "| **mean of 3** |" in table


def test_predict_returns_triangulations_and_writes_only_when_asked(shelf, data, tmp_path):  # noqa: F811
    pictures = [data / "img0.png", np.asarray(Image.open(data / "img1.png"))]
    results = tai.predict(pictures, model="tiny")
    assert len(results) == 2 and all(r.folder is None for r in results)
    assert results[0].metrics["image"] == str(data / "img0.png") and results[1].metrics["image"] is None
    assert results[0].image.shape == (48, 48, 3) and len(results[0].to_dict()["triangles"]) == 8
    one = tai.predict(data / "img2.png", model="tiny", out=tmp_path / "one")
    assert one[0].folder == tmp_path / "one" and {p.name for p in (tmp_path / "one").iterdir()} == EXPORTS


@pytest.mark.parametrize("args, message", [
    (["--set", "triangles.count=9"], "triangles.count = 9: the model tiny predicts 8 triangles"),
    (["--init-from-model", "nonesuch"], "model 'nonesuch': not a shipped model (tiny)"),
    (["--time", "5"], "--time has no meaning"),
])
def test_instant_bad_input_is_one_line_and_writes_nothing(args, message, shelf, data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "instant"
    model = [] if "--init-from-model" in args else ["--init-from-model", "tiny"]
    assert fit_main(["--instant", "--image", str(data / "img0.png"), "--out", str(out), *model, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_instant_refuses_a_fit_checkpoint_as_a_model(shelf, data, image_path, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "fit"
    assert fit_main(["--image", str(image_path), "--out", str(run), "--iterations", "2", "--set",
                     "eval.lpips=null", "--set", "log.progress_bar=false"]) == 0
    out = tmp_path / "instant"
    assert fit_main(["--instant", "--image", str(data / "img0.png"), "--out", str(out), "--init-from-model",
                     str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a TriangulateAI checkpoint of format triangulate_ai.model/1" in err[0], err
    assert not out.exists()


def test_fit_can_start_from_a_shipped_model_by_name(shelf, data):  # noqa: F811
    result = tai.fit(data / "img0.png", init="model", model="tiny", iterations=2,
                     overrides={"eval.lpips": None})
    assert result.config.triangles.model == "tiny" and result.config.triangles.count == 8
    with pytest.raises(UserError, match="goes with init='model'"):
        tai.fit(data / "img0.png", init="grid", model="tiny")


def test_the_package_ships_a_default_model_that_loads_by_name_and_matches_its_card():
    assert "default" in shipped_models()
    card = json.loads((SHIPPED / "default.json").read_text())
    weights = (SHIPPED / "default.pt").read_bytes()
    assert card["sha256"] == hashlib.sha256(weights).hexdigest()
    assert len(weights) <= 10 * 2**20
    state = torch.load(SHIPPED / "default.pt", weights_only=True)
    assert state["recorder"]["history"][-1]["psnr"] == card["validation"]["psnr"]
    model, cfg = load_model("default")
    assert model.count == card["triangles"] == cfg.triangles.count
    picture = torch.from_numpy(smooth_image(64, 96)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        scene = model(picture)
    assert torch.isfinite(scene.vertices).all() and scene.vertices.shape == (1, card["triangles"], 3, 2)


def test_instant_again_with_overwrite_replaces_its_own_folders(shelf, data, tmp_path):  # noqa: F811
    out = tmp_path / "instant"
    args = ["--instant", "--image", str(data / "img0.png"), "--init-from-model", "tiny", "--out", str(out)]
    assert fit_main(args) == 0 and fit_main([*args, "--overwrite"]) == 0
    assert not (tmp_path / "instant_1").exists() and (out / "config.yaml").is_file()


def test_fit_from_a_model_keeps_a_count_the_config_asks_for(shelf, data):  # noqa: F811
    result = tai.fit(data / "img0.png", init="model", model="tiny", iterations=1,
                     overrides={"eval.lpips": None, "triangles.count": 11})
    assert result.config.triangles.count == 11 and len(result.to_dict()["triangles"]) == 11
