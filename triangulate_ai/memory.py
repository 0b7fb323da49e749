"""A memory estimate checked before a run allocates anything, so an impossible triangle count
fails at once with the figure and the limit instead of swapping or hanging."""

from __future__ import annotations

import math
import os

import torch

from .config import Config
from .errors import UserError
from .raster import make_renderer
from .raster.base import Renderer, support_radius

# Per triangle outside the renderer: 10 parameters as value, gradient and two Adam moments
# (float32), the detached copies a step logs, and the Python objects of a JSON/SVG export
# (about 1 KB measured with scene_to_dict + svg_from_dict).
BYTES_PER_TRIANGLE = 10 * 4 * 4 + 1200
BASELINE_BYTES = 600 * 2**20  # interpreter, torch and the evaluation networks


def tiles_per_triangle(cfg: Config, height: int, width: int) -> float:
    """Tiles a triangle's grown bounding box touches at the start of the fit: random
    triangles span about half of `size` x the longer side, grid ones one grid cell."""
    render = cfg.render
    if cfg.triangles.init == "random":
        side = 0.5 * cfg.triangles.size * max(height, width)
    else:
        side = math.sqrt(2 * height * width / cfg.triangles.count)
    side += 2 * support_radius(render.sigma, render.cutoff)
    per_axis = min(side / render.tile_size + 1, math.ceil(max(height, width) / render.tile_size))
    return per_axis ** 2


def most_samples(cfg: Config) -> int:
    """The largest render.samples of a fit, its schedule's included (steps draw k times finer)."""
    schedule = cfg.schedules.get("render.samples")
    values = [cfg.render.samples] if schedule is None else \
        [*schedule.values, *(v for v in (schedule.start_value, schedule.end_value) if v is not None)]
    return max(1, math.ceil(max(values)))


def estimate_bytes(cfg: Config, batch: int, height: int, width: int, renderer: Renderer | None = None) -> int:
    """Peak memory of a fit step: triangles and optimiser state, and the renderer's buffers (on
    the grid render.samples makes k times finer)."""
    count = cfg.triangles.count * batch
    renderer = renderer or make_renderer(cfg.render, "cpu")
    k = most_samples(cfg)
    drawing = renderer.step_bytes(count, batch, height * k, width * k, tiles_per_triangle(cfg, height * k, width * k))
    return int(BASELINE_BYTES + count * BYTES_PER_TRIANGLE + drawing)


def available_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def require(need: int, what: str, advice: str, limit: int | None = None) -> int:
    """`need` bytes, or a UserError saying that `what` needs them, more than the memory available
    (`limit`, default: what the system can give now), and what to do (`advice`)."""
    limit = available_bytes() if limit is None else limit
    if need > limit:
        raise UserError(f"{what} needs about {_gib(need)} of memory (an estimate), more than the {_gib(limit)} "
                        f"available; {advice}")
    return need


def check_memory(cfg: Config, batch: int, height: int, width: int, limit: int | None = None,
                 device: torch.device | str = "cpu") -> int:
    """The estimate, or a UserError naming it and the limit when it does not fit. (On CUDA the
    limit is still host memory: a rough guard, the device's own allocator reports the rest.)"""
    renderer = make_renderer(cfg.render, device)
    return require(estimate_bytes(cfg, batch, height, width, renderer),
                   f"triangles.count = {cfg.triangles.count} on a {width}x{height} image with the {renderer.name} "
                   "renderer", "use fewer triangles or a smaller image.max_size", limit)
