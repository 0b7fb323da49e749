"""Loss terms and the balancers that combine them."""

from __future__ import annotations

from ..config import LossConfig
from .terms import L1, LossTerm

TERMS: dict[str, type[LossTerm]] = {"l1": L1}


def build_terms(cfg: LossConfig) -> dict[str, LossTerm]:
    """The enabled terms, in config order, keyed by name."""
    return {name: TERMS[name]() for name in cfg.active_terms()}
