"""The optimisation loop: render -> loss terms -> balancer -> backward -> Adam step.

Nothing here knows which balancer, renderer or loss terms it runs, nor what is done with the
results: observers (logging, checkpoints, progress bars) get a StepResult after each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import torch

from .config import Config
from .densify import Densifier
from .errors import UserError
from .init import initial_triangles
from .triangles import TriangleSet
from .balance import BalanceContext
from .objective import Objective, rate_setter
from .raster import make_renderer


def non_finite_message(name: str, value: float, step: int) -> str:
    return f"loss term '{name}' became {value} at step {step}; parameters of the last good step kept"


@dataclass
class StepResult:
    """What one step computed for each of the B scenes (lists are indexed by scene), from the
    parameters as they were before its update."""

    step: int
    losses: dict[str, list[float]]
    total: list[float]
    weights: dict[str, list[float]]
    render: torch.Tensor  # (B, 3, h, w), detached, at the working resolution (render.scale)
    target: torch.Tensor  # (B, 3, h, w): the target at that resolution
    scheduled: dict[str, float]  # current value of every scheduled config path (shared by the scenes)
    regularizer: list[float] | None  # the triangle regulariser (unweighted), when its weight is > 0
    grad_norms: dict[str, list[float]] | None = None  # per-term gradient norm on the shared parameters
    modifier_metrics: dict[str, list[float]] = field(default_factory=dict)  # loss_modifiers/<Modifier>.<metric>
    respawned: list[int] | None = None  # triangles moved by a respawn/placement event after this step
    progress: float = 0.0  # share of the budget spent when the step started
    active: list[bool] = field(default_factory=list)  # scenes this step updated
    failed: dict[int, str] = field(default_factory=dict)  # scenes stopped by this step, with why


class Observer(Protocol):
    def on_step(self, fitter: "Fitter", result: StepResult) -> None: ...


class Fitter:
    """Owns the parameters, optimiser and balancer of B independent scenes, targets (B, 3, H, W),
    starting from the configured initialiser, or from `start` (B scenes: a model's prediction).

    Scene b is initialised from its own seed (`seeds[b]`, default cfg.seed) and, through per-scene
    losses, balancer state and an elementwise optimiser, evolves exactly as a fit of scene b
    alone. A scene stops (`active[b]` False, parameters frozen at its last good step) when one of
    its losses or parameters stops being finite, or when `finish_scene` is called for it; the
    others go on. One scene is the case B = 1."""

    def __init__(self, cfg: Config, target: torch.Tensor, background: torch.Tensor,
                 mask: torch.Tensor | None = None, seeds: list[int] | None = None,
                 start: TriangleSet | None = None) -> None:
        self.cfg = cfg
        self.target = target
        self.mask = mask
        self.batch = target.shape[0]
        self.seeds = list(seeds) if seeds is not None else [cfg.seed] * self.batch
        if len(self.seeds) != self.batch:
            raise ValueError(f"{len(self.seeds)} seeds for {self.batch} scenes")
        self.height, self.width = target.shape[-2:]
        self.scale = cfg.render.scale  # working resolution, moved by a render.scale schedule
        self.samples = cfg.render.samples  # k x k samples per pixel, moved by a render.samples schedule
        self._levels: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.triangles = start.to(target.device) if start is not None else TriangleSet.cat([
            initial_triangles(cfg.triangles, target[b:b + 1].cpu(), background[b:b + 1].cpu(),
                              torch.Generator().manual_seed(seed))
            for b, seed in enumerate(self.seeds)]).to(target.device)
        self.renderer = make_renderer(cfg.render, target.device)
        self.objective = Objective(cfg, self.batch, target, mask)
        factor = cfg.optim.lr.position_factor(self.triangles.count)
        rates = {**cfg.optim.lr.model_dump(), "positions": cfg.optim.lr.positions * factor}
        groups = self.triangles.param_groups(rates)
        balancer_params = self.balancer.loop_parameters()
        if balancer_params:
            groups.append({"name": "balancer", "params": balancer_params, "lr": self.balancer.lr})
        self.optimizer = torch.optim.Adam(groups, betas=tuple(cfg.optim.betas))
        shared = [self.triangles.positions]
        if cfg.loss.shared_params == "all":
            shared += [self.triangles.color_logits, self.triangles.opacity_logits]
        self.context = BalanceContext(shared_params=shared, iterations=cfg.optim.iterations or 0)
        groups = {group["name"]: group for group in self.optimizer.param_groups}
        rates = {f"optim.lr.{name}": rate_setter(group, factor if name == "positions" else 1.0)  # scaled as the rate
                 for name, group in groups.items()}
        self.schedules = self.objective.schedules(
            self.renderer, {**rates, "render.scale": self._set_scale, "render.samples": self._set_samples},
            f"optim.lr.<{'|'.join(groups)}>, render.scale, render.samples")
        self.densifier = Densifier(cfg, self.triangles, self.seeds)
        self.step = 0
        self.elapsed = 0.0  # seconds spent in run(), across resumes
        self.stop_reason: str | None = None
        self.active = torch.ones(self.batch, dtype=torch.bool)
        self.scene_stop: list[str | None] = [None] * self.batch  # why a stopped scene stopped
        self.stopped_at: list[int | None] = [None] * self.batch  # steps it had done then
        self.errors: list[str | None] = [None] * self.batch

    def progress(self, step: int | None = None) -> float:
        """Share of the budget spent at the start of `step` (default: now), 0 to 1: steps /
        iterations or seconds / time_limit, whichever is further along. Fraction-unit schedules
        and respawn read it."""
        optim = self.cfg.optim
        step = self.step if step is None else step
        shares = [0.0]
        if optim.iterations is not None:
            shares.append(step / optim.iterations if optim.iterations else 1.0)
        if optim.time_limit:
            shares.append(self.elapsed / optim.time_limit)
        return min(max(shares), 1.0)

    def budget_spent(self) -> str | None:
        """Which budget has run out: "iterations", "time_limit", or None."""
        optim = self.cfg.optim
        if optim.iterations is not None and self.step >= optim.iterations:
            return "iterations"
        if optim.time_limit is not None and self.elapsed >= optim.time_limit:
            return "time_limit"
        return None

    @property
    def terms(self) -> dict:
        return self.objective.terms

    @terms.setter
    def terms(self, terms: dict) -> None:
        self.objective.terms = terms

    @property
    def balancer(self):
        return self.objective.balancer

    @balancer.setter
    def balancer(self, balancer) -> None:
        self.objective.balancer = balancer

    @property
    def regularizer(self):
        return self.objective.regularizer

    @property
    def modifiers(self):
        return self.objective.modifiers

    def _set_scale(self, value: float) -> None:
        if not 0 < value <= 1:
            raise UserError(f"schedules: render.scale must be in (0, 1], the schedule gives {value}")
        self.scale = value

    def _set_samples(self, value: float) -> None:
        if value not in (1, 2, 3, 4):
            raise UserError(f"schedules: render.samples must be 1, 2, 3 or 4, the schedule gives {value}")
        self.samples = int(value)

    def working_size(self) -> tuple[int, int]:
        """(h, w) the steps render at: the image's size times render.scale, at least 1 pixel."""
        return max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale))

    def level(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The target and mask at `size` (h, w): area averages of the image's pixels, made once per size."""
        size = tuple(size)
        if size == (self.height, self.width):
            return self.target, self.mask
        if size not in self._levels:
            shrink = lambda x: torch.nn.functional.interpolate(x, size=size, mode="area")  # noqa: E731
            self._levels[size] = (shrink(self.target), None if self.mask is None else shrink(self.mask))
        return self._levels[size]

    def render(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The soft render of every scene, at the image's size or at `size` (h, w): with
        render.samples k, drawn k times finer (sigma in pixels of that grid) and area-averaged, as an
        anti-aliasing rasterizer covers pixels (a sliver thinner than a pixel covers it partly)."""
        height, width = size or (self.height, self.width)
        k = self.samples
        drawn = self.renderer(self.triangles.scene(), height * k, width * k)
        return drawn if k == 1 else torch.nn.functional.avg_pool2d(drawn, k)

    def train_step(self) -> StepResult:
        progress = self.progress()
        scheduled = self.schedules.apply(self.step, progress)
        size = self.working_size()
        pred = self.render(size)
        target, _ = self.level(size)
        every = self.cfg.log.grad_norm_every
        logged = bool(every) and self.step % every == 0
        # per-term gradients wanted (GradNorm, or the logged norms): the terms score a detached copy of
        # the render, each is run backward once onto it, and the render's backward does the rest
        per_term = self.balancer.needs_term_gradients or logged
        image = pred.detach().requires_grad_(True) if per_term else pred
        losses = self.compute_losses(image)
        failed = {}
        finite = torch.stack([torch.isfinite(value.detach()) for value in losses.values()]).cpu()  # (terms, B)
        for b in torch.nonzero(self.active & ~finite.all(dim=0)).flatten().tolist():  # one check for all scenes
            name, value = next((name, value) for (name, value), ok in zip(losses.items(), finite[:, b]) if not ok)
            failed[b] = non_finite_message(name, value[b].item(), self.step)
        self._stop(failed, "error")
        active = self.active.to(pred.device)
        terms = TermGradients(pred, image, losses, self._shared()) if per_term else None
        inputs = {name: value.detach().requires_grad_(True) for name, value in losses.items()} if per_term else losses
        context = replace(self.context, term_norms=terms.norm) if terms is not None else self.context
        total = self.objective.combine(inputs, self.step, context, active=active)
        weights = self.balancer.get_loss_weights()  # as used by this step, before any update
        grad_norms = {name: terms.norm(name).tolist() for name in losses} if logged else None
        regularizer = None
        penalty = self.objective.penalty(self.triangles.positions, self.height, self.width,
                                         ~self.densifier.parked.to(pred.device))
        if penalty is not None:  # outside the balancer: it is not an image loss
            regularizer = penalty.tolist()
            total = total + self.regularizer.weight * torch.where(active, penalty, torch.zeros_like(penalty))
        for b in torch.nonzero(self.active & ~torch.isfinite(total.detach().cpu())).flatten().tolist():
            failed[b] = non_finite_message("total", total[b].item(), self.step)
            self._stop({b: failed[b]}, "error")
        active = self.active.to(pred.device)
        frozen = self._snapshot()
        if bool(active.any()):
            self.optimizer.zero_grad(set_to_none=True)
            torch.where(active, total, torch.zeros_like(total)).sum().backward()
            if terms is not None:  # so far into the losses (d total / d L_i), the balancer and the regulariser
                pred.backward(terms.combined({name: value.grad for name, value in inputs.items()}, active))
            self.optimizer.step()
        self._restore_inactive(frozen)
        respawned = None
        if self.densifier.active and self.densifier.due(self.step, progress):  # between this step and the next
            respawned = self.densifier(self.triangles, self.optimizer, self.renderer, target,
                                       self.progress(self.step + 1), self.active, self.scale)
        result = StepResult(
            step=self.step,
            losses={name: value.detach().tolist() for name, value in losses.items()},
            total=total.detach().tolist(),
            weights={name: value.tolist() for name, value in weights.items()},
            render=pred.detach(),
            target=target,
            scheduled=scheduled,
            regularizer=regularizer,
            grad_norms=grad_norms,
            modifier_metrics=self.modifiers.metrics(self.batch) if self.modifiers.active else {},
            respawned=respawned,
            progress=progress,
            active=self.active.tolist(),
            failed=failed,
        )
        self.step += 1
        return result

    def scene_params(self) -> list[torch.Tensor]:
        """Every tensor the optimiser steps, each with the scene as its first dimension."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
        """Parameters and their Adam moments before the update, to put stopped scenes back."""
        return [(p, p.detach().clone(), {k: v.clone() for k, v in self.optimizer.state.get(p, {}).items()
                                         if torch.is_tensor(v) and v.dim() >= 1})
                for p in self.scene_params()]

    def _restore_inactive(self, frozen: list[tuple[torch.Tensor, torch.Tensor, dict]]) -> None:
        """Stopped scenes keep their parameters and Adam moments as at their last good step (Adam
        would move them on a zero gradient, and a NaN loss can leave NaN in their gradient rows);
        a scene whose parameters stopped being finite is stopped and put back too."""
        finite = torch.stack([torch.isfinite(p.detach()).flatten(1).all(dim=1).cpu()
                              for p, _, _ in frozen]).all(dim=0)
        broken = torch.nonzero(self.active & ~finite).flatten().tolist()
        self._stop({b: f"parameters became non-finite at step {self.step}; those of the last good step kept"
                    for b in broken}, "error")
        keep = ~self.active
        if not bool(keep.any()):
            return
        with torch.no_grad():
            for param, before, moments in frozen:
                rows = keep.to(param.device).view(-1, *[1] * (param.dim() - 1))
                param.copy_(torch.where(rows, before, param))
                state = self.optimizer.state.get(param, {})
                for key, old in moments.items():
                    state[key].copy_(torch.where(rows, old, state[key]))

    def _stop(self, scenes: dict[int, str], reason: str) -> None:
        for b, message in scenes.items():
            if self.active[b]:
                self.active[b] = False
                self.scene_stop[b] = reason
                self.stopped_at[b] = self.step
                self.errors[b] = message if reason == "error" else None

    def steps_done(self, scene: int) -> int:
        """Steps that updated `scene`: all of them, or those before it stopped."""
        stopped = self.stopped_at[scene]
        return self.step if stopped is None else stopped

    def finish_scene(self, scene: int, reason: str) -> None:
        """Stop updating one scene (e.g. it reached its target PSNR); the others go on."""
        self._stop({scene: reason}, reason)

    def compute_losses(self, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term on a render of the image's size or of a working size (scored against the
        target at the render's size)."""
        target, mask = self.level(pred.shape[-2:])
        return self.objective.losses(pred, target, mask, self.step)

    def _shared(self) -> list[torch.Tensor]:
        return [p for p in self.context.shared_params if p.requires_grad]

    def run(self, observers: list[Observer], should_stop: Callable[[], str | None] = lambda: None) -> str:
        """Steps until a budget runs out or `should_stop` names a reason; returns the reason:
        "iterations", "time_limit", "stopped" (every scene stopped on its own: errors, targets),
        or what `should_stop` said (e.g. "interrupted"). Both are
        asked only between steps, so a stop never splits an update. Time counts the loop,
        observers included."""
        started, before = time.perf_counter(), self.elapsed
        while True:
            self.elapsed = before + time.perf_counter() - started
            reason = self.budget_spent() or should_stop() or (None if bool(self.active.any()) else "stopped")
            if reason:
                self.stop_reason = reason
                return reason
            result = self.train_step()
            for observer in observers:
                observer.on_step(self, result)

    def state_dict(self) -> dict:
        """Everything to resume the batch (scenes.scene_state cuts out one scene's part)."""
        return {
            "step": self.step,
            "triangles": self.triangles.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "balancer": self.balancer.state_dict(),
            "elapsed": self.elapsed,
            "densifier": self.densifier.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.triangles.load_state_dict(state["triangles"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        self.densifier.load_state_dict(state["densifier"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])


class TermGradients:
    """Each loss term's gradient on the render, and from it the term's gradient norm over the
    shared parameters, per scene: one backward through each term (its network, if any) onto the
    render, then only the renderer's backward per term. The loop's own backward reuses the
    terms' render gradients, weighted by d total / d L_i, so no term runs backward twice."""

    def __init__(self, render: torch.Tensor, image: torch.Tensor, losses: dict[str, torch.Tensor],
                 shared: list[torch.Tensor]) -> None:
        self.render, self.image, self.losses, self.shared = render, image, losses, shared
        self._grads: dict[str, torch.Tensor] = {}
        self._norms: dict[str, torch.Tensor] = {}

    def on_render(self, name: str) -> torch.Tensor:
        """d L_name / d render, (B, 3, H, W) (scene b's rows from scene b's loss)."""
        if name not in self._grads:
            (self._grads[name],) = torch.autograd.grad(self.losses[name].sum(), self.image, retain_graph=True)
        return self._grads[name]

    def norm(self, name: str) -> torch.Tensor:
        """Per-scene ||d L_name / d shared params|| (B,), float64."""
        if name not in self._norms:
            grads = torch.autograd.grad(self.render, self.shared, grad_outputs=self.on_render(name),
                                        retain_graph=True, allow_unused=True)
            squares = [g.double().pow(2).flatten(1).sum(dim=1) for g in grads if g is not None]
            self._norms[name] = torch.sqrt(sum(squares)) if squares else \
                torch.zeros(self.render.shape[0], dtype=torch.float64, device=self.render.device)
        return self._norms[name]

    def combined(self, weights: dict[str, torch.Tensor | None], active: torch.Tensor) -> torch.Tensor:
        """sum_i w_i dL_i/d render, w_i (B,) the total's derivative by L_i, for the active scenes."""
        out = torch.zeros_like(self.render)
        for name, weight in weights.items():
            if weight is not None:
                out = out + weight.to(out.dtype).view(-1, *[1] * (out.dim() - 1)) * self.on_render(name)
        return torch.where(active.view(-1, *[1] * (out.dim() - 1)), out, torch.zeros_like(out))


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available; asking for CUDA without it is the user's error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device = 'cuda' but no CUDA device is available; use device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
