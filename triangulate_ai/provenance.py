"""Where a figure comes from: date, machine, threads, commit and versions, for the JSON every
benchmark writes and the card of a shipped model."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__


def cpu_name() -> str:
    """The CPU's model name."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def commit() -> str | None:
    """The short git commit of the checkout this code runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict:
    """Date (UTC), machine (CPU model, logical CPUs), torch threads, commit and versions."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs", "threads": torch.get_num_threads(),
            "commit": commit(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "triangulate_ai": __version__}}
