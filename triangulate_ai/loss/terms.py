"""Loss terms: each scores a batch of renders against their targets, one value per scene (B,).

Each term class declares its name (its key under `loss.terms`) and its options (`Options`, a
Section) and registers itself when defined (REGISTRY, in the order defined: the order of the
config's keys and of the terms in a run); the config gathers them from here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..section import Section

REGISTRY: dict[str, type["LossTerm"]] = {}  # loss.terms key -> the class, filled as the classes are defined


def ramp_order(target: int, info: ValidationInfo) -> int:
    """A term's target_iter: 0 (no ramp) or not before its start_iter. The validator of every
    term's options, LPIPS's too (whose options have another base)."""
    if target and target < info.data.get("start_iter", 0):
        raise ValueError("target_iter must be 0 (no ramp) or >= start_iter")
    return target


class TermConfig(Section):
    """What every term has: its weight, and its ramp (0 before start_iter, up to 1 at target_iter)."""

    weight: float = Field(1.0, ge=0)
    start_iter: int = Field(0, ge=0)
    target_iter: int = Field(0, ge=0)

    _ramp_order = field_validator("target_iter")(ramp_order)


class LossTerm(ABC):
    """A named image loss. `mask` (B, 1, H, W) in [0, 1] restricts it to valid pixels."""

    name: ClassVar[str] = "term"
    Options: ClassVar[type[Section]] = TermConfig
    on_by_default: ClassVar[bool] = False  # in a config that does not mention it

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    @classmethod
    def from_config(cls, options: Section) -> "LossTerm":
        """The term for its `loss.terms.<name>` section."""
        return cls()

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        """Load whatever the term needs (pretrained networks) before the first step, so a
        missing weights file stops the run before anything is written."""

    @abstractmethod
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) losses of renders (B, 3, H, W) against targets (B, 3, H, W): scene b's loss
        depends on scene b only, so B scenes can share one loop."""


def masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean of a (B, C, H, W) map over each scene's pixels, or over its mask's weight."""
    if mask is None:
        return per_pixel.flatten(1).mean(dim=1)
    weight = mask.expand_as(per_pixel)
    return (per_pixel * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1e-8)


class _MeanAbsError(torch.autograd.Function):
    """(B,) mean |pred - target| per scene, keeping only the difference for the backward (sign and
    an in-place scale) where autograd's graph of sub, abs and mean keeps more and makes three
    passes back: with B scenes of a cheap render these passes over B images are part of the step.
    abs then sum, not vector_norm(ord=1), which was 4x slower over 8 scenes on CPU."""

    @staticmethod
    def forward(ctx, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        ctx.save_for_backward(diff)
        return diff.abs().flatten(1).sum(dim=1) / diff[0].numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (diff,) = ctx.saved_tensors
        grad_pred = torch.sign(diff).mul_((grad / diff[0].numel()).view(-1, *[1] * (diff.dim() - 1)))
        return (grad_pred if ctx.needs_input_grad[0] else None,
                -grad_pred if ctx.needs_input_grad[1] else None)


class L1(LossTerm):
    """Mean absolute error per channel and pixel."""

    name = "l1"
    on_by_default = True

    def per_pixel(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss map before reduction, for the modifier pipeline."""
        return (pred - target).abs()

    def __call__(self, pred, target, mask=None):
        if mask is None and pred.shape == target.shape:
            return _MeanAbsError.apply(pred, target)
        return masked_mean(self.per_pixel(pred, target), mask)


class L2(LossTerm):
    """Mean squared error per channel and pixel: the loss PSNR measures."""

    name = "l2"

    def per_pixel(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).square()

    def __call__(self, pred, target, mask=None):
        return masked_mean(self.per_pixel(pred, target), mask)
