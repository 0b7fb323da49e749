"""The public Python API: fit an image in one call, or drive the pieces yourself.

    import triangulate_ai as tai
    result = tai.fit("photo.jpg", config="configs/quickstart.yaml", triangles=300)
    result.save_svg("photo.svg")

`Run` is what the command line, the ablation runner and `fit()` all build a fit with: target,
Fitter, evaluator and (optionally) a run folder, checked in that order so that bad input stops
before anything is written. Nothing here prints; callers decide what to show.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from .config import Config, RenderConfig, load_config
from .errors import UserError
from .export import scene_to_dict, svg_from_dict
from .fit import Fitter, NonFiniteLoss, Observer, resolve_device
from .init import resolve_background
from .io import TargetImage, image_from_array, load_image, save_png, write_atomic, write_json
from .memory import check_memory
from .metrics import Evaluator
from .render import Scene, make_renderer
from .run import CHECKPOINT, RunRecorder, load_fitter_state, read_checkpoint
from .triangles import TriangleSet

ImageLike = str | Path | np.ndarray | Image.Image


@dataclass
class FitResult:
    """The outcome of a fit: the triangles, the pictures and the metrics of summary.json."""

    config: Config
    scene: Scene  # final triangles, detached, on the CPU
    height: int
    width: int
    image: np.ndarray  # (H, W, 3) float in [0, 1]: the triangles as an SVG viewer draws them
    soft: np.ndarray  # the soft training render
    target: np.ndarray
    metrics: dict  # what summary.json holds (psnr, ssim, lpips, ... on the hard-edged drawing)
    folder: Path | None  # the run folder, when the fit wrote one

    @property
    def completed(self) -> bool:
        return bool(self.metrics["completed"])

    def to_dict(self) -> dict:
        """The triangles in the documented triangles.json schema."""
        return scene_to_dict(self.scene, self.height, self.width)

    def svg(self) -> str:
        return svg_from_dict(self.to_dict())

    def save_svg(self, path: str | Path) -> Path:
        write_atomic(path, self.svg())
        return Path(path)

    def save_json(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)

    def save_png(self, path: str | Path) -> Path:
        """The hard-edged drawing (what the metrics describe) as PNG."""
        save_png(path, self.image)
        return Path(path)


class FitFailed(RuntimeError):
    """A loss became NaN/Inf. `result` holds the outputs of the last good step, or is None when
    the parameters themselves are no longer finite (then nothing new was written)."""

    def __init__(self, message: str, result: FitResult | None) -> None:
        super().__init__(message)
        self.result = result


def prepare_target(image: TargetImage, cfg: Config, device: torch.device):
    """Composited target (numpy and (1, 3, H, W) tensor), background (1, 3) and mask or None."""
    colour = torch.from_numpy(image.colour).permute(2, 0, 1)[None]
    mask = None if image.alpha is None else torch.from_numpy(image.alpha)[None, None]
    mask_file = cfg.modifiers.mask_ratio.mask_file
    if mask_file is not None:  # white = valid, resized to the target
        grey = load_image(mask_file).composite(np.zeros(3)).mean(axis=-1)
        resized = torch.from_numpy(grey)[None, None]
        mask = torch.nn.functional.interpolate(resized, size=colour.shape[-2:], mode="bilinear", align_corners=False)
    background = resolve_background(cfg.triangles.background, colour, mask)
    target_np = image.composite(background[0].numpy())
    target = torch.from_numpy(np.ascontiguousarray(target_np)).permute(2, 0, 1)[None]
    return target_np, target.to(device), background.to(device), None if mask is None else mask.to(device)


def budget_values(overrides: Iterable[str] | dict, iterations: int | None, time_limit: float | None,
                  target_psnr: float | None) -> dict[str, Any]:
    """Config values of the budget shortcuts. A time limit without a step count (here or among the
    overrides) makes the run time-bound: no step limit."""
    keys = [item.partition("=")[0].strip() for item in overrides] if not isinstance(overrides, dict) else overrides
    values: dict[str, Any] = {}
    if iterations is not None:
        values["optim.iterations"] = iterations
    if time_limit is not None:
        values["optim.time_limit"] = time_limit
        if iterations is None and "optim.iterations" not in keys:
            values["optim.iterations"] = None
    if target_psnr is not None:
        values["optim.target_psnr"] = target_psnr
    return values


def random_network_warnings(cfg: Config) -> list[str]:
    """One line per network that runs on random weights, saying what that means."""
    lines = []
    for key, weights in cfg.network_weights().items():
        if weights == "random":
            what = "the LPIPS metric is not meaningful" if key.startswith("eval.") else \
                "its values are not comparable with pretrained ones"
            lines.append(f"{key}=random: a randomly initialised network; {what} (recorded in summary.json)")
    return lines


def check_folder(folder: Path) -> None:
    """A run folder must be a directory (or not exist yet) under directories."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder}: a file of that name exists; give a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {folder}: {parent} is a file, not a folder")
            break


def make_folder(folder: Path, overwrite: bool) -> tuple[Path, str | None]:
    """A fresh run folder, and a note when another name had to be taken. An existing folder is
    replaced only with `overwrite` and only if it looks like a run folder (it has config.yaml)."""
    check_folder(folder)
    note = None
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            n = 1
            while (candidate := folder.with_name(f"{folder.name}_{n}")).exists():
                n += 1
            note = f"{folder} exists; writing to {candidate} instead (use --overwrite to replace it)"
            folder = candidate
        elif (folder / "config.yaml").is_file():
            shutil.rmtree(folder)
        else:
            raise UserError(f"--overwrite refuses to delete {folder}: it is not a run folder (no config.yaml)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run folder {folder}: {exc.strerror}") from None
    return folder, note


class Run:
    """One fit from a resolved config, optionally recorded in a run folder.

    Everything that can be wrong with the input (image, config values, memory, networks, the
    folder, a checkpoint to resume) is checked before the first file is written."""

    def __init__(self, cfg: Config, folder: Path | None = None, *, resume: bool = False, overwrite: bool = False,
                 image: TargetImage | None = None, on_warning: Callable[[dict], None] = lambda warning: None) -> None:
        self.cfg = cfg
        if image is None:
            if cfg.image.path is None:
                raise UserError("no image given: pass --image PATH or set image.path in the config")
            image = load_image(cfg.image.path, cfg.image.max_size)
        self.image = image
        if folder is not None and not resume:
            check_folder(folder)
        self.device = resolve_device(cfg.device)
        width, height = image.size
        check_memory(cfg, batch=1, height=height, width=width, device=self.device)
        torch.manual_seed(cfg.seed)
        target_np, target, background, mask = prepare_target(image, cfg, self.device)
        self.fitter = Fitter(cfg, target, background, mask)  # loads pretrained networks: may stop here
        self.evaluator = Evaluator(target_np, cfg.eval.lpips, self.device)
        state = read_checkpoint(folder / CHECKPOINT, self.device) if resume else None
        if state is not None:
            load_fitter_state(self.fitter, state, folder / CHECKPOINT)
        self.note = None
        if folder is not None and not resume:
            folder, self.note = make_folder(folder, overwrite)
        if folder is not None:  # on resume too: --set may have changed values (e.g. more iterations)
            write_atomic(folder / "config.yaml", cfg.to_yaml())
        self.folder = folder
        self.recorder = RunRecorder(folder, self.fitter, self.evaluator, on_warning=on_warning)
        if state is not None:
            self.recorder.restore(self.fitter, state)

    def execute(self, observers: Iterable[Observer] = (), should_stop: Callable[[], bool] = lambda: False) -> FitResult:
        """Run to the end (or until `should_stop`), then write the outputs. Raises FitFailed on a
        NaN/Inf loss, after writing the last good step's outputs when the parameters allow it."""
        error = None

        def stop() -> str | None:
            if should_stop():
                return "interrupted"
            return "target_psnr" if self.recorder.target_reached(self.fitter) else None

        try:
            completed = self.fitter.run([self.recorder, *observers], stop) != "interrupted"
        except NonFiniteLoss as exc:
            completed, error = False, str(exc)
            self.fitter.stop_reason = "error"
            if not self.fitter.parameters_finite():  # a bad update already went in
                raise FitFailed(error, None) from None
        summary = self.recorder.finish(self.fitter, completed, self.device, error)
        result = self._result(summary)
        if error is not None:
            raise FitFailed(error, result)
        return result

    def _result(self, summary: dict) -> FitResult:
        fitter = self.fitter
        scene = Scene(*(t.detach().cpu() for t in fitter.triangles.scene()))
        return FitResult(config=self.cfg, scene=scene, height=fitter.height, width=fitter.width,
                         image=self.recorder.final_drawing, soft=self.recorder.final_soft,
                         target=self.evaluator.target, metrics=summary, folder=self.folder)


SHORTCUTS = {"triangles": "triangles.count", "seed": "seed", "device": "device"}


def fit(image: ImageLike, config: str | Path | Config | None = None, *, out: str | Path | None = None,
        overwrite: bool = False, overrides: dict[str, Any] | None = None, progress: bool = False,
        triangles: int | None = None, iterations: int | None = None, time_limit: float | None = None,
        target_psnr: float | None = None, seed: int | None = None, device: str | None = None) -> FitResult:
    """Fit `image` (a path, an (H, W, 3|4) array or a PIL image) with triangles.

    `config` is a YAML file, a Config, or None for the defaults of configs/base.yaml;
    `overrides` maps dotted config keys to values (like --set), and the keyword shortcuts set
    the common ones (a `time_limit` without `iterations` bounds the run by time alone). With
    `out`, a run folder is written as by the command line (a new name is taken if it exists,
    unless `overwrite`); without it nothing is written."""
    values = {SHORTCUTS[name]: value for name, value in
              (("triangles", triangles), ("seed", seed), ("device", device)) if value is not None}
    values.update(budget_values(overrides or {}, iterations, time_limit, target_psnr))
    target = None
    if isinstance(image, (str, Path)):
        values["image.path"] = str(image)
    cfg = load_config(config, values={**(overrides or {}), **values}, values_source="fit()")
    if not isinstance(image, (str, Path)):
        target = image_from_array(np.asarray(image), cfg.image.max_size)
    if not progress:
        cfg = load_config(cfg, values={"log.progress_bar": False}, values_source="fit()")
    run = Run(cfg, None if out is None else Path(out), overwrite=overwrite, image=target)
    observers = []
    if progress:
        from .progress import ProgressBar

        observers.append(ProgressBar(cfg, run.fitter))
    try:
        return run.execute(observers)
    finally:
        for observer in observers:
            observer.close()


def render(scene: Scene | TriangleSet, height: int, width: int, *, backend: str = "auto", sigma: float = 0.3,
           return_alpha: bool = False):
    """Draw triangles with the soft renderer: (B, 3, H, W) colour (and (B, 1, H, W) alpha)."""
    if isinstance(scene, TriangleSet):
        scene = scene.scene()
    try:
        renderer_cfg = RenderConfig(backend=backend, sigma=sigma)
    except ValueError as exc:
        err = exc.errors()[0]
        raise UserError(f"render: {err['loc'][0]} = {err['input']!r}: {err['msg']}") from None
    return make_renderer(renderer_cfg, scene.vertices.device)(scene, height, width, return_alpha)


def load_triangles(path: str | Path) -> Scene:
    """A Scene (B = 1) from a triangles.json file, e.g. to render it at another size."""
    try:
        data = json.loads(Path(path).read_text())
        verts = torch.tensor([t["vertices"] for t in data["triangles"]], dtype=torch.float32).reshape(-1, 3, 2)
        colors = torch.tensor([t["color"] for t in data["triangles"]], dtype=torch.float32).reshape(-1, 3)
        opacity = torch.tensor([t["opacity"] for t in data["triangles"]], dtype=torch.float32)
        scale = torch.tensor([data["width"], data["height"]], dtype=torch.float32)
        background = torch.tensor(data["background"], dtype=torch.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a triangles.json file ({exc})") from None
    return Scene((verts / scale)[None], colors[None], opacity[None], background[None])
