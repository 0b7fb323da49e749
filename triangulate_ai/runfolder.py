"""What every run writes as it goes, a fit's (run.RunRecorder) or a model training's
(model.record.ModelRecorder): metric lines, TensorBoard, the warning signs, an atomic checkpoint,
and on resume the metric lines logged after that checkpoint dropped, so none is written twice.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .io import json_text, write_atomic
from .monitor import TensorBoardSink, WarningMonitor

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class RunFolder:
    """Args:
        folder: where the files go; None keeps nothing on disk (the Python API without `out`).
        log: the config's `log` section (its tensorboard and warnings parts are read).
        terms: the loss terms' names, for the warning signs.
        target_variance: the colour variance the renders' is compared with (flat-collapse sign).
        on_warning: called with each new warning as it is raised.
    """

    def __init__(self, folder: Path | None, log, terms: list[str], target_variance: float,
                 on_warning: Callable[[dict], None] = lambda warning: None) -> None:
        self.folder = folder
        self.on_warning = on_warning
        self.tensorboard = TensorBoardSink(folder / "tensorboard", log.tensorboard) \
            if log.tensorboard.enabled and folder is not None else None
        self.monitor = WarningMonitor(log.warnings, terms, target_variance) if log.warnings.enabled else None

    @property
    def warnings(self) -> list[dict]:
        return [] if self.monitor is None else list(self.monitor.warnings)

    def emit(self, record: dict, jsonl: bool = True, images: dict[str, np.ndarray] | None = None,
             variance: float | None = None) -> None:
        """One record to metrics.jsonl (when `jsonl`), TensorBoard and the warning monitor
        (`variance`: the render's colour variance, for the collapse sign)."""
        if jsonl and self.folder is not None:
            with open(self.folder / METRICS, "a") as handle:
                handle.write(json_text(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.write(record, images)
        if self.monitor is not None:
            for warning in self.monitor.check(record, variance):
                self.on_warning(warning)

    def save_checkpoint(self, state: dict) -> None:
        """Atomic: a crash while writing leaves the previous checkpoint intact. `state` holds only
        tensors, numbers, strings, lists and dicts, so it loads with torch.load(weights_only=True)."""
        if self.folder is None:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.folder / CHECKPOINT, buffer.getvalue())

    def restore(self, warnings: list[dict], keep: Callable[[dict], bool]) -> None:
        """Back to a checkpoint: its warnings, and only the metric lines `keep` accepts (those
        logged before it)."""
        if self.monitor is not None:
            self.monitor.warnings[:] = warnings
            self.monitor.restore_seen()
        path = None if self.folder is None else self.folder / METRICS
        if path is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line.strip() and keep(json.loads(line))]
            write_atomic(path, "".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
