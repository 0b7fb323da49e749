"""Checkpoints as untrusted input, and runs that can always be continued: every field of a fit's
checkpoint is checked (type, shape, dtype, finiteness) before anything is written, a run killed
before its first periodic checkpoint resumes, stale temporaries go, a resume leaves config.yaml
alone."""

from __future__ import annotations

import io
import json
import typing
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from PIL import Image

import triangulate_ai as tai
from triangulate_ai.checkpoints import Mismatch, conform, number, shorten, tensor
from triangulate_ai.cli import main
from triangulate_ai.config import Config
from triangulate_ai.experiments.visualize import main as visualize
from triangulate_ai.model.config import ModelRunConfig

from .conftest import QUICK, smooth_image


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("checkpoints")
    Image.fromarray(smooth_image()).save(tmp / "t.png")
    out = tmp / "run"
    assert main(["--image", str(tmp / "t.png"), "--out", str(out), *QUICK, "--set", "optim.iterations=12"]) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(source: Path, folder: Path) -> Path:
    for name, data in _files(source).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def _rewrite(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())


def _set(*keys, value):
    def change(state):
        section = state
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value(section[keys[-1]]) if callable(value) else value
    return change


HOSTILE = {  # what the issue found crashing mid-run or accepted, by name
    "elapsed_text": _set("recorder", "elapsed", value="abc"),
    "frames_text": _set("recorder", "frames", value="str"),
    "frames_float64": _set("recorder", "frames", value=lambda f: f.double()),
    "frames_other_size": _set("recorder", "frames", value=lambda f: f[:, :10]),
    "initial_list": _set("recorder", "initial", value=[1, 2, 3]),
    "initial_overrides_psnr": _set("recorder", "initial", value=lambda d: {**d, "psnr": 99.0}),
    "warnings_int": _set("recorder", "warnings", value=5),
    "warning_without_kind": _set("recorder", "warnings", value=[{"step": 1, "message": "x"}]),
    "densifier_set": _set("fitter", "densifier", value={1, 2}),
    "densifier_generators_set": _set("fitter", "densifier", "generators", value={1, 2}),
    "nan_positions": _set("fitter", "triangles", "positions", value=lambda p: p * float("nan")),
    "negative_step": _set("fitter", "step", value=-5),
    "int64_positions": _set("fitter", "triangles", "positions", value=lambda p: p.long()),
    "complex_positions": _set("fitter", "triangles", "positions", value=lambda p: p.to(torch.complex64)),
    "text_learning_rate": lambda s: s["fitter"]["optimizer"]["param_groups"][0].__setitem__("lr", "fast"),
    "nan_adam_moment": lambda s: s["fitter"]["optimizer"]["state"][0]["exp_avg"].fill_(float("inf")),
    "elapsed_nan": _set("fitter", "elapsed", value=float("nan")),
    "huge_step": _set("fitter", "step", value=2**1100),
    "params_as_tensor": lambda s: s["fitter"]["optimizer"]["param_groups"][0].__setitem__("params", torch.tensor([0])),
}


@pytest.mark.parametrize("more", [[], ["--set", "optim.iterations=40"]], ids=["finished", "extended"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_damaged_checkpoint_is_refused_in_one_line_before_anything_is_written(kind, more, finished, tmp_path,
                                                                                 capsys):
    folder = _copy(finished, tmp_path / "run")
    _rewrite(folder / "checkpoint.pt", HOSTILE[kind])
    before = _files(folder)
    capsys.readouterr()
    assert main(["--resume", str(folder), *more]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder / 'checkpoint.pt'}: "), err
    assert _files(folder) == before


def test_the_landscape_tool_refuses_a_damaged_checkpoint_and_makes_no_folder(finished, tmp_path, capsys):
    folder = _copy(finished, tmp_path / "run")
    _rewrite(folder / "checkpoint.pt", HOSTILE["densifier_set"])
    out = tmp_path / "figures"
    assert visualize(["empirical", "--run", str(folder), "--out", str(out), "--points", "3", "--dims", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fitter.densifier is a set, not a mapping" in err[0], err
    assert not out.exists()


def test_a_checkpoint_of_another_triangle_count_names_the_value_and_both_shapes(finished, tmp_path, capsys):
    folder = _copy(finished, tmp_path / "run")
    assert main(["--resume", str(folder), "--set", "triangles.count=41"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: {folder / 'checkpoint.pt'}: checkpoint does not fit this run's config: "
                    "fitter.triangles.positions has shape (1, 40, 3, 2), this run needs (1, 41, 3, 2)")


def test_conform_checks_types_shapes_dtypes_keys_and_finiteness():
    template = {"a": torch.zeros(2, 3), "n": 1, "x": 0.5, "s": "", "l": [0.0, 0.0], "f": number(minimum=0)}
    good = {"a": torch.ones(2, 3), "n": 4, "x": 2, "s": "text", "l": [1.0, 2.5], "f": 3.0}
    conform(good, template)
    bad = [({**good, "a": torch.ones(2, 4)}, "a has shape (2, 4), this run needs (2, 3)", False),
           ({**good, "a": torch.ones(2, 3, dtype=torch.float64)}, "a is a torch.float64 tensor, not a torch.float32 "
            "tensor", True),
           ({**good, "a": torch.full((2, 3), float("nan"))}, "a holds NaN or infinite values", True),
           ({**good, "n": 1.5}, "n is a float, not an integer", True),
           ({**good, "n": True}, "n is a bool, not an integer", True),
           ({**good, "x": float("inf")}, "x is inf, not a finite number", True),
           ({**good, "s": 3}, "s is an int, not a string", True),
           ({**good, "l": [1.0]}, "l has 1 entries, this run has 2", False),
           ({**good, "l": (1.0, 2.0)}, "l is a tuple, not a list", True),
           ({**good, "f": -1}, "f is -1, below 0", True),
           ({k: v for k, v in good.items() if k != "s"}, "<top level> has other keys than this run's (missing: 's')",
            False),
           ({**good, "extra": 1}, "<top level> has other keys than this run's (unknown: 'extra')", False)]
    for value, message, damaged in bad:
        with pytest.raises(Mismatch) as caught:
            conform(value, template)
        assert str(caught.value) == message and caught.value.damaged is damaged
    tensor(torch.uint8, (None, 4))(torch.zeros(7, 4, dtype=torch.uint8), "frames")


def test_long_messages_are_cut_between_words():
    text = " ".join(f"word{i}" for i in range(100))
    cut = shorten(text, 60)
    assert len(cut) <= 60 and cut.endswith(" ...") and all(w.startswith("word") for w in cut[:-4].split())
    assert shorten("short\n  message") == "short message"


def test_a_run_has_a_checkpoint_from_its_start_and_resumes_from_it_as_if_never_stopped(image_path, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["--image", str(image_path), "--out", str(whole), *QUICK]) == 0
    cfg = tai.load_config(whole / "config.yaml")
    tai.Run(cfg, killed)  # set up, then "killed" before the first step: the folder must be resumable
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert state["fitter"]["step"] == 0
    assert main(["--resume", str(killed)]) == 0
    assert (killed / "triangles.json").read_text() == (whole / "triangles.json").read_text()


def test_a_folder_left_without_a_checkpoint_resumes_from_step_0(image_path, tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(folder), *QUICK, "--set", "optim.iterations=3"]) == 0
    for name in list(_files(folder)):
        if name not in ("config.yaml", "metrics.jsonl"):  # what a kill -9 within the first second left
            (folder / name).unlink()
    (folder / "notes.txt").write_text("mine")  # not a file a run writes: it stays
    capsys.readouterr()
    assert main(["--resume", str(folder)]) == 0
    assert "starting it again from step 0" in capsys.readouterr().out
    assert json.loads((folder / "summary.json").read_text())["iterations"] == 3
    assert (folder / "notes.txt").read_text() == "mine"
    steps = [json.loads(r)["step"] for r in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(0) == 1  # the killed run's lines went with it
    assert not list(tmp_path.glob("run_*"))  # the same folder, not run_1


def test_resume_removes_the_temporaries_of_an_interrupted_write(finished, tmp_path):
    folder = _copy(finished, tmp_path / "run")
    stale = [folder / ".checkpoint.pt.k3j9x_2a.tmp", folder / ".summary.json.abcdefgh.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    (folder / ".notes.tmp").write_text("mine")  # not a name write_atomic makes: kept
    assert main(["--resume", str(folder)]) == 0
    assert not any(path.exists() for path in stale) and (folder / ".notes.tmp").exists()


def test_a_resume_with_nothing_to_do_leaves_config_yaml_as_it_was(finished, tmp_path):
    folder = _copy(finished, tmp_path / "run")
    before = (folder / "config.yaml").read_bytes()
    assert main(["--resume", str(folder)]) == 0
    assert (folder / "config.yaml").read_bytes() == before
    assert main(["--resume", str(folder), "--set", "optim.iterations=14"]) == 0  # a change is written
    assert "iterations: 14" in (folder / "config.yaml").read_text()


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    found = {model}
    for field in model.model_fields.values():
        for arg in (field.annotation, *typing.get_args(field.annotation),
                    *(a for t in typing.get_args(field.annotation) for a in typing.get_args(t))):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found |= _models(arg)
    return found


def test_float_settings_default_to_floats_so_a_config_dumps_the_same_after_a_reload():
    for model in _models(Config) | _models(ModelRunConfig):
        for name, field in model.model_fields.items():
            if float in (field.annotation, *typing.get_args(field.annotation)):
                assert not isinstance(field.default, int), f"{model.__name__}.{name} = {field.default!r}"
    cfg = tai.load_config(None, ["schedules={render.sigma: {type: linear, start_value: 1, end_value: 0.3, "
                                 "end_step: 10}}"])
    assert tai.load_config(None, values=cfg.dump()).to_yaml() == cfg.to_yaml()
