"""Balancers by their `loss.type` name."""

from __future__ import annotations

from ...config import LossConfig
from .base import BalanceContext, Balancer, ramp_factor
from .cov import CoVBalancer
from .dwa import DWABalancer
from .dynamic import DynamicBalancer
from .fixed import FixedBalancer
from .geometric_mean import GeometricMeanBalancer
from .gradnorm import GradNormBalancer
from .hybrid import HybridBalancer
from .scale_norm import ScaleNormBalancer
from .uncertainty import UncertaintyBalancer

__all__ = ["BalanceContext", "Balancer", "ramp_factor", "build_balancer", "BALANCERS"]

BALANCERS = {
    "scale_norm": ScaleNormBalancer,
    "geometric_mean": GeometricMeanBalancer,
    "uncertainty": UncertaintyBalancer,
    "gradnorm": GradNormBalancer,
    "cov": CoVBalancer,
    "dwa": DWABalancer,
    "hybrid": HybridBalancer,
}


def build_balancer(cfg: LossConfig, batch: int = 1) -> Balancer:
    """The balancer named by `loss.type` for `batch` scenes, with its options and the terms'
    ramps. `fixed` and `dynamic` also take the terms' weights (as the weights, or as base
    weights)."""
    terms = cfg.active_terms()
    ramps = {name: (term.start_iter, term.target_iter) for name, term in terms.items()}
    options = {key: value for key, value in cfg.options().items() if key != "shared_params"}
    if cfg.type == "fixed":
        return FixedBalancer({name: term.weight for name, term in terms.items()}, ramps, batch=batch)
    if cfg.type == "dynamic":
        return DynamicBalancer({name: term.weight for name, term in terms.items()}, ramps=ramps, batch=batch,
                               **options)
    return BALANCERS[cfg.type](list(terms), ramps=ramps, batch=batch, **options)
