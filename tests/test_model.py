"""The amortized model on tiny images (32-px crops seen at 16 px, 8 triangles, a 4-channel CNN): training lowers
the loss and checkpoints every epoch, resume is exact, the head's triangles are always valid,
`train.py --init-from-model` starts a fit from a prediction, bad input is one line. Random
weights only."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import triangulate_ai as tai
from triangulate_ai.cli import main as fit_main
from triangulate_ai.errors import UserError
from triangulate_ai.model import cli as model_cli
from triangulate_ai.model.config import HeadConfig, load_model_config
from triangulate_ai.model.data import load_sources, split_sources
from triangulate_ai.model.encoder import build_encoder
from triangulate_ai.model.head import TriangleHead
from triangulate_ai.model.predict import load_model
from triangulate_ai.model.record import ModelRecorder
from triangulate_ai.model.trainer import ModelTrainer

from .conftest import smooth_image
from .test_safety import _Marker

TINY = ["data.crop=32", "data.max_size=0", "data.crops_per_image=4", "data.val_crops=2", "train.batch_size=4",
        "triangles.count=8", "model.input_size=16", "model.encoder.width=4", "model.head.hidden=16",
        "model.head.embedding=4", "eval.lpips.weights=random", "log.every=1", "log.progress_bar=false",
        "train.lr=0.003"]


def sets(*values: str) -> list[str]:
    return [arg for value in (*TINY, *values) for arg in ("--set", value)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three distinct 48x48 pictures: two train, one validates."""
    folder = tmp_path_factory.mktemp("model_data") / "images"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(smooth_image(48, 48, seed=seed)).save(folder / f"img{seed}.png")
    return folder


def train(data: Path, out: Path, *values: str, epochs: int = 2) -> int:
    return model_cli.main(["--data", str(data), "--out", str(out), "--epochs", str(epochs), *sets(*values)])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model_run") / "run"
    saved = []
    original = ModelRecorder.save_checkpoint
    ModelRecorder.save_checkpoint = lambda self, trainer: (saved.append(trainer.step), original(self, trainer))[1]
    try:
        assert train(data, out, "schedules={train.lr: {type: linear, unit: epochs, start_value: 0.003, "
                     "end_value: 0.001, end_step: 2}}", epochs=3) == 0
    finally:
        ModelRecorder.save_checkpoint = original
    (out / "saved_at").write_text(json.dumps(saved))
    return out


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_training_checkpoints_every_epoch_and_validates_on_the_hard_edged_drawing(trained):
    steps = [r for r in records(trained) if "total" in r]
    evals = [r for r in records(trained) if "eval/psnr" in r]
    assert [r["step"] for r in steps] == list(range(6))  # 2 training pictures x 4 crops / batch 4 = 2 steps/epoch
    assert json.loads((trained / "saved_at").read_text()) == [2, 4, 6]
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    for key in ("eval/psnr", "eval/ssim", "eval/lpips", "eval/psnr_flat_mean", "eval/collapsed_share"):
        assert math.isfinite(evals[-1][key])
    lr = [r["lr"] for r in steps]  # linear over 2 epochs of 2 steps, then held
    assert lr == pytest.approx([0.003, 0.0025, 0.002, 0.0015, 0.001, 0.001])
    state = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert state["format"] == "triangulate_ai.model/1" and state["trainer"]["step"] == 6
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["completed"] and summary["epochs"] == 3 and len(summary["history"]) == 3
    assert summary["perceptual_weights"] == "random" and summary["lpips_meaningful"] is False
    assert len(summary["split"]["val"]) == 1 and len(summary["split"]["train"]) == 2
    assert (trained / "val.png").is_file() and list((trained / "tensorboard").iterdir())


def test_few_steps_on_a_batch_lower_the_loss(data):
    cfg = load_model_config(None, [*TINY, f"data.images=[{json.dumps(str(data))}]"])
    trainer = ModelTrainer(cfg, torch.device("cpu"), steps_per_epoch=10)
    images = torch.stack([s.image[:, :32, :32] for s in load_sources(cfg.data)])
    first = trainer.train_step(images).total
    for _ in range(25):
        last = trainer.train_step(images).total
    assert last < 0.8 * first


def test_resume_after_an_interruption_mid_epoch_gives_the_same_weights(data, tmp_path, monkeypatch):
    assert train(data, tmp_path / "whole", epochs=2) == 0
    calls = []

    class StopAfterThree(model_cli.StopRequest):
        def requested(self) -> bool:  # asked before each step: steps 0, 1, 2 run, then stop
            calls.append(1)
            return len(calls) > 3

    monkeypatch.setattr(model_cli, "StopRequest", StopAfterThree)
    assert train(data, tmp_path / "parts", epochs=2) == model_cli.EXIT_INTERRUPTED
    monkeypatch.undo()
    assert torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["trainer"]["step"] == 3
    assert model_cli.main(["--resume", str(tmp_path / "parts")]) == 0
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["trainer"]
    parts = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=True)["trainer"]
    assert whole["step"] == parts["step"] == 4
    for key, value in whole["model"].items():
        assert torch.equal(value, parts["model"][key]), key
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in records(tmp_path / "whole")]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in records(tmp_path / "parts")]


@pytest.mark.parametrize("scale", [0.0, 1.0, 100.0])
def test_head_always_emits_valid_in_bounds_triangles(scale):
    cfg = HeadConfig(hidden=16, embedding=4, min_size=0.05, max_size=0.45)
    head = TriangleHead([3, 8, 16], count=50, cfg=cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in head.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
    maps = [torch.randn(4, c, s, s, generator=generator) * 50 for c, s in ((3, 4), (8, 4), (16, 2))]
    scene = head(maps)
    v = scene.vertices
    assert v.shape == (4, 50, 3, 2) and torch.isfinite(v).all() and (v >= 0).all() and (v <= 1).all()
    (a, b, c) = v.unbind(dim=2)
    area = 0.5 * ((b - a)[..., 0] * (c - a)[..., 1] - (b - a)[..., 1] * (c - a)[..., 0]).abs()
    assert area.min() >= 0.9 * cfg.min_size ** 2 * (1 - 1e-4)
    for values in (scene.colors, scene.opacity, scene.background):
        assert torch.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


def test_init_from_model_starts_a_fit_from_the_prediction(trained, data, tmp_path):
    checkpoint = trained / "checkpoint.pt"
    image = data / "img2.png"
    out = tmp_path / "fit"
    assert fit_main(["--image", str(image), "--out", str(out), "--init-from-model", str(trained), "--set",
                     "triangles.count=8", "--iterations", "5", "--set", "eval.lpips.weights=random", "--set",
                     "log.progress_bar=false"]) == 0
    assert json.loads((out / "summary.json").read_text())["iterations"] == 5
    model, _ = load_model(checkpoint)
    cfg = tai.load_config(out / "config.yaml", values={"optim.iterations": 0})
    run = tai.Run(cfg)
    with torch.no_grad():
        predicted = model(run.fitter.target)
    assert torch.allclose(run.fitter.triangles.positions, predicted.vertices)
    assert torch.allclose(run.fitter.triangles.colors, predicted.colors, atol=1e-5)
    with pytest.raises(UserError, match="predicts 8 triangles but triangles.count is 7"):
        tai.Run(tai.load_config(out / "config.yaml", values={"triangles.count": 7}))


def test_a_fit_of_more_triangles_than_the_model_places_the_rest_where_the_error_is(trained, data):
    result = tai.fit(data / "img2.png", init="model", model=str(trained), triangles=14, iterations=30,
                     overrides={"eval.lpips": None, "triangles.progressive.every": 5, "triangles.progressive.until": 0.5})
    cfg = tai.load_config(None, values={"image.path": str(data / "img2.png"), "triangles.count": 14,
                                        "triangles.init": "model", "triangles.model": str(trained),
                                        "eval.lpips": None})
    start = tai.Run(cfg).fitter
    assert int(start.densifier.parked.sum()) == 6 and start.densifier.progressive is not None  # 8 from the model
    model, _ = load_model(trained)
    with torch.no_grad():
        predicted = model(start.target)
    assert torch.allclose(start.triangles.positions[:, :8], predicted.vertices)
    placed = result.scene.vertices[0]
    assert not bool((placed == -4.0).flatten(1).all(-1).any())  # every parked triangle was brought in


def _bad_checkpoint(kind: str, marker: Path, good: bytes) -> bytes:
    buffer = io.BytesIO()
    if kind == "malicious":
        torch.save({"format": "triangulate_ai.model/1", "trainer": _Marker(marker)}, buffer)
    elif kind == "fit_checkpoint":
        torch.save({"format": "triangulate_ai.checkpoint/2", "fitter": {}, "recorder": {}}, buffer)
    elif kind == "truncated":
        return good[: len(good) // 2]
    else:
        return b"garbage"
    return buffer.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["malicious", "fit_checkpoint", "truncated", "garbage"])
def test_bad_model_checkpoints_are_one_line_and_run_nothing(kind, trained, data, tmp_path, capsys):
    folder = tmp_path / "copy"
    for name, content in _files(trained).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    marker = tmp_path / "marker"
    (folder / "checkpoint.pt").write_bytes(_bad_checkpoint(kind, marker, (trained / "checkpoint.pt").read_bytes()))
    before = _files(folder)
    capsys.readouterr()
    assert model_cli.main(["--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder / 'checkpoint.pt'}:"), err
    out = tmp_path / "fit"
    assert fit_main(["--image", str(data / "img0.png"), "--out", str(out), "--init-from-model", str(folder),
                     "--set", "triangles.count=8", "--set", "eval.lpips.weights=random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder / "checkpoint.pt") in err[0], err
    assert not marker.exists() and not out.exists() and _files(folder) == before


def _rewritten(trained: Path, folder: Path, change) -> Path:
    for name, content in _files(trained).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    change(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (folder / "checkpoint.pt").write_bytes(buffer.getvalue())
    return folder


def _first_weight_nan(state: dict) -> None:
    next(v for v in state["trainer"]["model"].values() if v.is_floating_point()).fill_(float("nan"))


LOADS_BADLY = {  # what a prediction (--init-from-model, load_model) and a resume must refuse, by name
    "model_list": (lambda s: s["trainer"].__setitem__("model", [1, 2]), "trainer.model is a list, not a mapping"),
    "model_text": (lambda s: s["trainer"].__setitem__("model", "weights"), "trainer.model is a str, not a mapping"),
    "nan_weights": (_first_weight_nan, "holds NaN or infinite values"),
    "missing_weight": (lambda s: s["trainer"]["model"].pop("head.embedding"), "missing: 'head.embedding'"),
}


@pytest.mark.parametrize("kind", sorted(LOADS_BADLY))
def test_model_checkpoints_with_wrong_values_are_refused_before_any_folder(kind, trained, data, tmp_path, capsys):
    change, message = LOADS_BADLY[kind]
    folder = _rewritten(trained, tmp_path / "copy", change)
    before = _files(folder)
    out = tmp_path / "fit"
    capsys.readouterr()
    assert fit_main(["--image", str(data / "img0.png"), "--out", str(out), "--init-from-model", str(folder),
                     "--set", "triangles.count=8", "--set", "eval.lpips.weights=random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(folder / "checkpoint.pt") in err[0], err
    assert not out.exists()
    assert model_cli.main(["--resume", str(folder), "--epochs", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert _files(folder) == before


@pytest.mark.parametrize("key, value", [("history", [1, 2]), ("warnings", [{"kind": 3}])])
def test_a_resume_refuses_a_damaged_history_without_touching_the_folder(key, value, trained, tmp_path, capsys):
    folder = _rewritten(trained, tmp_path / "copy", lambda s: s["recorder"].__setitem__(key, value))
    before = _files(folder)
    capsys.readouterr()
    assert model_cli.main(["--resume", str(folder), "--epochs", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"recorder.{key}.0" in err[0], err
    assert _files(folder) == before


@pytest.mark.parametrize("key, value", [("triangles", {"count": 10**6}), ("model", {"input_size": 4096})])
def test_a_checkpoints_config_is_checked_against_memory_before_anything_is_built(key, value, trained, tmp_path,
                                                                                 monkeypatch):
    import triangulate_ai.memory as memory

    folder = _rewritten(trained, tmp_path / "copy", lambda s: s["config"][key].update(value))
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * 2**20)  # a machine of 64 MiB
    with pytest.raises(UserError, match=r"its model \(.*\) needs about .* the 64 MiB available"):
        load_model(folder)


def test_a_checkpoint_asking_for_a_billion_triangles_is_refused_at_once(trained, tmp_path):
    folder = _rewritten(trained, tmp_path / "copy", lambda s: s["config"]["triangles"].update(count=10**9))
    with pytest.raises(UserError, match="1000000000 triangles"):  # estimated on the meta device: nothing allocated
        load_model(folder)
    folder = _rewritten(trained, tmp_path / "copy2", lambda s: s["config"]["triangles"].update(count="many"))
    with pytest.raises(UserError, match=r"\(its config\): triangles.count = 'many'"):
        load_model(folder)


def test_training_is_checked_against_memory_before_the_network_is_built(data, tmp_path, monkeypatch, capsys):
    import triangulate_ai.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 600 * 2**20)
    assert train(data, tmp_path / "run", "triangles.count=100000") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a model of 100000 triangles" in err[0], err
    assert not (tmp_path / "run").exists()


def test_resume_with_nothing_to_do_changes_no_file_but_the_summary(trained, tmp_path):
    folder = _rewritten(trained, tmp_path / "copy", lambda s: None)
    (folder / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"half a checkpoint")  # a kill -9 mid-write
    before = _files(folder)
    assert model_cli.main(["--resume", str(folder)]) == 0
    after = _files(folder)
    assert ".checkpoint.pt.a1b2c3d4.tmp" not in after
    assert after["config.yaml"] == before["config.yaml"] and after["checkpoint.pt"] == before["checkpoint.pt"]


def test_a_training_killed_before_its_first_checkpoint_resumes_from_step_0(data, tmp_path, capsys):
    folder = tmp_path / "run"
    assert train(data, folder, epochs=1) == 0
    for name in list(_files(folder)):
        if name != "config.yaml":
            (folder / name).unlink()
    capsys.readouterr()
    assert model_cli.main(["--resume", str(folder)]) == 0
    assert "starting it again from step 0" in capsys.readouterr().out
    assert json.loads((folder / "summary.json").read_text())["completed"]


@pytest.mark.parametrize("values, message", [
    (["optim.iterations=5"], "'optim' is a setting of per-image fits"),
    (["render.scale=0.5"], "'render.scale' is a setting of per-image fits"),
    (["render.samples=2"], "'render.samples' is a setting of per-image fits"),
    (["train.epoch=3"], "unknown key 'train.epoch'; did you mean 'epochs'?"),
    (["schedules={model.lr: {type: linear, start_value: 1, end_value: 0, end_step: 2}}"],
     "schedules: 'model.lr' cannot be scheduled"),
    (["model.encoder.weights=imagenet"], "small_cnn has no ImageNet weights"),
    (["train.batch_size=64"], "train.batch_size = 64 is more than the 8 training crops"),
])
def test_bad_input_is_one_line_and_writes_nothing(values, message, data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(data, out, *values) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_split_keeps_each_picture_on_one_side_and_validates_it_once(data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in data.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    Image.open(data / "img1.png").resize((64, 64), Image.LANCZOS).save(folder / "img1_big.png")
    cfg = load_model_config(None, [*TINY, f"data.images=[{json.dumps(str(folder))}]"])
    for seed in range(4):
        split = split_sources(load_sources(cfg.data), cfg.data, seed).names()
        train_names, val_names = ({Path(p).stem for p in split[side]} for side in ("train", "val"))
        assert not (train_names & {"img1", "img1_big"} and val_names & {"img1", "img1_big"})
        assert len(val_names) == 1 and "img1_big" not in val_names  # img1 stands for its picture
    only_one = tmp_path / "one"
    only_one.mkdir()
    (only_one / "a.png").write_bytes((data / "img0.png").read_bytes())
    cfg = load_model_config(None, [*TINY, f"data.images=[{json.dumps(str(only_one))}]"])
    with pytest.raises(UserError, match="at least 2 distinct pictures"):
        split_sources(load_sources(cfg.data), cfg.data, 0)


@pytest.mark.parametrize("balancer", ["fixed", "geometric_mean", "uncertainty", "gradnorm"])
def test_balancers_train_the_model_with_perceptual_terms(balancer, data):
    cfg = load_model_config(None, [*TINY, f"data.images=[{json.dumps(str(data))}]", f"loss.type={balancer}",
                                   "loss.terms.vgg={weight: 1.0, layers: [relu1_2], weights: random}"])
    trainer = ModelTrainer(cfg, torch.device("cpu"), steps_per_epoch=2)
    images = torch.stack([s.image[:, :32, :32] for s in load_sources(cfg.data)])
    steps = [trainer.train_step(images) for _ in range(3)]
    assert all(math.isfinite(s.total) for s in steps) and set(steps[-1].weights) >= {"l1", "vgg"}
    if balancer in ("uncertainty", "gradnorm"):  # learnable weights move
        assert steps[-1].weights != steps[0].weights


def test_encoder_weights_random_path_and_imagenet_offline(tmp_path, monkeypatch):
    from triangulate_ai.model.config import EncoderConfig

    net = build_encoder(EncoderConfig(type="resnet18"))
    maps = net(torch.rand(1, 3, 32, 32))
    assert [m.shape[1] for m in maps] == net.channels and maps[-1].shape[-1] == 2
    small = build_encoder(EncoderConfig(width=4))
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in small.state_dict().items()}
    torch.save(state, tmp_path / "enc.pth")
    loaded = build_encoder(EncoderConfig(width=4, weights=str(tmp_path / "enc.pth")))
    assert all(torch.all(p == 0.5) for p in loaded.parameters())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError, match=r"resnet18-f37072fd\.pth is not in .*model\.encoder\.weights=random"):
        build_encoder(EncoderConfig(type="resnet18", weights="imagenet"))


@pytest.mark.parametrize("balancer", ["uncertainty", "gradnorm"])
def test_training_and_validation_steps_name_their_devices(balancer, data):
    from triangulate_ai.metrics import Evaluator

    from .test_devices import tensors_must_name_their_device

    cfg = load_model_config(None, [*TINY, f"data.images=[{json.dumps(str(data))}]", f"loss.type={balancer}",
                                   "loss.terms.vgg={layers: [relu1_2], weights: random}", "regularizer.weight=0.1",
                                   "log.grad_norm_every=1", "triangles.learn_background=false",
                                   "schedules={train.lr: {type: cosine, unit: epochs, start_value: 0.003, "
                                   "end_value: 0.001, end_step: 1}}"])
    trainer = ModelTrainer(cfg, torch.device("cpu"), steps_per_epoch=2)
    images = torch.stack([s.image[:, :32, :32] for s in load_sources(cfg.data)])
    evaluators = [Evaluator(c.permute(1, 2, 0).numpy(), cfg.eval.lpips, torch.device("cpu")) for c in images]
    with tensors_must_name_their_device():
        trainer.train_step(images)
        trainer.train_step(images)
        assert math.isfinite(trainer.validate(images, evaluators).summary()["psnr"])


def test_a_scene_mirrored_back_draws_the_mirrored_drawing():
    from triangulate_ai.model.network import MIRRORS, mirrored, mirrored_scene
    from triangulate_ai.raster.reference import ReferenceRenderer

    g = torch.Generator().manual_seed(0)
    scene = tai.Scene(torch.rand(1, 6, 3, 2, generator=g), torch.rand(1, 6, 3, generator=g),
                      torch.rand(1, 6, generator=g), torch.rand(1, 3, generator=g))
    drawing = ReferenceRenderer(0.5)(scene, 20, 28)
    for view in MIRRORS:
        assert torch.allclose(ReferenceRenderer(0.5)(mirrored_scene(scene, *view), 20, 28), mirrored(drawing, *view),
                              atol=1e-5)


def test_a_model_with_mirrors_keeps_the_mirrored_prediction_whose_solved_drawing_is_closest():
    from triangulate_ai.colours import solve_and_score
    from triangulate_ai.model.network import MIRRORS, SOLVE_SIGMA, TriangleModel, mirrored, mirrored_scene

    with pytest.raises(UserError, match="mirrors > 1 needs solve"):
        load_model_config(None, [*TINY, "model.mirrors=4"])
    cfg = load_model_config(None, [*TINY, "model.solve=24", "model.mirrors=4"])
    torch.manual_seed(0)
    model = TriangleModel(cfg).eval()
    images = torch.rand(3, 3, 36, 48)
    small = torch.nn.functional.interpolate(images, size=(18, 24), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        kept = model(images)
        model.solve, model.mirrors = 0, 1
        candidates = [mirrored_scene(model(mirrored(images, *view)), *view) for view in MIRRORS]
    for b in range(3):
        scored = [solve_and_score(type(c)(*(t[b:b + 1] for t in c)), small[b:b + 1], SOLVE_SIGMA) for c in candidates]
        best = min(range(4), key=lambda i: float(scored[i][1]))
        assert torch.allclose(kept.vertices[b], scored[best][0].vertices[0], atol=1e-6)
        assert torch.allclose(kept.colors[b], scored[best][0].colors[0], atol=1e-6)


def test_a_model_with_solve_keeps_its_configured_background():
    from triangulate_ai.colours import solve_colours
    from triangulate_ai.model.network import SOLVE_SIGMA, TriangleModel

    cfg = load_model_config(None, [*TINY, "model.solve=24", "triangles.learn_background=false"])
    torch.manual_seed(0)
    model = TriangleModel(cfg).eval()
    images = torch.rand(2, 3, 36, 48)
    with torch.no_grad():
        solved = model(images)
        model.solve = 0
        plain = model(images)
    assert torch.equal(solved.background, plain.background)  # the images' mean colour, as configured
    small = torch.nn.functional.interpolate(images, size=(18, 24), mode="bilinear", antialias=True, align_corners=False)
    for b in range(2):
        alone = type(plain)(*(t[b:b + 1] for t in plain))
        one = solve_colours(alone, small[b:b + 1], SOLVE_SIGMA, keep_background=True)
        assert torch.allclose(solved.colors[b:b + 1], one.colors, atol=1e-6)


def test_a_model_with_solve_gives_the_least_squares_colours_in_inference_only():
    from triangulate_ai.colours import solve_colours
    from triangulate_ai.model.network import SOLVE_SIGMA, TriangleModel

    cfg = load_model_config(None, [*TINY, "model.solve=24", "model.refine=3"])
    torch.manual_seed(0)
    model = TriangleModel(cfg)
    images = torch.rand(2, 3, 36, 48)
    model.train()
    trained_colours = model(images).colors
    model.eval()
    with torch.no_grad():
        solved = model(images)
        model.solve = 0
        plain = model(images)
    assert torch.allclose(trained_colours, plain.colors, atol=1e-6)  # training never solves
    small = torch.nn.functional.interpolate(images, size=(18, 24), mode="bilinear", antialias=True, align_corners=False)
    for b in range(2):
        one = solve_colours(type(plain)(*(t[b:b + 1] for t in plain)), small[b:b + 1], SOLVE_SIGMA)
        assert torch.allclose(solved.colors[b:b + 1], one.colors, atol=1e-6)
        assert torch.allclose(solved.background[b:b + 1], one.background, atol=1e-6)
    assert torch.equal(solved.vertices, plain.vertices) and torch.equal(solved.opacity, plain.opacity)
