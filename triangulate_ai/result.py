"""A triangulation of one image, however it was made (a fit or a model's one-pass prediction):
the triangles, their hard-edged drawing, the metrics, and the exports of a run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .export import comparison_sheet, scene_to_dict, svg_from_dict
from .io import save_png, write_atomic, write_json
from .raster.scene import Scene


@dataclass
class Triangulation:
    scene: Scene  # the triangles (B = 1), detached, on the CPU
    height: int
    width: int
    image: np.ndarray  # (H, W, 3) float in [0, 1]: the triangles as an SVG viewer draws them
    target: np.ndarray
    metrics: dict  # what summary.json holds (psnr, ssim, ... of the hard-edged drawing)
    folder: Path | None  # the run folder, when one was written

    def to_dict(self) -> dict:
        """The triangles in the documented triangles.json schema."""
        return scene_to_dict(self.scene, self.height, self.width)

    def svg(self) -> str:
        return svg_from_dict(self.to_dict())

    def save_svg(self, path: str | Path) -> Path:
        write_atomic(path, self.svg())
        return Path(path)

    def save_json(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)

    def save_png(self, path: str | Path) -> Path:
        """The hard-edged drawing (what the metrics describe) as PNG."""
        save_png(path, self.image)
        return Path(path)

    def write_exports(self, folder: Path) -> None:
        """triangles.json and .svg, final.png (the drawing), compare.png and summary.json."""
        data = self.to_dict()
        write_json(folder / "triangles.json", data)
        write_atomic(folder / "triangles.svg", svg_from_dict(data))
        save_png(folder / "final.png", self.image)
        save_png(folder / "compare.png", comparison_sheet(self.target, self.image))
        write_json(folder / "summary.json", self.metrics)
