"""The optimisation loop: render -> loss terms -> balancer -> backward -> Adam step.

Nothing here knows which balancer, renderer or loss terms it runs, nor what is done with the
results: observers (logging, checkpoints, progress bars) get a StepResult after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .config import BALANCER_OPTIONS, Config, RegularizerConfig
from .errors import UserError
from .init import initial_triangles
from .loss import build_terms
from .loss.balance import BalanceContext, build_balancer
from .loss.balance.base import grad_norm
from .loss.modifiers import build_pipeline
from .regularizer import TriangleRegularizer
from .render import make_renderer
from .schedule import Schedules


class NonFiniteLoss(RuntimeError):
    """A loss or the total became NaN/Inf; the parameters were not updated with it."""

    def __init__(self, name: str, value: float, step: int) -> None:
        super().__init__(f"loss term '{name}' became {value} at step {step}; parameters of the last good step kept")
        self.name, self.value, self.step = name, value, step


@dataclass
class StepResult:
    """What one step computed, from the parameters as they were before its update."""

    step: int
    losses: dict[str, float]
    total: float
    weights: dict[str, float]
    render: torch.Tensor  # (B, 3, H, W), detached
    scheduled: dict[str, float]  # current value of every scheduled config path
    regularizer: float | None  # the triangle regulariser (unweighted), when its weight is > 0
    grad_norms: dict[str, float] | None = None  # per-term gradient norm on the shared parameters
    modifier_metrics: dict[str, float] = field(default_factory=dict)  # loss_modifiers/<Modifier>.<metric>


class Observer(Protocol):
    def on_step(self, fitter: "Fitter", result: StepResult) -> None: ...


class Fitter:
    """Owns the parameters, optimiser and balancer for targets (B, 3, H, W)."""

    def __init__(self, cfg: Config, target: torch.Tensor, background: torch.Tensor,
                 mask: torch.Tensor | None = None) -> None:
        self.cfg = cfg
        self.target = target
        self.mask = mask
        self.height, self.width = target.shape[-2:]
        generator = torch.Generator().manual_seed(cfg.seed)
        self.triangles = initial_triangles(cfg.triangles, target.cpu(), background.cpu(), generator).to(target.device)
        self.renderer = make_renderer(cfg.render, target.device)
        self.terms = build_terms(cfg.loss)
        for name, term in self.terms.items():
            term.prepare(target.device, target.dtype)
            _check_term(name, term, target, mask)
        self.balancer = build_balancer(cfg.loss).to(target.device)
        groups = self.triangles.param_groups(cfg.optim.lr.model_dump())
        balancer_params = self.balancer.loop_parameters()
        if balancer_params:
            groups.append({"name": "balancer", "params": balancer_params, "lr": self.balancer.lr})
        self.optimizer = torch.optim.Adam(groups, betas=tuple(cfg.optim.betas))
        shared = [self.triangles.positions]
        if cfg.loss.shared_params == "all":
            shared += [self.triangles.color_logits, self.triangles.opacity_logits]
        self.context = BalanceContext(shared_params=shared, iterations=cfg.optim.iterations)
        self.regularizer = TriangleRegularizer(cfg.regularizer)
        self.modifiers = build_pipeline(cfg.modifiers)
        self.schedules = Schedules(cfg.schedules, {path: self._setter(path) for path in cfg.schedules})
        self.step = 0

    def _setter(self, path: str) -> Callable[[float], None]:
        """How a scheduled config path reaches the live object that uses it."""
        parts = path.split(".")
        groups = {group["name"]: group for group in self.optimizer.param_groups}
        if path == "render.sigma":
            return lambda v: setattr(self.renderer, "sigma", v)
        if parts[:2] == ["optim", "lr"] and len(parts) == 3 and parts[2] in groups:
            return lambda v: groups[parts[2]].__setitem__("lr", v)
        if len(parts) == 2 and parts[0] == "loss" and parts[1] in BALANCER_OPTIONS[self.cfg.loss.type]:
            return lambda v: setattr(self.balancer, parts[1], v)
        term_weights = getattr(self.balancer, "term_weights", None)
        if len(parts) == 4 and parts[:2] == ["loss", "terms"] and parts[3] == "weight" and term_weights \
                and parts[2] in term_weights:
            return lambda v: term_weights.__setitem__(parts[2], v)
        if len(parts) == 2 and parts[0] == "regularizer" and parts[1] in RegularizerConfig.model_fields:
            return lambda v: setattr(self.regularizer, parts[1], v)
        modifier = next((m for m in self.modifiers.modifiers if len(parts) == 3 and parts[:2] == ["modifiers", m.key]
                         and isinstance(getattr(m, parts[2], None), float)), None)
        if modifier is not None:
            return lambda v: setattr(modifier, parts[2], v)
        raise UserError(f"schedules: '{path}' cannot be scheduled; schedulable: render.sigma, "
                        f"optim.lr.<{'|'.join(groups)}>, loss.<option of loss.type {self.cfg.loss.type}>, "
                        "loss.terms.<term>.weight (fixed, dynamic), regularizer.<weight|min_area|min_quality|margin>, "
                        "modifiers.target_smoothing.sigma, modifiers.edge.strength (when enabled)")

    def render(self) -> torch.Tensor:
        return self.renderer(self.triangles.scene(), self.height, self.width)

    def train_step(self) -> StepResult:
        scheduled = self.schedules.apply(self.step)
        pred = self.render()
        losses = self.compute_losses(pred)
        for name, value in losses.items():
            if not torch.isfinite(value):
                raise NonFiniteLoss(name, value.item(), self.step)
        total = self.balancer(losses, self.step, self.context)
        weights = self.balancer.get_loss_weights()  # as used by this step, before any update
        every = self.cfg.log.grad_norm_every
        grad_norms = self._grad_norms(losses) if every and self.step % every == 0 else None
        regularizer = None
        if self.regularizer.weight > 0:  # outside the balancer: it is not an image loss
            penalty = self.regularizer(self.triangles.positions, self.height, self.width)
            regularizer = penalty.item()
            total = total + self.regularizer.weight * penalty
        if not torch.isfinite(total):
            raise NonFiniteLoss("total", total.item(), self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        result = StepResult(
            step=self.step,
            losses={name: value.item() for name, value in losses.items()},
            total=total.item(),
            weights=weights,
            render=pred.detach(),
            scheduled=scheduled,
            regularizer=regularizer,
            grad_norms=grad_norms,
            modifier_metrics=self.modifiers.metrics() if self.modifiers.active else {},
        )
        self.step += 1
        return result

    def compute_losses(self, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term on this render; through the modifier pipeline when one is on (terms with a
        per-pixel map get it modified, all terms see the modified target)."""
        if not self.modifiers.active:
            return {name: term(pred, self.target, self.mask) for name, term in self.terms.items()}
        target = self.modifiers.prepare_target(self.target, self.step)
        return {name: self.modifiers.reduce(term.per_pixel(pred, target), pred, target, self.mask)
                if hasattr(term, "per_pixel") else term(pred, target, self.mask)
                for name, term in self.terms.items()}

    def _grad_norms(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """||d L_i / d W|| over the shared parameters, one backward pass per term."""
        params = [p for p in self.context.shared_params if p.requires_grad]
        return {name: float(grad_norm(loss, params)) for name, loss in losses.items()}

    def run(self, observers: list[Observer], should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Steps until the configured iteration count; False if stopped early by `should_stop`,
        which is only asked between steps so a stop never splits an update."""
        while self.step < self.cfg.optim.iterations:
            if should_stop():
                return False
            result = self.train_step()
            for observer in observers:
                observer.on_step(self, result)
        return True

    def parameters_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.triangles.parameters())

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "triangles": self.triangles.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "balancer": self.balancer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.triangles.load_state_dict(state["triangles"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        self.step = int(state["step"])


def _check_term(name: str, term, target: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Score the target against itself once, so a term that cannot handle this image (too small
    for a network's pooling, say) stops the run before it starts."""
    try:
        with torch.no_grad():
            term(target, target, mask)
    except RuntimeError as exc:
        height, width = target.shape[-2:]
        raise UserError(f"loss term '{name}' cannot score a {width}x{height} image: "
                        f"{' '.join(str(exc).split())}") from None


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available; asking for CUDA without it is the user's error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device = 'cuda' but no CUDA device is available; use device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
