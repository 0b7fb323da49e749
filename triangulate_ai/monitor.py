"""Watching a fit: TensorBoard scalars and images, and warning signs of a run going wrong.

Both read the per-step records the RunRecorder builds (the same keys as metrics.jsonl) and never
touch the loop. Tag names follow seeds 000 and 001: `loss_weights/train/<term>`,
`loss_weights/eval/<term>`, `dynamic_weight_<term>`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TensorBoardConfig, WarningsConfig


class TensorBoardSink:
    """Writes records to TensorBoard event files in `folder` (torch.utils.tensorboard)."""

    def __init__(self, folder: Path, cfg: TensorBoardConfig) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        self.writer = SummaryWriter(log_dir=str(folder))

    def write(self, record: dict, images: dict[str, np.ndarray] | None = None) -> None:
        step, p = record["step"], self.cfg.prefix
        is_eval = any(key.startswith("eval/") for key in record)
        for key, value in record.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key.startswith("eval/"):
                if self.cfg.log_eval:
                    self.writer.add_scalar(p + key, value, step)
                continue
            if not self.cfg.log_train or step % self.cfg.log_freq:
                continue
            if key.startswith("weight/"):
                name = key[len("weight/"):]
                self.writer.add_scalar(f"{p}loss_weights/train/{name}", value, step)
                if name.startswith("multiplier/"):  # the dynamic scheduler's own tag (seed 001)
                    self.writer.add_scalar(f"{p}dynamic_weight_{name[len('multiplier/'):]}", value, step)
                if is_eval and self.cfg.log_eval:
                    self.writer.add_scalar(f"{p}loss_weights/eval/{name}", value, step)
            else:
                self.writer.add_scalar(p + key, value, step)
        for tag, image in (images or {}).items():
            self.writer.add_image(p + tag, np.clip(image, 0, 1), step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# every warning sign the monitor raises, with the short label reports give it
WARNING_KINDS = {"flat_collapse": "collapse", "term_dominating": "dominance", "weights_oscillating": "oscillation",
                 "weight_extreme": "extreme weight", "log_loss_to_minus_infinity": "loss to 0", "total_jump": "jump",
                 "regularizer_dominating": "regulariser"}


@dataclass
class WarningMonitor:
    """Checks each record for warning signs; each kind (per term) is reported once.

    Signs: a weight near zero or huge; weights oscillating; one term dominating the total; a
    loss heading to zero (its log to -inf); the regulariser dominating; a sudden jump of the
    total; the render collapsing to flat colour (its variance far below the target's)."""

    cfg: WarningsConfig
    terms: list[str]
    target_variance: float
    warnings: list[dict] = field(default_factory=list)
    _seen: set = field(default_factory=set)
    _weights: dict = field(default_factory=dict)
    _totals: deque = field(default_factory=lambda: deque(maxlen=20))

    def restore_seen(self) -> None:
        """After a resume: warnings already given are not given again."""
        self._seen = {(w["kind"], w.get("term")) for w in self.warnings}

    def _warn(self, kind: str, step: int, message: str, **values) -> None:
        if kind not in WARNING_KINDS:
            raise ValueError(f"unknown warning kind {kind!r}: add it to WARNING_KINDS, where reports find it")
        key = (kind, values.get("term"))
        if key in self._seen:
            return
        self._seen.add(key)
        self.warnings.append({"kind": kind, "step": step, "message": message,
                              **{k: v for k, v in values.items() if v is not None}})

    def check(self, record: dict, render_variance: float | None = None) -> list[dict]:
        """New warnings raised by this record."""
        before = len(self.warnings)
        step, c = record["step"], self.cfg
        if "total" in record:
            self._check_weights(step, record)
            self._check_losses(step, record)
            self._check_total(step, record["total"])
        if render_variance is not None and step >= c.collapse_after and self.target_variance > 0:
            ratio = render_variance / self.target_variance
            if ratio < c.collapse_ratio:
                self._warn("flat_collapse", step, f"render colour variance is {ratio:.3f} of the target's "
                           f"(below {c.collapse_ratio}): the fit is collapsing to flat colour",
                           variance_ratio=ratio)
        return self.warnings[before:]

    def _check_weights(self, step: int, record: dict) -> None:
        c = self.cfg
        for term in self.terms:
            w = record.get(f"weight/{term}")
            if w is None:
                continue
            if 0 < abs(w) < c.weight_min or abs(w) > c.weight_max:
                self._warn("weight_extreme", step, f"weight of '{term}' is {w:.3g}, outside "
                           f"[{c.weight_min:g}, {c.weight_max:g}]", term=term, weight=w)
            history = self._weights.setdefault(term, deque(maxlen=c.oscillation_window))
            history.append(w)
            if len(history) == history.maxlen:
                deltas = np.diff(np.asarray(history))
                big = np.abs(deltas) > c.oscillation_amplitude * max(abs(np.mean(history)), 1e-12)
                flips = np.sum((np.sign(deltas[1:]) != np.sign(deltas[:-1])) & big[1:] & big[:-1])
                if flips >= (len(deltas) - 1) * 0.75:
                    self._warn("weights_oscillating", step, f"weight of '{term}' changed direction {int(flips)} "
                               f"times in the last {len(history)} logged steps", term=term, flips=int(flips))

    def _check_losses(self, step: int, record: dict) -> None:
        c = self.cfg
        contributions = {t: abs(record.get(f"weight/{t}", 0.0) * record.get(f"loss/{t}", 0.0)) for t in self.terms}
        share_total = sum(contributions.values())
        if len(self.terms) > 1 and share_total > 0:
            term, top = max(contributions.items(), key=lambda kv: kv[1])
            if top / share_total > c.dominance:
                self._warn("term_dominating", step, f"'{term}' makes {top / share_total:.0%} of the weighted "
                           "gradient signal (weight x loss)", term=term, share=top / share_total)
        for term in self.terms:
            loss = record.get(f"loss/{term}")
            if loss is not None and 0 <= loss < c.loss_floor:
                self._warn("log_loss_to_minus_infinity", step, f"'{term}' = {loss:.3g}: its log heads to -inf "
                           "and a log-based balancer gives it a huge weight", term=term, loss=loss)
        reg, reg_weight = record.get("regularizer"), record.get("regularizer_weight", 0.0)
        if reg is not None and share_total > 0 and reg * reg_weight > c.regularizer_share * share_total:
            self._warn("regularizer_dominating", step, f"the regulariser ({reg * reg_weight:.3g}) outweighs "
                       f"the image losses ({share_total:.3g})", regularizer=reg * reg_weight)

    def _check_total(self, step: int, total: float) -> None:
        if len(self._totals) >= 5:
            deltas = np.abs(np.diff(np.asarray(self._totals)))
            typical = float(np.median(deltas)) if len(deltas) else 0.0
            jump = abs(total - self._totals[-1])
            if typical > 0 and jump > self.cfg.jump_factor * typical and jump > 1e-6 * max(abs(total), 1.0):
                self._warn("total_jump", step, f"total jumped by {jump:.3g} ({jump / typical:.0f}x the typical "
                           "change between logged steps)", jump=jump)
        if math.isfinite(total):
            self._totals.append(total)
