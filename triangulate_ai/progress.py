"""A tqdm progress bar over the fit loop (an observer), silent when not on a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

from .config import Config
from .loop import Fitter, StepResult
from .metrics import psnr_torch


class ProgressBar:
    """Steps done, with the total loss and the soft render's PSNR every `log.every` steps (means
    over the scenes of a batch)."""

    def __init__(self, cfg: Config, fitter: Fitter) -> None:
        self.every = cfg.log.every
        self.bar = tqdm(total=cfg.optim.iterations, initial=fitter.step, unit="it", dynamic_ncols=True,
                        disable=None if cfg.log.progress_bar else True)

    def on_step(self, fitter: Fitter, result: StepResult) -> None:
        self.bar.update(1)
        if result.step % self.every == 0 and not self.bar.disable:
            loss = sum(result.total) / len(result.total)
            self.bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr_torch(result.render, result.target):.2f}")

    def close(self) -> None:
        self.bar.close()


def print_warning(warning: dict) -> None:
    """A recorder's warning sign as one stderr line that does not break the progress bar."""
    tqdm.write(f"warning: step {warning['step']}: {warning['message']}", file=sys.stderr)
