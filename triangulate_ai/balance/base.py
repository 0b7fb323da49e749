"""The Balancer interface: many named losses in, one total out, for B scenes at once.

Modelled on LibMTL's `weighting/` (one class per method behind an abstract base). The loop
only ever calls `forward`, `get_loss_weights` and `loop_parameters`, so it never knows which
method runs. Per-term ramps (seed 001's iterative loss wrapper) live here, for every method.

Batch. A balancer is built for B independent scenes (`batch`). Every loss is a (B,) tensor,
the total is (B,) (the loop backpropagates `total.sum()`), every reported weight is (B,), and
all state (buffers, learnable parameters, the method's own optimiser state) has a leading
dimension B; row b is touched only by scene b's losses and gradients, so scene b's weights are
those of a balancer run on scene b alone. Schedulable attributes (`regularization_weight`,
`term_weights[name]`, `lr`, ...) are plain numbers shared by all scenes; ramps too.

Inactive scenes. `forward(..., active=mask)` with a bool (B,) mask: an inactive scene's losses
are never read (they may be NaN or garbage; they are replaced by a constant before the method
sees them), its total entry is 0 with zero gradient (to the losses and to the balancer's
learnable parameters), its reported term weights are 0, and its state rows (buffers and
parameters the balancer updates itself; `loop_parameters()` are the loop's to freeze) are
exactly as before the call. The other scenes proceed exactly as if the inactive one were not
there. `active=None` means every scene is active. The loop's part: pass the same mask at every
later step, and keep the scene's own parameters and `loop_parameters()` rows from moving (Adam
moves a row with zero gradient through its momentum; the gradient reaching the scene's
parameters through its own NaN losses may itself be NaN): e.g. zero their gradient rows and
put the rows back after the optimiser step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..section import Section

REGISTRY: dict[str, type["Balancer"]] = {}  # loss.type -> the class, filled as the classes are defined


class NoOptions(Section):
    """A method without options of its own."""


@dataclass
class BalanceContext:
    """What a balancer may look at besides the losses: the parameters shared by all terms (for
    gradient-based methods such as GradNorm), each with the scene as its first dimension, and
    the total iteration count."""

    shared_params: list[torch.Tensor] = field(default_factory=list)
    iterations: int = 0
    # per-scene ||d L_name / d shared params|| (B,), float64, when the loop has them from the terms'
    # gradients on the render (one backward through each term in all); None: the balancer uses grad_norm
    term_norms: Callable[[str], torch.Tensor] | None = None


def ramp_factor(start: int, target: int, step: int) -> float:
    """0 before `start`, linear to 1 at `target`, 1 after (and from `start` if target <= start)."""
    if step < start:
        return 0.0
    if target <= start or step >= target:
        return 1.0
    return (step - start) / (target - start)


class Balancer(nn.Module, ABC):
    """Combines named per-scene losses. State lives in parameters or buffers with a leading
    scene dimension B, so it travels in checkpoints through `state_dict` (plain tensors).

    A ramped term enters as r*L + (1-r)*stop_grad(L): the balancer sees the true value, and the
    term's gradient (its effective weight) is scaled by r, whatever the method."""

    name: ClassVar[str] = ""  # its `loss.type`; a class with a name is registered and can be chosen in a config
    Options: ClassVar[type[Section]] = NoOptions  # its options, written beside `loss.type` in a config
    takes_term_weights: ClassVar[bool] = False  # built from the terms' configured weights, not only their names
    loop_options: ClassVar[tuple[str, ...]] = ()  # options the loop reads, not the constructor
    needs_term_gradients = False  # True: it reads each term's gradient norm (BalanceContext.term_norms)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            if cls.name in REGISTRY:
                raise TypeError(f"two balancers are named {cls.name!r}: {REGISTRY[cls.name].__name__}, {cls.__name__}")
            REGISTRY[cls.name] = cls

    @classmethod
    def from_config(cls, weights: dict[str, float], ramps: dict[str, tuple[int, int]], batch: int,
                    options: dict[str, Any]) -> "Balancer":
        """Built from a config: the enabled terms' weights by name (or only their names, for a method
        that weighs the terms itself), their ramps, the scene count and this method's options."""
        terms = dict(weights) if cls.takes_term_weights else list(weights)
        own = {key: value for key, value in options.items() if key not in cls.loop_options}
        return cls(terms, ramps=ramps, batch=batch, **own)

    def __init__(self, names: list[str], ramps: dict[str, tuple[int, int]] | None = None, batch: int = 1) -> None:
        super().__init__()
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.names = list(names)
        self.batch = int(batch)
        self.ramps = {name: r for name, r in (ramps or {}).items() if r != (0, 0)}
        self._ramp_now: dict[str, float] = {}
        self._active: torch.Tensor | None = None  # (B,) bool of the last forward; None = all

    def forward(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext,
                active: torch.Tensor | None = None) -> torch.Tensor:
        """Per-scene total (B,) of per-scene losses (B,) each; see the module docstring for
        `active` (bool (B,), None = all scenes)."""
        for name in self.names:
            loss = losses[name]
            if loss.shape != (self.batch,):
                raise ValueError(f"loss '{name}' has shape {tuple(loss.shape)}; this balancer was built for "
                                 f"{self.batch} scene(s) and takes one value per scene, shape ({self.batch},)")
        losses = {name: losses[name] for name in self.names}
        device = losses[self.names[0]].device
        self._active = None
        if active is not None:
            active = torch.as_tensor(active, dtype=torch.bool, device=device)
            if active.shape != (self.batch,):
                raise ValueError(f"active has shape {tuple(active.shape)}, expected ({self.batch},)")
            if not bool(active.all()):
                self._active = active
        if self._active is not None:  # an inactive scene's losses are never read
            losses = {name: torch.where(self._active, loss, torch.ones_like(loss)) for name, loss in losses.items()}
            saved = [(t, t.detach().clone()) for t in self._own_state()]
        self._ramp_now = {name: ramp_factor(*self.ramps[name], step) for name in self.ramps}
        ramped = dict(losses)
        for name, r in self._ramp_now.items():
            if r != 1.0:
                ramped[name] = r * losses[name] + (1 - r) * losses[name].detach()
        total = self.combine(ramped, step, ctx)
        if self._active is None:
            return total
        with torch.no_grad():
            for tensor, before in saved:
                keep = (~self._active).view(-1, *([1] * (tensor.dim() - 1)))
                tensor.copy_(torch.where(keep, before, tensor))
        return torch.where(self._active, total, torch.zeros_like(total))

    def _own_state(self) -> list[torch.Tensor]:
        """Per-scene tensors this balancer updates itself during forward: its buffers and the
        parameters it does not hand to the loop."""
        loop = {id(p) for p in self.loop_parameters()}
        return [*self.buffers(), *(p for p in self.parameters() if id(p) not in loop)]

    @abstractmethod
    def combine(self, losses: dict[str, torch.Tensor], step: int, ctx: BalanceContext) -> torch.Tensor:
        """The method itself, on (possibly ramped) losses (B,) each; returns the total (B,)."""

    @abstractmethod
    def weights(self) -> dict[str, torch.Tensor]:
        """d total_b / d L_{i,b} of the last `combine` by term name, as (B,) tensors, plus
        internal values under '<kind>/<term>' keys (log-variances, multipliers, ...)."""

    def get_loss_weights(self) -> dict[str, torch.Tensor]:
        """Per scene, the effective gradient weight d total_b / d L_{i,b} of each term at the last
        forward (ramps included; 0 for inactive scenes), and the method's internal values under
        '<kind>/<term>' keys: detached CPU float64 tensors of shape (B,)."""
        out = {}
        for key, value in self.weights().items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            value = torch.as_tensor(value, device="cpu", dtype=torch.float64)
            if value.dim() == 0:
                value = value.expand(self.batch)
            if key in self.names:
                value = value * self._ramp_now.get(key, 1.0)
                if self._active is not None:
                    value = torch.where(self._active.cpu(), value, torch.zeros_like(value))
            out[key] = value.clone()
        return out

    def loop_parameters(self) -> list[nn.Parameter]:
        """Parameters the main optimiser should train (with learning rate `self.lr`); their rows
        are per scene, so an elementwise optimiser (Adam) trains the scenes independently."""
        return []

    lr: float | None = None


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """Per-scene ||d loss_b / d params_b|| (float64, shape (B,)), keeping the graph for the real
    backward pass. `loss` is (B,) (or a scalar), every parameter has the scene as its first
    dimension; one backward pass of loss.sum() gives each scene its own gradient in its slice,
    and the norm runs over all other dimensions, summed across the parameters."""
    grads = torch.autograd.grad(loss.sum(), params, retain_graph=True, allow_unused=True)
    squares = [g.double().pow(2).flatten(1).sum(dim=1) if g.dim() else g.double().pow(2).reshape(1)
               for g in grads if g is not None]
    if not squares:
        count = params[0].shape[0] if params and params[0].dim() else max(loss.numel(), 1)
        return torch.zeros(count, dtype=torch.float64, device=loss.device)
    return torch.sqrt(sum(squares))


def loss_matrix(losses: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """The losses' values, detached, as a float64 (B, T) matrix (terms in `names` order)."""
    return torch.stack([losses[name].detach().to(torch.float64) for name in names], dim=1)


def weighted_sum(weights: torch.Tensor, losses: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """sum_i w[:, i] * L_i with constant per-scene weights (B, T): the total (B,). The weights
    are copied, so the state they came from may change in place afterwards."""
    weights = weights.detach().clone()
    return sum(weights[:, i].to(losses[name].dtype) * losses[name] for i, name in enumerate(names))


def by_name(matrix: torch.Tensor, names: list[str], prefix: str = "") -> dict[str, torch.Tensor]:
    """Columns of a (B, T) matrix by term name (optionally '<prefix>/<name>')."""
    matrix = matrix.detach()
    return {f"{prefix}/{name}" if prefix else name: matrix[:, i] for i, name in enumerate(names)}
