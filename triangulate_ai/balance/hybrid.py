"""Geometric mean plus uncertainty weighting, as seed 002 suggests ("use geometric mean as base,
add learned uncertainties"): total = [sum of logs + small-loss regulariser] + [Kendall's
sum_i 1/2 e^{-s_i} L_i + 1/2 s_i]. Each term's weight is 1/(L_i + eps) + 1/2 e^{-s_i}; at the
uncertainty part's stationary point (e^{s_i} = L_i) that is 3 / (2 L_i): still proportional to
1/L_i, with the learned part adapting faster or slower than the log as s_i lags behind L_i.
Per scene as its two parts are (log-variances (B, T))."""

from __future__ import annotations

from .base import Balancer
from .geometric_mean import GeometricMeanBalancer, SumOfLogsOptions
from .uncertainty import UncertaintyBalancer


class HybridBalancer(Balancer):
    name = "hybrid"

    class Options(UncertaintyBalancer.Options, SumOfLogsOptions):
        """Those of its two parts (not the geometric mean's `normalized`)."""

    def __init__(self, names: list[str], epsilon: float = 1e-8, min_loss_value: float = 1e-4,
                 regularization_weight: float = 0.01, dynamic_epsilon: bool = False, lr: float = 0.025,
                 init_log_var: float = 0.0, ramps=None, batch: int = 1) -> None:
        super().__init__(names, ramps, batch)
        self.geometric = GeometricMeanBalancer(names, epsilon, min_loss_value, regularization_weight, dynamic_epsilon,
                                               batch=batch)
        self.uncertainty = UncertaintyBalancer(names, lr, init_log_var, batch=batch)
        self.lr = lr

    @property
    def regularization_weight(self) -> float:
        return self.geometric.regularization_weight

    @regularization_weight.setter
    def regularization_weight(self, value: float) -> None:
        self.geometric.regularization_weight = value

    def combine(self, losses, step, ctx):
        return self.geometric.combine(losses, step, ctx) + self.uncertainty.combine(losses, step, ctx)

    def weights(self):
        geo, unc = self.geometric.weights(), self.uncertainty.weights()
        out = {n: geo[n] + unc[n] for n in self.names}
        out.update({k: v for k, v in unc.items() if "/" in k})
        return out

    def loop_parameters(self):
        return self.uncertainty.loop_parameters()
