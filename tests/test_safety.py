"""Bad and hostile input: checkpoints that must not run code, impossible sizes, paths that are
files, non-finite numbers, file permissions, program names and the start banner."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triangulate_ai.cli import main
from triangulate_ai.config import load_config
from triangulate_ai.errors import UserError
from triangulate_ai.memory import check_memory, estimate_bytes

from .conftest import QUICK

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


class _Marker:
    """Unpickling this calls os.system: what a malicious checkpoint.pt would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from PIL import Image

    from .conftest import smooth_image

    tmp = tmp_path_factory.mktemp("safety")
    Image.fromarray(smooth_image()).save(tmp / "t.png")
    out = tmp / "run"
    assert main(["--image", str(tmp / "t.png"), "--out", str(out), *QUICK, "--set", "optim.iterations=6"]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hostile(kind: str, marker: Path, good: bytes) -> bytes:
    buffer = io.BytesIO()
    if kind == "malicious":
        torch.save({"format": "triangulate_ai.checkpoint/2", "fitter": _Marker(marker)}, buffer)
    elif kind == "foreign":
        torch.save({"state_dict": {"weight": torch.zeros(3)}}, buffer)
    elif kind == "old_format":  # a pickled checkpoint of an earlier version, numpy frames inside
        import numpy as np

        torch.save({"fitter": {}, "recorder": {"frames": [np.zeros((2, 2, 3), np.uint8)]}}, buffer)
    elif kind == "truncated":
        return good[: len(good) // 2]
    else:
        return b"not a checkpoint at all"
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["malicious", "foreign", "old_format", "truncated", "garbage"])
def test_resume_never_runs_code_from_a_checkpoint_and_refuses_bad_ones(kind, finished, tmp_path, capsys):
    folder = tmp_path / "shared_run"
    folder.mkdir()
    for name, data in _snapshot(finished).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    marker = tmp_path / "marker"
    (folder / "checkpoint.pt").write_bytes(_hostile(kind, marker, (finished / "checkpoint.pt").read_bytes()))
    before = _snapshot(folder)
    capsys.readouterr()
    assert main(["--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder / 'checkpoint.pt'}:"), err
    assert not marker.exists()
    assert _snapshot(folder) == before  # nothing written, nothing overwritten


def test_checkpoint_loads_with_weights_only(finished):
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    assert state["format"] == "triangulate_ai.checkpoint/2" and state["fitter"]["step"] == 6
    assert state["recorder"]["frames"].dtype == torch.uint8 and state["recorder"]["frames"].ndim == 4


def test_resume_with_a_checkpoint_of_another_config_is_one_line(finished, tmp_path, capsys):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name, data in _snapshot(finished).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    before = _snapshot(folder)
    capsys.readouterr()
    assert main(["--resume", str(folder), "--set", "triangles.count=41"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this run's config" in err[0]
    assert _snapshot(folder) == before


def test_out_that_is_a_file_is_one_line_and_writes_nothing(image_path, tmp_path, capsys):
    existing = tmp_path / "some_existing_file.png"
    existing.write_bytes(b"precious")
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in (existing, existing / "inside"):
        assert main(["--image", str(image_path), "--out", str(out), *QUICK]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(existing) in err[0] and "file" in err[0]
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_impossible_triangle_count_stops_before_allocating(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (48, 48), (200, 30, 30)).save(tmp_path / "small.png")
    out = tmp_path / "run"
    assert main(["--image", str(tmp_path / "small.png"), "--out", str(out), *QUICK,
                 "--set", "triangles.count=100000000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "triangles.count = 100000000" in err[0] and "available" in err[0]
    assert not out.exists()


def test_memory_estimate_grows_with_triangles_and_names_figure_and_limit():
    cfg = load_config(None, ["triangles.count=1000", "render.backend=torch"])
    small = estimate_bytes(cfg, 1, 64, 64)
    big = estimate_bytes(load_config(None, ["triangles.count=2000", "render.backend=torch"]), 1, 64, 64)
    assert big > small > 0
    per_triangle = big - small
    assert estimate_bytes(cfg, 2, 64, 64) - small == pytest.approx(per_triangle, rel=1e-6)  # batch = more triangles
    assert check_memory(cfg, 1, 64, 64, limit=small + 1) == small
    with pytest.raises(UserError, match=r"needs about .* the 1 MiB available"):
        check_memory(cfg, 1, 64, 64, limit=2**20)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize("key", ["optim.lr.positions", "loss.init_log_var", "render.sigma"])
def test_non_finite_config_numbers_are_rejected(key, value, image_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", f"{key}={value}"]) == 2
    assert key in capsys.readouterr().err
    assert not out.exists()


def test_run_files_get_the_users_umask_permissions(image_path, tmp_path):
    previous = os.umask(0o027)
    try:
        import importlib

        import triangulate_ai.io as tio

        importlib.reload(tio)  # FILE_MODE is read from the umask at import
        out = tmp_path / "run"
        code = subprocess.run([sys.executable, str(ROOT / "train.py"), "--image", str(image_path), "--out", str(out),
                               *QUICK, "--set", "optim.iterations=3"], capture_output=True).returncode
        assert code == 0
    finally:
        os.umask(previous)
        importlib.reload(tio)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o640}, modes  # metrics.jsonl and the atomic writes alike


@pytest.mark.parametrize("command, expected", [
    ([str(BIN / "triangulate-fit")], "usage: triangulate-fit"),
    ([str(BIN / "triangulate-ablate")], "usage: triangulate-ablate"),
    ([sys.executable, "-m", "triangulate_ai.experiments.ablate"], "usage: python -m triangulate_ai.experiments.ablate"),
    ([sys.executable, str(ROOT / "train.py")], "usage: train.py"),
    ([sys.executable, str(ROOT / "visualize_geometric_loss.py")], "usage: visualize_geometric_loss.py"),
])
def test_help_names_the_program_as_typed(command, expected):
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith(expected), out.stdout[:200]


def test_banner_says_none_without_modifiers(image_path, tmp_path, capsys):
    assert main(["--image", str(image_path), "--out", str(tmp_path / "run"), *QUICK,
                 "--set", "optim.iterations=1"]) == 0
    out = capsys.readouterr().out
    assert "  modifiers   none\n" in out and "Enabled loss modifiers" not in out


def test_final_losses_are_those_of_the_final_parameters(finished):
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["final_losses"] == summary["final_losses_unmodified"]  # no modifiers: the same numbers
    last = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines() if "loss/l1" in line][-1]
    assert last["step"] == 5 and last["loss/l1"] != summary["final_losses"]["l1"]  # that was before the last update


def test_readme_and_docs_stand_alone():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]:
        text = path.read_text()
        assert "REFERENCES.md" not in text and "../shared" not in text, path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_images_over_pillows_pixel_limit_are_one_line_and_write_nothing(image_path, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 64x64 picture is then over twice the limit
    for images in ([str(image_path)], [str(image_path), str(image_path.parent)]):
        assert main(["--image", *images, "--out", str(tmp_path / "run"), *QUICK]) == 2
        line = _one_error_line(capsys)
        assert "(4,096 pixels) has more pixels than Pillow decodes (2,000" in line and str(image_path) in line
    assert not (tmp_path / "run").exists()


def test_a_pickled_weights_file_is_refused_in_one_line_without_running_it(image_path, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "EVIL.pt"
    torch.save({"features.0.weight": _Marker(marker)}, evil)
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK,
                 "--set", f"loss.terms.vgg={{weights: {json.dumps(str(evil))}}}"]) == 2
    line = _one_error_line(capsys)
    assert "not a state dict of tensors" in line and "weights_only" not in line
    assert not marker.exists() and not out.exists()


def test_a_fully_transparent_image_is_refused(tmp_path, capsys):
    from PIL import Image

    Image.new("RGBA", (32, 32), (200, 10, 10, 0)).save(tmp_path / "clear.png")
    assert main(["--image", str(tmp_path / "clear.png"), "--out", str(tmp_path / "run"), *QUICK]) == 2
    assert "fully transparent" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_run_files_hold_standard_json_even_when_a_number_is_infinite(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 0, 0)).save(tmp_path / "flat.png")  # its flat-mean PSNR is infinite
    out = tmp_path / "run"
    assert main(["--image", str(tmp_path / "flat.png"), "--out", str(out), *QUICK, "--set", "optim.iterations=3"]) == 0
    summary = _strict_json((out / "summary.json").read_text())
    assert summary["psnr_flat_mean"] is None  # infinite: written as null (README, run folder)
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)
    _strict_json((out / "triangles.json").read_text())


@pytest.mark.parametrize("value, message", [("1000", "above 89.0 dB, the highest PSNR an 8-bit drawing of a 64x64"),
                                            ("0", "greater than 0"), ("-3", "greater than 0")])
def test_an_unreachable_target_psnr_is_one_line(value, message, image_path, tmp_path, capsys):
    assert main(["--image", str(image_path), "--out", str(tmp_path / "run"), *QUICK, "--target-psnr", value]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module, args", [
    ("triangulate_ai.cli", ["--seeds", "a"]),
    ("triangulate_ai.model.cli", ["--epochs", "many"]),
    ("triangulate_ai.experiments.ablate", ["--workers", "x", "--config", "a.yaml"]),
    ("triangulate_ai.experiments.visualize", ["analytic", "--low", "low"]),
    ("triangulate_ai.experiments.visualize", ["sideways"]),
])
def test_a_bad_argument_is_one_line_with_argparses_exit_code(module, args, capsys):
    import importlib

    with pytest.raises(SystemExit) as caught:
        importlib.import_module(module).main(args)
    assert caught.value.code == 2
    assert "--help" in _one_error_line(capsys)


def test_ctrl_c_during_start_up_is_one_line_and_leaves_no_half_made_folder(image_path, tmp_path, monkeypatch, capsys):
    import triangulate_ai.api as api

    def interrupted(*args, **kwargs):  # Ctrl-C after the folder and its config.yaml were made
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "RunRecorder", interrupted)
    out = tmp_path / "run"
    try:
        code = main(["--image", str(image_path), "--out", str(out), *QUICK])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C during start-up escaped as a traceback")
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted (Ctrl-C)"]
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch loading")
def test_ctrl_c_while_torch_loads_is_one_line(image_path, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--image", str(image_path), "--out", str(out),
                                *QUICK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a shell's Ctrl-C
    deadline = time.monotonic() + 120  # a guard against hanging, not a speed limit
    maps = Path(f"/proc/{process.pid}/maps")
    while "libtorch" not in maps.read_text():  # torch's libraries are loading: we are in the imports
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_the_landscape_tool_checks_everything_before_making_its_folder(tmp_path, capsys):
    from triangulate_ai.experiments.visualize import main as visualize

    out = tmp_path / "figures"
    assert visualize(["empirical", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no checkpoint.pt" in _one_error_line(capsys)
    assert visualize(["curves", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "not a run folder" in _one_error_line(capsys)
    assert not out.exists()
    existing = tmp_path / "file.png"
    existing.write_bytes(b"precious")
    for target in (existing, existing / "inside", Path("/proc/no/such/place")):
        assert visualize(["analytic", "--out", str(target)]) == 2
        assert f"--out {target}" in _one_error_line(capsys)
    assert existing.read_bytes() == b"precious"
