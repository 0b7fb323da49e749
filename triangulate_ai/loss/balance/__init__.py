"""Balancers by their `loss.type` name."""

from __future__ import annotations

from ...config import LossConfig
from .base import BalanceContext, Balancer
from .fixed import FixedBalancer

__all__ = ["BalanceContext", "Balancer", "FixedBalancer", "build_balancer"]


def build_balancer(cfg: LossConfig) -> Balancer:
    terms = cfg.active_terms()
    if cfg.type == "fixed":
        return FixedBalancer({name: term.weight for name, term in terms.items()})
    raise ValueError(f"unknown balancer {cfg.type!r}")  # config validation makes this unreachable
