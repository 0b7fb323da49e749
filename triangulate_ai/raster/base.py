"""The Renderer interface every backend implements. Each backend class declares its name (its
`render.backend`), its options and where `auto` may pick it, and registers itself when defined
(REGISTRY); the config gathers the names and options from there."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from pydantic import Field

from ..section import Section
from .scene import Scene

REGISTRY: dict[str, type["Renderer"]] = {}  # render.backend -> the class, filled as the classes are defined


class NoOptions(Section):
    """A backend without options besides `sigma` (and `scale`, the fit's), which every one takes."""


class TiledOptions(Section):
    """The tile binning's: square tiles of tile_size pixels; a triangle reaches the tiles within
    the radius past which its coverage is below cutoff."""

    tile_size: int = Field(8, ge=1, le=256)
    cutoff: float = Field(1e-6, gt=0, lt=0.5)

# Largest alpha used in log-transmittance, so log(1 - alpha) stays finite in float32.
MAX_ALPHA = 1.0 - 1e-6


class Renderer(ABC):
    """Draws a Scene as soft-edged triangles composited "over" in painter's order.

    Coverage of a pixel by a triangle is sigmoid(signed_distance / sigma), sigma in pixels;
    alpha = opacity * coverage; colour = alpha * rgb + (1 - alpha) * colour_below.
    """

    name: ClassVar[str] = "renderer"
    Options: ClassVar[type[Section]] = NoOptions
    auto_on: ClassVar[tuple[str, ...]] = ()  # device types on which render.backend=auto may pick it
    preference: ClassVar[int] = 0  # auto tries the backends of a device from the highest preference down
    description: ClassVar[str] = ""  # how a warning names it ("the fused CPU kernel")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    @classmethod
    def from_config(cls, cfg, device_type: str) -> "Renderer":
        """The backend for `cfg` (a RenderConfig) on a device of `device_type` ("cpu", "cuda")."""
        return cls(cfg.sigma)

    @classmethod
    def unavailable(cls, device_type: str) -> str | None:
        """Why render.backend=auto cannot use it here (one line), or None."""
        return None

    def __init__(self, sigma: float = 0.5) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    @abstractmethod
    def render(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        """Returns (B, 3, H, W) colour, and (B, 1, H, W) accumulated alpha if asked."""

    def step_bytes(self, count: int, batch: int, height: int, width: int, tiles_per_triangle: float) -> float:
        """Estimated peak memory of one forward+backward over `count` triangles (all scenes),
        for the check a run makes before it allocates anything."""
        return 0.0

    def __call__(self, scene: Scene, height: int, width: int, return_alpha: bool = False):
        return self.render(scene, height, width, return_alpha)


class TiledBase(Renderer):
    """A renderer that bins triangles to square tiles: every triangle is drawn on the tiles within
    the radius past which its coverage falls below `cutoff` (binning.py)."""

    Options = TiledOptions

    @classmethod
    def from_config(cls, cfg, device_type: str) -> "Renderer":
        return cls(cfg.sigma, cfg.tile_size, cfg.cutoff)

    def __init__(self, sigma: float = 0.5, tile_size: int = 8, cutoff: float = 1e-6) -> None:
        super().__init__(sigma)
        if tile_size < 1:
            raise ValueError(f"tile_size must be >= 1, got {tile_size}")
        if not 0 < cutoff < 0.5:
            raise ValueError(f"cutoff must be in (0, 0.5), got {cutoff}")
        self.tile_size = int(tile_size)
        self.cutoff = float(cutoff)


def pixel_centres(height: int, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(H*W,) x and y coordinates of pixel centres, row-major."""
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return gx.reshape(-1), gy.reshape(-1)


def support_radius(sigma: float, cutoff: float) -> float:
    """Distance beyond which coverage sigmoid(-d/sigma) is below `cutoff`."""
    return sigma * math.log((1.0 - cutoff) / cutoff)
