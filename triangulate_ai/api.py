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
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import yaml
from PIL import Image

from .config import Config, RenderConfig, load_config, safe_load
from .errors import UserError
from .loop import Fitter, Observer, resolve_device
from .init import resolve_background
from .io import TargetImage, clear_outputs, image_from_array, load_image, remove_temporaries, write_atomic
from .memory import check_memory
from .metrics import Evaluator
from .model.predict import load_model, predicted_triangles
from .raster import Scene, make_renderer
from .result import Triangulation
from .run import OUTPUTS, RunRecorder, check_recorder_state, load_scene_states, read_checkpoint
from .runfolder import CHECKPOINT
from .triangles import TriangleSet

ImageLike = str | Path | np.ndarray | Image.Image


@dataclass
class FitResult(Triangulation):
    """The outcome of a fit: the triangles, the pictures and the metrics of summary.json."""

    config: Config
    soft: np.ndarray  # the soft training render

    @property
    def completed(self) -> bool:
        return bool(self.metrics["completed"])


class FitFailed(RuntimeError):
    """A loss (or the parameters) became NaN/Inf. `result` holds the outputs of the last good
    step, which were written (parameters are never updated with a non-finite step)."""

    def __init__(self, message: str, result: FitResult) -> None:
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


def model_start(cfg: Config, target: torch.Tensor, background: torch.Tensor) -> TriangleSet | None:
    """The start of a fit with triangles.init: model (the model's prediction for each target),
    else None (the Fitter's initialiser)."""
    return predicted_triangles(cfg.triangles, target, background) if cfg.triangles.init == "model" else None


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


def check_target_psnr(target: float | None, width: int, height: int) -> None:
    """A target PSNR an 8-bit drawing of a `width` x `height` image can reach: at most that of one
    colour value off by one level (above it only an exact copy scores, at infinity)."""
    highest = 10 * math.log10(255**2 * 3 * width * height)
    if target is not None and target > highest:
        raise UserError(f"optim.target_psnr = {target:g} dB: above {highest:.1f} dB, the highest PSNR an 8-bit "
                        f"drawing of a {width}x{height} image can score short of an exact copy")


def holds_config(path: Path, cfg: Config) -> bool:
    """Whether the config.yaml at `path` already says what `cfg` says (values, not formatting)."""
    try:
        return safe_load(path.read_text()) == cfg.dump()
    except (OSError, yaml.YAMLError):
        return False


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


@dataclass
class Job:
    """One scene of a batch: its own config (image and seed; everything else is shared), its run
    folder (or None), whether it resumes from that folder, and its image if already loaded."""

    cfg: Config
    folder: Path | None = None
    resume: bool = False
    image: TargetImage | None = None


PER_SCENE_KEYS = ("seed", "image")  # what the scenes of one batch may differ in


def shared_settings(cfg: Config) -> dict:
    """A config without what may differ between the scenes of a batch."""
    data = cfg.dump()
    for key in PER_SCENE_KEYS:
        data.pop(key)
    return data


class Run:
    """A fit of one scene, or of a batch of scenes sharing one loop, each recorded in its own run
    folder (or kept in memory) exactly as a fit of that scene alone would be.

    Everything that can be wrong with the input (images, config values, memory, networks, the
    folders, checkpoints to resume) is checked before the first file is written.

    Args:
        cfg: the fit's Config (its image.path, unless `image` is given).
        folder: the run folder, or None to keep everything in memory.
        resume: continue the run in `folder` from its checkpoint.
        overwrite: replace an existing run folder instead of taking a free name.
        image: an already loaded TargetImage.
        on_warning: called with each warning sign as it is raised.

    Example:
        >>> from triangulate_ai import load_config
        >>> run = Run(load_config("configs/quickstart.yaml", values={"image.path": "examples/kodim23.png",
        ...                                                         "triangles.count": 10}))
        >>> step = run.fitter.train_step()
        >>> sorted(step.losses), run.fitter.step
        (['l2'], 1)
        >>> run.execute().metrics["iterations"] == run.cfg.optim.iterations
        True
    """

    def __init__(self, cfg: Config, folder: Path | None = None, *, resume: bool = False, overwrite: bool = False,
                 image: TargetImage | None = None, on_warning: Callable[[dict], None] = lambda warning: None) -> None:
        self._start([Job(cfg, folder, resume, image)], overwrite, on_warning)

    @classmethod
    def batch(cls, jobs: list[Job], *, overwrite: bool = False,
              on_warning: Callable[[int, dict], None] = lambda scene, warning: None) -> "Run":
        """B scenes in one loop. They must share every setting but `seed` and `image`, have
        images of one size, and either all start fresh or all resume (from the same step)."""
        run = cls.__new__(cls)
        run._start(jobs, overwrite, on_warning, per_scene_warnings=True)
        return run

    def _start(self, jobs: list[Job], overwrite: bool, on_warning, per_scene_warnings: bool = False) -> None:
        if not jobs:
            raise UserError("nothing to fit: no images")
        first = jobs[0].cfg
        for job in jobs[1:]:
            if shared_settings(job.cfg) != shared_settings(first):
                raise UserError("the scenes of one batch must share every setting but seed and image")
        if len({job.resume for job in jobs}) > 1:
            raise UserError("a batch either starts fresh or resumes, not both")
        # a resumed folder without a checkpoint (its run was killed within its first moments) starts again
        restart = [job.resume and not (job.folder / CHECKPOINT).is_file() for job in jobs]
        if len(set(restart)) > 1:
            raise UserError("a batch resumes from checkpoints or starts folders without one again, not both")
        self.cfg = first
        self.jobs = jobs
        self.images = [job.image or self._load(job.cfg) for job in jobs]
        sizes = {image.size for image in self.images}
        if len(sizes) > 1:
            raise UserError(f"the images of one batch must have one size, got {sorted(sizes)}")
        for job in jobs:
            if job.folder is not None and not job.resume:
                check_folder(job.folder)
        self.device = resolve_device(first.device)
        width, height = self.images[0].size
        check_target_psnr(first.optim.target_psnr, width, height)
        check_memory(first, batch=len(jobs), height=height, width=width, device=self.device)
        torch.manual_seed(first.seed)
        prepared = [prepare_target(image, job.cfg, self.device) for image, job in zip(self.images, jobs)]
        masks = [m for _, _, _, m in prepared]
        mask = None if all(m is None for m in masks) else torch.cat(
            [torch.ones_like(prepared[0][1][:, :1]) if m is None else m for m in masks])
        target, background = torch.cat([p[1] for p in prepared]), torch.cat([p[2] for p in prepared])
        self.fitter = Fitter(first, target, background, mask, seeds=[job.cfg.seed for job in jobs],
                             start=model_start(first, target, background))  # loads networks: may stop here
        self.evaluators = [Evaluator(p[0], first.eval.lpips, self.device) for p in prepared]
        states = [read_checkpoint(job.folder / CHECKPOINT, self.device) for job in jobs] \
            if jobs[0].resume and not restart[0] else None
        if states is not None:
            for job, state in zip(jobs, states):
                check_recorder_state(state, job.folder / CHECKPOINT, height, width)
            load_scene_states(self.fitter, states, [job.folder / CHECKPOINT for job in jobs])
        self.notes, self.folders = [], []
        created: list[Path] = []
        try:
            self._open_folders(jobs, overwrite, created)
            self.recorders = [
                RunRecorder(folder, self.fitter, evaluator, scene=b, cfg=job.cfg,
                            on_warning=(lambda w, b=b: on_warning(b, w)) if per_scene_warnings else on_warning)
                for b, (folder, evaluator, job) in enumerate(zip(self.folders, self.evaluators, jobs))]
            for recorder, state in zip(self.recorders, states or [None] * len(jobs)):
                if state is not None:
                    recorder.restore(self.fitter, state)
                else:  # a run killed before its first periodic checkpoint can still be resumed
                    recorder.save_checkpoint(self.fitter)
        except BaseException:  # Ctrl-C or a failure before the first step: no half-made run folder stays
            for folder in created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self.results: list[FitResult | None] = [None] * len(jobs)

    def _open_folders(self, jobs: list[Job], overwrite: bool, created: list[Path]) -> None:
        """Each job's run folder: made (and listed in `created`) for a fresh run, cleared of an
        interrupted write's temporaries for a resumed one, of a run's outputs (nothing else) for
        one resumed without a checkpoint; its config.yaml written unless it already holds this
        config (a resume changes it only through --set)."""
        for job in jobs:
            folder = job.folder
            if folder is not None and not job.resume:
                folder, note = make_folder(folder, overwrite)
                created.append(folder)
                if note:
                    self.notes.append(note)
            elif folder is not None and (folder / CHECKPOINT).is_file():
                remove_temporaries(folder)
            elif folder is not None:  # resumed without a checkpoint: again from step 0, in its own folder
                clear_outputs(folder, OUTPUTS)
            if folder is not None and not (job.resume and holds_config(folder / "config.yaml", job.cfg)):
                write_atomic(folder / "config.yaml", job.cfg.to_yaml())
            self.folders.append(folder)

    @staticmethod
    def _load(cfg: Config) -> TargetImage:
        if cfg.image.path is None:
            raise UserError("no image given: pass --image PATH or set image.path in the config")
        return load_image(cfg.image.path, cfg.image.max_size)

    # one-scene conveniences
    @property
    def image(self) -> TargetImage:
        return self.images[0]

    @property
    def folder(self) -> Path | None:
        return self.folders[0]

    @property
    def note(self) -> str | None:
        return self.notes[0] if self.notes else None

    def execute_all(self, observers: Iterable[Observer] = (), should_stop: Callable[[], bool] = lambda: False
                    ) -> list[FitResult]:
        """Run until the budget ends, every scene has stopped, or `should_stop`; each scene's
        outputs are written when it stops (a NaN, its target PSNR) or at the end."""
        def stop() -> str | None:
            if should_stop():
                return "interrupted"
            for b, recorder in enumerate(self.recorders):
                if self.fitter.active[b] and recorder.target_reached(self.fitter):
                    self.fitter.finish_scene(b, "target_psnr")
                    self._finish(b, completed=True)
            return None

        class _Stopped:
            def on_step(inner, fitter: Fitter, result) -> None:  # noqa: N805 - the run is `self`
                for b in result.failed:
                    self._finish(b, completed=False)

        reason = self.fitter.run([*self.recorders, _Stopped(), *observers], stop)
        for b in range(len(self.jobs)):
            if self.results[b] is None:
                self._finish(b, completed=reason != "interrupted")
        return list(self.results)

    def execute(self, observers: Iterable[Observer] = (), should_stop: Callable[[], bool] = lambda: False) -> FitResult:
        """One scene: its result; FitFailed (with the last good step's outputs written) when one
        of its losses became NaN/Inf."""
        result = self.execute_all(observers, should_stop)[0]
        if result.metrics["error"] is not None:
            raise FitFailed(result.metrics["error"], result)
        return result

    def _finish(self, b: int, completed: bool) -> None:
        fitter, recorder = self.fitter, self.recorders[b]
        summary = recorder.finish(fitter, completed and fitter.errors[b] is None, self.device)
        scene = Scene(*(t[b:b + 1].detach().cpu() for t in fitter.triangles.scene()))
        self.results[b] = FitResult(config=self.jobs[b].cfg, scene=scene, height=fitter.height, width=fitter.width,
                                    image=recorder.final_drawing, soft=recorder.final_soft,
                                    target=self.evaluators[b].target, metrics=summary, folder=self.folders[b])


SHORTCUTS = {"triangles": "triangles.count", "seed": "seed", "device": "device"}


def fit(image: ImageLike, config: str | Path | Config | None = None, *, out: str | Path | None = None,
        overwrite: bool = False, overrides: dict[str, Any] | None = None, progress: bool = False,
        triangles: int | None = None, iterations: int | None = None, time_limit: float | None = None,
        target_psnr: float | None = None, seed: int | None = None, device: str | None = None,
        init: str | None = None, model: str | None = None) -> FitResult:
    """Fit an image with triangles, as `train.py` does.

    Args:
        image: a path, an (H, W, 3|4) array (uint8, uint16 or floats in [0, 1]) or a PIL image.
        config: a YAML file, a Config, or None for the defaults of configs/base.yaml.
        out: a run folder to write (a free name is taken if it exists, unless `overwrite`);
            None writes nothing.
        overrides: dotted config keys to values, like --set.
        progress: show a progress bar.
        triangles, iterations, time_limit, target_psnr, seed, device: shortcuts for the config
            keys of those names (a `time_limit` without `iterations` bounds the run by time alone).
        init: the initialiser; "model" starts from a trained model's prediction, the shipped
            "default" unless `model` or the config names another, with the model's triangle count
            unless `triangles` or `overrides` give one.
        model: a shipped model's name, a model checkpoint or a training folder (implies init="model").

    Returns:
        A FitResult: `scene`, `image` (the hard-edged drawing the metrics describe), `soft`,
        `target`, `metrics` (what summary.json holds), `folder`, `to_dict()`, `svg()`, `save_*()`.

    Raises:
        UserError: bad input (one line naming it); FitFailed: a loss became NaN (its `result` holds
        the last good step).

    Example:
        >>> result = fit("examples/kodim23.png", triangles=20, iterations=5, overrides={"eval.lpips": None})
        >>> result.metrics["iterations"], len(result.to_dict()["triangles"])
        (5, 20)
        >>> result.metrics["psnr"] > result.metrics["psnr_flat_mean"]
        True
    """
    if model is not None and init not in (None, "model"):
        raise UserError(f"fit(): model={model!r} is a starting point: it goes with init='model', not {init!r}")
    values = {SHORTCUTS[name]: value for name, value in
              (("triangles", triangles), ("seed", seed), ("device", device)) if value is not None}
    values.update(budget_values(overrides or {}, iterations, time_limit, target_psnr))
    target = None
    if isinstance(image, (str, Path)):
        values["image.path"] = str(image)
    cfg = load_config(config, values={**(overrides or {}), **values}, values_source="fit()")
    if init == "model" or model is not None:  # the model named, else the config's, else the shipped one
        chosen = model or cfg.triangles.model or "default"
        start = {"triangles.init": "model", "triangles.model": chosen}
        if triangles is None and "triangles.count" not in (overrides or {}):  # the model's own count, as the CLI
            start["triangles.count"] = load_model(chosen)[0].count
        cfg = load_config(cfg, values=start, values_source="fit()")
    elif init is not None:
        cfg = load_config(cfg, values={"triangles.init": init}, values_source="fit()")
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
    """Draw triangles with the soft renderer, at any size.

    Args:
        scene: a Scene or a TriangleSet (B scenes; vertices in canvas units, so any size works).
        height, width: the picture's size in pixels.
        backend: "auto" (the fused kernel on CPU), "torch", "fused", "reference", "triton" or "nvdiffrast".
        sigma: the edges' softness in pixels.
        return_alpha: also return the accumulated alpha.

    Returns:
        (B, 3, H, W) colour in [0, 1], and (B, 1, H, W) alpha when asked.

    Example:
        >>> import torch
        >>> one = Scene(torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]]), torch.tensor([[[1.0, 0.0, 0.0]]]),
        ...             torch.ones(1, 1), torch.zeros(1, 3))
        >>> image = render(one, 8, 8)
        >>> image.shape, round(float(image[0, 0, 1, 1]), 3), round(float(image[0, 0, 6, 6]), 3)
        (torch.Size([1, 3, 8, 8]), 0.993, 0.0)

        Pixel (1, 1)'s centre lies 1.5 px inside the left edge: sigmoid(1.5 / 0.3) = 0.993.
    """
    if isinstance(scene, TriangleSet):
        scene = scene.scene()
    try:
        renderer_cfg = RenderConfig(backend=backend, sigma=sigma)
    except ValueError as exc:
        err = exc.errors()[0]
        raise UserError(f"render: {err['loc'][0]} = {err['input']!r}: {err['msg']}") from None
    return make_renderer(renderer_cfg, scene.vertices.device)(scene, height, width, return_alpha)


def load_triangles(path: str | Path) -> Scene:
    """Read an exported triangles.json back, e.g. to render it at another size.

    Args:
        path: a triangles.json file (the documented schema, version 1).

    Returns:
        A Scene with B = 1, in canvas units.

    Raises:
        UserError: the file is missing or not a triangles.json.

    Example:
        >>> result = fit("examples/kodim23.png", triangles=10, iterations=2, overrides={"eval.lpips": None})
        >>> import tempfile, pathlib
        >>> path = result.save_json(pathlib.Path(tempfile.mkdtemp()) / "triangles.json")
        >>> load_triangles(path).vertices.shape
        torch.Size([1, 10, 3, 2])
    """
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
