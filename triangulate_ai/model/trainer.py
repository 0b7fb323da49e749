"""Training a TriangleModel over a dataset with the fit's parts.

Each step renders the model's triangles for a batch of crops with the configured renderer,
scores them with the configured loss terms (one value per image, through the modifier
pipeline), and hands the batch means to the configured balancer as ONE scene (B = 1): the
balancer's state follows the training, not an image. Schedules set render, balancer, regulariser
and modifier values as in a fit, plus the network's learning rate (`train.lr`), by step, by
epoch or by share of the training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..export import rasterize_svg, scene_to_dict, svg_from_dict
from ..loop import non_finite_message
from ..balance import BalanceContext
from ..balance.base import grad_norm
from ..memory import estimate_bytes, require
from ..metrics import Evaluator, flat_mean_psnr
from ..objective import Objective, rate_setter
from ..raster import Scene, make_renderer
from .config import ModelRunConfig
from .data import TrainCrops, epoch_batches
from .network import TriangleModel, memory_bytes


class TrainingFailed(RuntimeError):
    """A loss or the gradient became NaN/Inf; the network was not updated with it."""


@dataclass
class ModelStep:
    """What one training step computed, from the weights as they were before its update."""

    step: int
    epoch: float  # epochs done when it started
    losses: dict[str, float]  # batch means
    total: float
    weights: dict[str, float]  # the balancer's effective weights d total / d L_i
    scheduled: dict[str, float]
    regularizer: float | None
    grad_norms: dict[str, float] | None  # per term, on the predicted triangles (log.grad_norm_every)
    gradient: float  # the network's gradient norm before clipping
    lr: float
    variance_ratio: float  # colour variance of the renders / of the crops (batch means): the collapse sign
    render: torch.Tensor  # (B, 3, H, W), detached
    targets: torch.Tensor


def same_size_batches(images: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """`images` (3, H, W) in order, stacked into batches of up to `size` consecutive images of
    one size."""
    batches: list[list[torch.Tensor]] = []
    for image in images:
        if batches and len(batches[-1]) < size and batches[-1][0].shape == image.shape:
            batches[-1].append(image)
        else:
            batches.append([image])
    return [torch.stack(batch) for batch in batches]


def colour_variance(images: torch.Tensor) -> torch.Tensor:
    """(B,) per-image colour variance over pixels, averaged over channels."""
    return images.var(dim=(2, 3)).mean(dim=1)


def check_training_memory(cfg: ModelRunConfig, device: torch.device) -> int:
    """The memory a training step needs (the network's part and the renderer's), or a UserError
    when it is more than the machine has: checked before anything is built."""
    batch, crop, side = cfg.train.batch_size, cfg.data.crop, cfg.model.input_size
    need = memory_bytes(cfg, batch, training=True) + estimate_bytes(cfg, batch, crop, crop,
                                                                    make_renderer(cfg.render, device))
    return require(need, f"a model of {cfg.triangles.count} triangles (input {side}x{side}) trained on batches of "
                   f"{batch} {crop}x{crop} crops", "use fewer triangles, a smaller model.input_size, train.batch_size "
                   "or data.crop")


class ModelTrainer:
    """Owns the network, renderer, the objective (its balancer with B = 1), schedules and the AdamW
    optimiser (the network's weights and the balancer's learnable ones)."""

    def __init__(self, cfg: ModelRunConfig, device: torch.device, steps_per_epoch: int) -> None:
        self.cfg, self.device = cfg, device
        check_training_memory(cfg, device)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * cfg.train.epochs
        torch.manual_seed(cfg.seed)
        self.model = TriangleModel(cfg).to(device)  # loads the encoder's starting weights: may stop here
        self.renderer = make_renderer(cfg.render, device)
        size = cfg.data.crop
        probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        self.objective = Objective(cfg, 1, probe)  # the batch is one scene: the balancer follows the training
        groups = [{"name": "network", "params": list(self.model.parameters()), "lr": cfg.train.lr,
                   "weight_decay": cfg.train.weight_decay}]
        balancer = self.objective.balancer
        if balancer.loop_parameters():
            groups.append({"name": "balancer", "params": balancer.loop_parameters(), "lr": balancer.lr,
                           "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.train.betas))
        network = rate_setter(self.optimizer.param_groups[0])
        self.schedules = self.objective.schedules(self.renderer, {"train.lr": network}, "train.lr")
        self.step = 0
        self.elapsed = 0.0  # seconds of training steps, across resumes

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.step // self.steps_per_epoch

    def _shared(self, scene: Scene) -> tuple[Scene, list[torch.Tensor]]:
        """The scene rebuilt from (1, -1) views of the predicted triangles: the outputs every term
        depends on, with a scene dimension of one, for gradient-based balancers and norms."""
        names = ["vertices"] + (["colors", "opacity"] if self.cfg.loss.shared_params == "all" else [])
        flat = {name: getattr(scene, name).reshape(1, -1) for name in names}
        rebuilt = scene._replace(**{name: flat[name].view_as(getattr(scene, name)) for name in names})
        return rebuilt, list(flat.values())

    def train_step(self, images: torch.Tensor) -> ModelStep:
        """One AdamW step on a batch of crops (B, 3, H, W); TrainingFailed (nothing updated) when a
        loss, the total or the gradient is not finite."""
        images = images.to(self.device)
        height, width = images.shape[-2:]
        scheduled = self.schedules.apply(self.step, min(self.step / self.total_steps, 1.0),
                                         self.step / self.steps_per_epoch)
        self.model.train()
        scene, shared = self._shared(self.model(images))
        pred = self.renderer(scene, height, width)
        losses = {name: value.mean()[None] for name, value in
                  self.objective.losses(pred, images, None, self.step).items()}
        for name, value in losses.items():
            if not torch.isfinite(value).all():
                raise TrainingFailed(non_finite_message(name, value.item(), self.step))
        total = self.objective.combine(losses, self.step, BalanceContext(shared_params=shared,
                                                                          iterations=self.total_steps))
        weights = {name: float(value[0]) for name, value in self.objective.balancer.get_loss_weights().items()}
        every = self.cfg.log.grad_norm_every
        grad_norms = {name: float(grad_norm(loss, shared)[0]) for name, loss in losses.items()} \
            if every and self.step % every == 0 else None
        regularizer = None
        penalty = self.objective.penalty(scene.vertices, height, width)
        if penalty is not None:  # outside the balancer, as in a fit
            penalty = penalty.mean()
            regularizer = penalty.item()
            total = total + self.objective.regularizer.weight * penalty
        if not torch.isfinite(total).all():
            raise TrainingFailed(non_finite_message("total", total.item(), self.step))
        self.optimizer.zero_grad(set_to_none=True)
        total.sum().backward()
        clip = self.cfg.train.grad_clip
        gradient = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else math.inf))
        if not math.isfinite(gradient):
            raise TrainingFailed(f"the network's gradient became {gradient} at step {self.step}; weights of the "
                                 "last good step kept")
        self.optimizer.step()
        with torch.no_grad():
            ratio = float(colour_variance(pred).mean() / colour_variance(images).mean().clamp_min(1e-12))
        result = ModelStep(step=self.step, epoch=self.step / self.steps_per_epoch,
                           losses={name: value.item() for name, value in losses.items()}, total=total.item(),
                           weights=weights, scheduled=scheduled, regularizer=regularizer, grad_norms=grad_norms,
                           gradient=gradient, lr=self.optimizer.param_groups[0]["lr"], variance_ratio=ratio,
                           render=pred.detach(), targets=images)
        self.step += 1
        return result

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Scene:
        """The model's triangles for images (B, 3, H, W), in inference mode."""
        self.model.eval()
        try:
            return self.model(images.to(self.device))
        finally:
            self.model.train()

    @torch.no_grad()
    def validate(self, images: list[torch.Tensor], evaluators: list[Evaluator]) -> "Validation":
        """The model's one-pass prediction for every validation image (crops or whole pictures,
        any sizes: images of one size go through in batches), scored as the exported SVG draws
        it (PSNR, SSIM, LPIPS), against the flat mean colour, with the loss terms on the soft
        render, and each prediction's collapse verdict (its colour variance below
        log.warnings.collapse_ratio x the image's, the fit's flat-collapse sign)."""
        losses: dict[str, list[torch.Tensor]] = {}
        drawings: list[np.ndarray] = []
        for batch in same_size_batches(images, self.cfg.train.batch_size):
            chunk = batch.to(self.device)
            height, width = chunk.shape[-2:]
            scene = self.predict(chunk)
            soft = self.renderer(scene, height, width)
            for name, value in self.objective.losses(soft, chunk, None, self.step).items():
                losses.setdefault(name, []).append(value.cpu())
            drawings += [rasterize_svg(svg_from_dict(scene_to_dict(scene, height, width, index=b)))
                         for b in range(len(chunk))]
        scores = [evaluator(drawing) for evaluator, drawing in zip(evaluators, drawings)]
        ratios = [float(colour_variance(torch.from_numpy(d).permute(2, 0, 1)[None])
                        / colour_variance(image[None]).clamp_min(1e-12)) for d, image in zip(drawings, images)]
        flat = [flat_mean_psnr(image[None]) for image in images]
        return Validation(scores=scores, flat_psnr=flat, variance_ratios=ratios,
                          collapse_ratio=self.cfg.log.warnings.collapse_ratio,
                          losses={name: float(torch.cat(values).mean()) for name, values in losses.items()},
                          drawings=drawings)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "balancer": self.objective.balancer.state_dict(), "step": self.step, "elapsed": self.elapsed,
                "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        if int(state["steps_per_epoch"]) != self.steps_per_epoch:
            raise ValueError(f"the checkpoint's epochs have {int(state['steps_per_epoch'])} steps, this config's "
                             f"{self.steps_per_epoch} (data.crops_per_image, train.batch_size or the images changed)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.balancer.load_state_dict(state["balancer"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])


@dataclass
class Validation:
    """One validation pass: per-crop scores of the hard-edged drawings and their summary."""

    scores: list[dict[str, float]]
    flat_psnr: list[float]
    variance_ratios: list[float]
    collapse_ratio: float
    losses: dict[str, float]  # batch-mean term values on the soft render
    drawings: list[np.ndarray]  # (H, W, 3) hard-edged drawings, for figures

    @property
    def collapsed(self) -> list[bool]:
        return [r < self.collapse_ratio for r in self.variance_ratios]

    def summary(self) -> dict[str, float]:
        """Means over the crops: psnr, ssim, lpips (when measured), psnr_flat_mean, psnr_gain (over
        the flat mean), collapsed_share, and the loss terms as loss/<term>."""
        out = {key: float(np.mean([s[key] for s in self.scores])) for key in self.scores[0]}
        out["psnr_flat_mean"] = float(np.mean(self.flat_psnr))
        out["psnr_gain"] = out["psnr"] - out["psnr_flat_mean"]
        out["collapsed_share"] = float(np.mean(self.collapsed))
        out.update({f"loss/{name}": value for name, value in self.losses.items()})
        return out


class Observer(Protocol):
    def on_step(self, trainer: ModelTrainer, result: ModelStep) -> None: ...

    def on_epoch(self, trainer: ModelTrainer, validation: Validation) -> None: ...


def train_epochs(trainer: ModelTrainer, data: TrainCrops, crops: list[torch.Tensor], evaluators: list[Evaluator],
                 observers: list[Observer], should_stop: Callable[[], bool] = lambda: False, workers: int = 0) -> str:
    """Steps from where the trainer stands (mid-epoch after a resume) to the end of train.epochs,
    validating after every epoch; "epochs" at the end, "interrupted" when `should_stop` said so
    (asked between steps, so a stop never splits an update). The trainer's clock counts it all."""
    cfg = trainer.cfg
    started, before = time.perf_counter(), trainer.elapsed
    while trainer.epoch < cfg.train.epochs:
        data.epoch = trainer.epoch
        batches = epoch_batches(len(data), cfg.train.batch_size, cfg.seed, trainer.epoch)
        loader = DataLoader(data, batch_sampler=batches[trainer.step % trainer.steps_per_epoch:], num_workers=workers)
        for images in loader:
            if should_stop():
                return "interrupted"
            result = trainer.train_step(images)
            trainer.elapsed = before + time.perf_counter() - started
            for observer in observers:
                observer.on_step(trainer, result)
        validation = trainer.validate(crops, evaluators)
        trainer.elapsed = before + time.perf_counter() - started
        for observer in observers:
            observer.on_epoch(trainer, validation)
    return "epochs"
