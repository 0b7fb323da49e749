"""A run folder: metrics.jsonl, checkpoints, the progress GIF, the final exports and summary.

The recorder observes the loop (Fitter) and never changes it. Everything it writes goes through
atomic writes, and its own state (GIF frames, elapsed time, initial metrics) travels in the
checkpoint so that a resumed run ends with the same files as an uninterrupted one.

The exported drawing is evaluated (resvg, PSNR/SSIM/LPIPS) in a background thread, from a copy of
the triangles taken at the step it describes: at 6 megapixels one evaluation takes seconds, and
the loop goes on meanwhile. Records wait in order for their evaluation; the few places that need
a result (optim.target_psnr, a checkpoint, the end) wait for it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image

from . import __version__, checkpoints
from .checkpoints import Mismatch, conform, number, refusal, shorten
from .export import comparison_sheet, gif_bytes, rasterize_svg, scene_to_dict, svg_from_dict
from .config import Config
from .errors import UserError
from .loop import Fitter, StepResult
from .io import json_text, save_png, to_uint8, write_atomic, write_json
from .metrics import Evaluator, flat_mean_psnr, psnr_torch
from .runfolder import CHECKPOINT, METRICS, RunFolder
from .scenes import load_scenes, scene_state, scene_template

OUTPUTS = ("metrics.jsonl", "tensorboard", CHECKPOINT, "final.png", "compare.png", "triangles.json", "triangles.svg",
           "progress.gif", "summary.json")  # what a fit writes into its folder besides config.yaml
CHECKPOINT_FORMAT = "triangulate_ai.checkpoint/2"  # 2: weights_only-loadable (frames as a uint8 tensor)
GIF_MAX_SIDE = 256
BOARD_MAX_SIDE = 1024  # TensorBoard images are area-averaged to this long side (a 6-MP PNG takes ~0.7 s)


def _yield_to_the_loop() -> None:
    """Lower the evaluation thread's priority (Linux nices threads one by one), so that on a
    machine whose cores the loop keeps busy it takes the time the loop leaves."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: the same priority as the loop
        pass


# one worker for every recorder of the process: evaluations run one at a time, beside the loop
EVALUATIONS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluate", initializer=_yield_to_the_loop)


class _Held(NamedTuple):
    """A step's record waiting for its evaluation (or for an earlier record's) before it is emitted."""
    record: dict
    jsonl: bool
    images: dict[str, np.ndarray] | None
    variance: float  # the render's colour variance, for the warning monitor
    evaluation: Future | None  # the export's metrics of this step, if it is an evaluation step


def metric_series(folder: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every numeric series in a run folder's metrics.jsonl, by key: (steps, values)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    path = folder / METRICS
    if not path.is_file():
        return series
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                steps, values = series.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(value)
    return series


def read_checkpoint(path: Path, device: torch.device) -> dict:
    """A fit's checkpoint, loaded without running code from the file; its sections are checked
    against the run by load_scene_states (fitter) and check_recorder_state (recorder)."""
    return checkpoints.read_checkpoint(path, device, CHECKPOINT_FORMAT, ("fitter", "recorder"))


def load_fitter_state(fitter: Fitter, state: dict, path: Path) -> None:
    """Parameters, optimiser and balancer from a checkpoint; a mismatch with this config (say, a
    different triangle count or balancer) is a UserError naming the file."""
    load_scene_states(fitter, [state], [path])


def load_scene_states(fitter: Fitter, states: list[dict], paths: list[Path]) -> None:
    """B one-scene checkpoints into a fitter of B scenes. Each is checked against this config's
    state first (keys, shapes, dtypes, finite values): a UserError naming the file and the value."""
    template = scene_template(fitter)
    for state, path in zip(states, paths):
        try:
            conform(state["fitter"], template, "fitter")
        except Mismatch as exc:
            raise refusal(path, exc) from None
    try:
        load_scenes(fitter, [state["fitter"] for state in states])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
        raise UserError(f"{where}: checkpoint does not fit this run's config "
                        f"({type(exc).__name__}: {shorten(str(exc))})") from None


def check_recorder_state(state: dict, path: Path, height: int, width: int) -> None:
    """The recorder's section of a fit checkpoint for an image of `height` x `width`: GIF frames
    (uint8, of this image's frame size), elapsed seconds, the initial metrics, the warnings.
    Anything else is a UserError naming the file and the value."""
    frame = _gif_frame(np.zeros((height, width, 3), np.float32)).shape

    def frames(value, where: str) -> None:
        if torch.is_tensor(value) and value.dtype == torch.uint8 and tuple(value.shape) == (0,):
            return  # no frame yet: a checkpoint of step 0
        checkpoints.tensor(torch.uint8, (None, *frame))(value, where)

    metrics = checkpoints.record(
        {"psnr_initial": number(allow_inf=True), "ssim_initial": number(), "psnr_flat_mean": number(allow_inf=True)},
        optional={"lpips_initial": number(), "colour_shift_initial": number()})

    def initial(value, where: str) -> None:
        if not (isinstance(value, dict) and not value):  # {}: the start's evaluation had not finished (a
            metrics(value, where)                         # checkpoint of step 0; RunRecorder.restore checks the step)

    spec = {"frames": frames, "elapsed": number(minimum=0), "initial": initial,
            "warnings": checkpoints.list_of(checkpoints.WARNING)}
    try:
        conform(state["recorder"], spec, "recorder")
    except Mismatch as exc:
        raise refusal(path, exc) from None


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor -> (H, W, 3) float32 array."""
    return image.detach().float().cpu().permute(1, 2, 0).numpy()


class RunRecorder:
    """Writes everything a run leaves behind, into `folder`: the run of scene `scene` of the
    fitter's batch, exactly as a fit of that scene alone would write it."""

    def __init__(self, folder: Path | None, fitter: Fitter, evaluator: Evaluator,
                 on_warning: Callable[[dict], None] = lambda warning: None, scene: int = 0,
                 cfg: Config | None = None) -> None:
        self.folder = folder  # None: keep everything in memory (the Python API without `out`)
        self.scene = scene
        self.cfg = cfg or fitter.cfg  # this scene's own config (its image and seed) for the summary
        self.evaluator = evaluator
        self.target = evaluator.target  # (H, W, 3) composited target, for metrics and comparisons
        cfg = fitter.cfg
        self.log_every, self.gif_every, self.ckpt_every = cfg.log.every, cfg.log.gif_every, cfg.checkpoint.every
        self.eval_every = cfg.eval.every
        self.iterations = cfg.optim.iterations
        self.frames: list[np.ndarray] = []
        self.elapsed = 0.0
        self._clock = time.perf_counter()
        # evaluation (running) of the parameters at the start of step `pending[0]`, logged with that step
        self.pending: tuple[int, Future] | None = (0, self._evaluate(fitter))
        self._start, self._initial = self.pending[1], None
        self._flat_mean = flat_mean_psnr(self._mine(fitter.target))
        self.held: list[_Held] = []  # records in step order
        self.last: StepResult | None = None
        self.tb_cfg = cfg.log.tensorboard
        target_variance = float(self._mine(fitter.target).var(dim=(2, 3)).mean())
        self.files = RunFolder(folder, cfg.log, list(fitter.terms), target_variance, on_warning)
        self.final_drawing: np.ndarray | None = None  # set by finish()
        self.final_soft: np.ndarray | None = None

    @property
    def initial(self) -> dict[str, float]:
        """The start's metrics (psnr_initial, ...), waiting for its evaluation if it still runs."""
        if self._initial is None:
            self._initial = {**{f"{k}_initial": v for k, v in self._start.result().items()},
                             "psnr_flat_mean": self._flat_mean}
        return self._initial

    # --- observing the loop -------------------------------------------------------------
    def _mine(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[self.scene:self.scene + 1]

    def on_step(self, fitter: Fitter, result: StepResult) -> None:
        if not result.active[self.scene]:  # stopped before or by this step: its outputs are written apart
            return
        self.last = result
        step, done = result.step, result.step + 1
        to_jsonl = step % self.log_every == 0 or done == self.iterations
        to_board = self.files.tensorboard is not None and step % self.tb_cfg.log_freq == 0
        evaluated = self.pending is not None and self.pending[0] == step
        if to_jsonl or to_board or evaluated or result.grad_norms or result.respawned is not None:
            record = {"step": step, **self._train_record(fitter, result)}
            evaluation = self.pending[1] if evaluated else None
            if evaluated:
                self.pending = None
            jsonl = to_jsonl or evaluated or bool(result.grad_norms) or result.respawned is not None
            variance = float(self._mine(result.render).var(dim=(2, 3)).mean())
            self.held.append(_Held(record, jsonl, self._images(fitter, result), variance, evaluation))
        self._flush(wait=False)
        if step % self.gif_every == 0:
            self.frames.append(_gif_frame(self._full_size(result.render)))
        if done % self.eval_every == 0 and self._before_end(done):
            self.pending = (done, self._evaluate(fitter))
        if done % self.ckpt_every == 0 and self._before_end(done):
            self.save_checkpoint(fitter)

    def _full_size(self, render: torch.Tensor) -> np.ndarray:
        """This scene's render (H, W, 3) at the image's size: a step at a coarser working
        resolution (render.scale) is shown enlarged."""
        mine = self._mine(render)
        height, width = self.target.shape[:2]
        if tuple(mine.shape[-2:]) != (height, width):
            mine = torch.nn.functional.interpolate(mine, size=(height, width), mode="bilinear", align_corners=False)
        return to_numpy_image(mine[0])

    def _before_end(self, done: int) -> bool:
        return self.iterations is None or done < self.iterations

    def target_reached(self, fitter: Fitter) -> bool:
        """Whether the latest evaluation (of the parameters the next step starts from) reached
        optim.target_psnr: the hard-edged export is checked every eval.every steps (waiting for it)."""
        target = fitter.cfg.optim.target_psnr
        return target is not None and self.pending is not None and self.pending[0] == fitter.step \
            and self.pending[1].result()["psnr"] >= target

    def _train_record(self, fitter: Fitter, result: StepResult) -> dict:
        b = self.scene
        losses = {k: v[b] for k, v in result.losses.items()}
        record = {
            "time_s": round(self._elapsed_now(), 3),
            "total": result.total[b],
            **{f"loss/{k}": v for k, v in losses.items()},
            **{f"log_loss/{k}": math.log(v) for k, v in losses.items() if v > 0},
            **{f"weight/{k}": v[b] for k, v in result.weights.items()},
            "psnr_soft": psnr_torch(self._mine(result.render), self._mine(result.target)),
            **{f"schedule/{k}": v for k, v in result.scheduled.items()},
            **{f"grad_norm/{k}": v[b] for k, v in (result.grad_norms or {}).items()},
            **{k: v[b] for k, v in result.modifier_metrics.items()},
            "progress": round(result.progress, 5),
        }
        if result.respawned is not None:
            record["respawned"] = result.respawned[b]
        if result.regularizer is not None:
            record.update(regularizer=result.regularizer[b], regularizer_weight=fitter.regularizer.weight)
        return record

    def _images(self, fitter: Fitter, result: StepResult) -> dict[str, np.ndarray] | None:
        every = self.tb_cfg.image_every
        if self.files.tensorboard is None or not every or result.step % every:
            return None
        render = self._full_size(result.render)
        error = np.abs(render - self.target).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
        images = {"images/render": render, "images/abs_error": np.clip(error * 2, 0, 1)}
        shrink = BOARD_MAX_SIDE / max(render.shape[:2])
        if shrink < 1:
            size = tuple(max(1, round(side * shrink)) for side in render.shape[:2])
            images = {key: to_numpy_image(torch.nn.functional.interpolate(
                torch.from_numpy(image).permute(2, 0, 1)[None], size=size, mode="area")[0])
                for key, image in images.items()}
        return images

    def _flush(self, wait: bool) -> None:
        """Emit the held records, in order, up to the first whose evaluation still runs (all, if `wait`)."""
        while self.held and (wait or self.held[0].evaluation is None or self.held[0].evaluation.done()):
            held = self.held.pop(0)
            if held.evaluation is not None:
                held.record.update({f"eval/{k}": v for k, v in held.evaluation.result().items()})
            self.files.emit(held.record, held.jsonl, held.images, held.variance)

    def _elapsed_now(self) -> float:
        return self.elapsed + time.perf_counter() - self._clock

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, fitter: Fitter) -> None:
        """Atomic: a crash while writing leaves the previous checkpoint intact. Only tensors,
        numbers, strings, lists and dicts go in, so it loads with torch.load(weights_only=True)."""
        if self.folder is None:
            return
        self._flush(wait=True)  # a resumed run keeps the lines logged before its checkpoint
        frames = torch.from_numpy(np.stack(self.frames)) if self.frames else \
            torch.zeros(0, dtype=torch.uint8, device="cpu")
        self.files.save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "fitter": scene_state(fitter, self.scene),  # this scene alone: an ordinary one-scene checkpoint
            "recorder": {"frames": frames, "elapsed": self._elapsed_now(),
                         "initial": self.initial if self._initial is not None or self._start.done() else {},
                         "warnings": json.loads(json_text(self.warnings))},  # plain Python values only
            "version": __version__,
        })

    def resume(self, fitter: Fitter) -> None:
        """Restore the fitter and this recorder from the folder's checkpoint."""
        path = self.folder / CHECKPOINT
        state = read_checkpoint(path, fitter.target.device)
        check_recorder_state(state, path, fitter.height, fitter.width)
        load_fitter_state(fitter, state, path)
        self.restore(fitter, state)

    def restore(self, fitter: Fitter, state: dict) -> None:
        """This recorder's part of a checkpoint whose fitter state is already loaded; metric
        lines logged after it are dropped, so they are not written twice."""
        rec = state["recorder"]
        self.frames = list(rec["frames"].cpu().numpy())
        self.elapsed, self._initial = float(rec["elapsed"]), dict(rec["initial"]) or None
        self._clock = time.perf_counter()
        self.pending = (fitter.step, self._evaluate(fitter)) if fitter.step % self.eval_every == 0 else None
        if self._initial is None:  # a checkpoint of step 0 written before its evaluation ended
            if fitter.step != 0:
                raise UserError(f"{self.folder / CHECKPOINT}: checkpoint of step {fitter.step} without the start's "
                                "metrics (recorder.initial is empty)")
            self._start = self.pending[1]
        self.files.restore(rec.get("warnings", []), lambda record: record["step"] < fitter.step)

    # --- final outputs --------------------------------------------------------------------
    def _evaluate(self, fitter: Fitter) -> Future:
        """Metrics of the current triangles as the exported SVG draws them (computed in the background)."""
        data = scene_to_dict(fitter.triangles.scene(), fitter.height, fitter.width, index=self.scene)
        return EVALUATIONS.submit(lambda: self.evaluator(rasterize_svg(svg_from_dict(data))))

    @property
    def warnings(self) -> list[dict]:
        return self.files.warnings

    def finish(self, fitter: Fitter, completed: bool, device: torch.device, error: str | None = None) -> dict:
        """Write final.png, compare.png, triangles.json/.svg, progress.gif, checkpoint, summary
        (only the summary is computed when there is no folder). `error` defaults to why the
        fitter stopped this scene, if it did so on an error."""
        error = error if error is not None else fitter.errors[self.scene]
        wall = self._elapsed_now()
        if self.pending is not None:  # an evaluation for a step that will not come
            self.pending[1].cancel()
            self.pending = None
        self._flush(wait=True)
        self.save_checkpoint(fitter)
        b = self.scene
        with torch.no_grad():
            render = fitter.render()
            final_losses = {name: float(loss[b]) for name, loss in fitter.compute_losses(render).items()}
            with fitter.modifiers.disabled():
                raw_losses = {name: float(loss[b]) for name, loss in fitter.compute_losses(render).items()}
        soft = to_numpy_image(render[b])
        data = scene_to_dict(fitter.triangles.scene(), fitter.height, fitter.width, index=b)
        svg = svg_from_dict(data)
        hard = rasterize_svg(svg)
        self.final_drawing, self.final_soft = hard, soft
        if self.folder is not None:
            write_json(self.folder / "triangles.json", data)
            write_atomic(self.folder / "triangles.svg", svg)
            save_png(self.folder / "final.png", hard)
            save_png(self.folder / "compare.png", comparison_sheet(self.target, hard))
            write_atomic(self.folder / "progress.gif", gif_bytes(self.frames + [_gif_frame(hard)]))
        soft_quality = EVALUATIONS.submit(self.evaluator, soft)  # beside the drawing's (SSIM frees the GIL)
        quality = self.evaluator(hard)
        soft_quality = soft_quality.result()
        self.files.emit({"step": fitter.steps_done(b), **{f"eval/{k}": v for k, v in quality.items()}})
        self.files.close()
        cfg = fitter.cfg
        networks = cfg.network_weights()
        summary = {
            "image": self.cfg.image.path,
            "width": fitter.width,
            "height": fitter.height,
            "triangles": fitter.triangles.count,
            "psnr": quality["psnr"],
            "ssim": quality["ssim"],
            "colour_shift": quality["colour_shift"],  # mean CIEDE2000 of the 8x-downsampled images
            "lpips": quality.get("lpips"),
            "lpips_meaningful": self.evaluator.lpips_meaningful,
            "metrics_on": "triangles.svg rasterised by resvg (hard edges, anti-aliased)",
            "psnr_soft": soft_quality["psnr"],
            "ssim_soft": soft_quality["ssim"],
            "colour_shift_soft": soft_quality["colour_shift"],
            "lpips_soft": soft_quality.get("lpips"),
            "perceptual_weights": weights_summary(networks),
            "network_weights": networks,
            **self.initial,
            "iterations": fitter.steps_done(b),
            "iterations_planned": self.iterations,
            "time_limit_s": fitter.cfg.optim.time_limit,
            "target_psnr": fitter.cfg.optim.target_psnr,
            "stopped_by": fitter.scene_stop[b] or fitter.stop_reason,  # iterations | time_limit | target_psnr |
            # interrupted | error
            "completed": completed,
            "error": error,
            "warnings": self.warnings,
            "final_losses": final_losses,  # final parameters, modifiers as configured
            "final_losses_unmodified": raw_losses,  # final parameters, modifier pipeline off
            "final_loss_weights": {k: v[b] for k, v in self.last.weights.items()} if self.last else {},  # last step
            "wall_time_s": round(wall, 3),
            "seconds_per_iteration": round(wall / max(fitter.steps_done(b), 1), 5),
            "seed": self.cfg.seed,
            "backend": fitter.renderer.name,
            "device": str(device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "triangulate_ai": __version__},
        }
        if self.folder is not None:
            write_json(self.folder / "summary.json", summary)
        return summary


def weights_summary(networks: dict[str, str]) -> str:
    """`random` if any network is untrained (so no such result passes for a real one)."""
    if not networks:
        return "none"
    if "random" in networks.values():
        return "random"
    return "imagenet" if set(networks.values()) == {"imagenet"} else "pretrained"


def _gif_frame(image: np.ndarray) -> np.ndarray:
    """uint8 frame, shrunk so the GIF stays small for large images."""
    frame = Image.fromarray(to_uint8(image))
    if max(frame.size) > GIF_MAX_SIDE:
        frame.thumbnail((GIF_MAX_SIDE, GIF_MAX_SIDE), Image.LANCZOS)
    return np.asarray(frame)
