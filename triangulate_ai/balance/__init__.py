"""Balancers by their `loss.type` name. Every module of this package is imported here, and each
`Balancer` subclass with a `name` registers itself with its `Options` (base.REGISTRY): a new method
is one more file in this folder, which the config then accepts by its name and options."""

from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, BalanceContext, Balancer, ramp_factor

__all__ = ["BalanceContext", "Balancer", "ramp_factor", "build_balancer", "REGISTRY"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_balancer(cfg, batch: int = 1) -> Balancer:
    """The balancer named by `loss.type` (`cfg`: a LossConfig) for `batch` scenes, with its
    options and the terms' ramps (and weights, for the methods that use them)."""
    terms = cfg.active_terms()
    ramps = {name: (term.start_iter, term.target_iter) for name, term in terms.items()}
    weights = {name: term.weight for name, term in terms.items()}
    return REGISTRY[cfg.type].from_config(weights, ramps, batch, cfg.options())
