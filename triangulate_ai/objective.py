"""The objective every loop shares: loss terms (through the modifier pipeline), the balancer,
the regulariser and the schedules that move their values.

A per-image fit (loop.Fitter), the model's training (model.trainer) and the landscape tool (which
drives a Fitter) build it once from the config and differ only in what they optimise: scenes'
parameters or a network's weights, and the learning rates they schedule on top.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import BALANCER_OPTIONS, RegularizerConfig
from .errors import UserError
from .loss import build_terms
from .balance import BalanceContext, build_balancer
from .loss.modifiers import build_pipeline
from .regularizer import TriangleRegularizer
from .schedule import Schedules

SCHEDULABLE_PARTS = ("render.sigma, loss.<option of loss.type {loss_type}>, loss.terms.<term>.weight (fixed, dynamic), "
                     "regularizer.<weight|min_area|min_quality|margin>, modifiers.target_smoothing.sigma, "
                     "modifiers.edge.strength (when enabled)")


class Objective:
    """Config in, `losses -> total` out: the terms score a render (B,) each, the balancer combines
    them per scene, the regulariser's penalty is added outside the balancer (it is not an image
    loss).

    Args:
        cfg: a fit's Config or a model's ModelRunConfig (the loss, regularizer, modifiers and
            schedules sections are read).
        scenes: the balancer's scene dimension (a fit's B; 1 for a model, whose batch is one scene).
        probe: an image (1 or B, 3, H, W) of the size and device the terms will score: each term
            scores it once, so a term that cannot handle the size stops the run before it starts.
        mask: the probe's validity mask, if any.
    """

    def __init__(self, cfg, scenes: int, probe: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.cfg = cfg
        self.terms = build_terms(cfg.loss)
        for name, term in self.terms.items():
            term.prepare(probe.device, probe.dtype)
            check_term(name, term, probe, mask)
        self.balancer = build_balancer(cfg.loss, scenes).to(probe.device)
        self.regularizer = TriangleRegularizer(cfg.regularizer)
        self.modifiers = build_pipeline(cfg.modifiers)

    def losses(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
               step: int) -> dict[str, torch.Tensor]:
        """Every term on a render, (B,) each; through the modifier pipeline when one is on (terms
        with a per-pixel map get it modified, all terms see the modified target)."""
        if not self.modifiers.active:
            return {name: term(pred, target, mask) for name, term in self.terms.items()}
        target = self.modifiers.prepare_target(target, step)
        return {name: self.modifiers.reduce(term.per_pixel(pred, target), pred, target, mask)
                if hasattr(term, "per_pixel") else term(pred, target, mask)
                for name, term in self.terms.items()}

    def combine(self, losses: dict[str, torch.Tensor], step: int, context: BalanceContext,
                active: torch.Tensor | None = None) -> torch.Tensor:
        """The balanced total, (B,)."""
        return self.balancer(losses, step, context, active=active)

    def penalty(self, vertices: torch.Tensor, height: int, width: int,
                live: torch.Tensor | None = None) -> torch.Tensor | None:
        """The regulariser's per-scene penalty (unweighted), or None when its weight is 0."""
        return self.regularizer(vertices, height, width, live) if self.regularizer.weight > 0 else None

    def schedules(self, renderer, own: dict[str, Callable[[float], None]], own_hint: str) -> Schedules:
        """The config's schedules, each bound to the live value it moves: a value the loop owns
        (`own`: setters by config path, such as its learning rates (`rate_setter`); described by
        `own_hint` in the error), the render's softness, or a part of this objective."""

        def setter(path: str) -> Callable[[float], None]:
            found = own.get(path) or self.setter(path, renderer)
            if found is None:
                raise UserError(f"schedules: '{path}' cannot be scheduled; schedulable: {own_hint}, "
                                f"{SCHEDULABLE_PARTS.format(loss_type=self.cfg.loss.type)}")
            return found
        return Schedules(self.cfg.schedules, {path: setter(path) for path in self.cfg.schedules})

    def setter(self, path: str, renderer) -> Callable[[float], None] | None:
        """How a scheduled path reaches the render, balancer, regulariser or a modifier; None when
        the path is none of them."""
        parts = path.split(".")
        if path == "render.sigma":
            return lambda v: setattr(renderer, "sigma", v)
        balancer = self.balancer
        if len(parts) == 2 and parts[0] == "loss" and parts[1] in BALANCER_OPTIONS[self.cfg.loss.type]:
            return lambda v: setattr(balancer, parts[1], v)
        term_weights = getattr(balancer, "term_weights", None)
        if len(parts) == 4 and parts[:2] == ["loss", "terms"] and parts[3] == "weight" and term_weights \
                and parts[2] in term_weights:
            return lambda v: term_weights.__setitem__(parts[2], v)
        if len(parts) == 2 and parts[0] == "regularizer" and parts[1] in RegularizerConfig.model_fields:
            return lambda v: setattr(self.regularizer, parts[1], v)
        modifier = next((m for m in self.modifiers.modifiers if len(parts) == 3 and parts[:2] == ["modifiers", m.key]
                         and isinstance(getattr(m, parts[2], None), float)), None)
        if modifier is not None:
            return lambda v: setattr(modifier, parts[2], v)
        return None


def rate_setter(group: dict, factor: float = 1.0) -> Callable[[float], None]:
    """A setter of an optimiser param group's learning rate, for a schedule: the scheduled value
    times `factor` (a rate given for another triangle count, say)."""
    return lambda value: group.__setitem__("lr", value * factor)


def check_term(name: str, term, target: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Score the target against itself once, so a term that cannot handle this image (too small
    for a network's pooling, say) stops the run before it starts."""
    try:
        with torch.no_grad():
            term(target, target, mask)
    except RuntimeError as exc:
        height, width = target.shape[-2:]
        raise UserError(f"loss term '{name}' cannot score a {width}x{height} image: "
                        f"{' '.join(str(exc).split())}") from None
