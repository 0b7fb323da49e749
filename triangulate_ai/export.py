"""Exports of a fitted scene: SVG, JSON, GIF, comparison sheet, and the hard-edged redraw.

The hard-edged redraw is the SVG rasterised by resvg, a standard anti-aliased vector renderer,
i.e. what a user sees when opening `triangles.svg`. Final quality metrics are measured on it,
not on the soft training render, which still draws near-zero-width triangles.
"""

from __future__ import annotations

import io

import numpy as np
import resvg_py
from matplotlib import colormaps
from PIL import Image

from .raster.scene import Scene

JSON_FORMAT = "triangulate_ai.triangles"
JSON_VERSION = 1


def scene_to_dict(scene: Scene, height: int, width: int, index: int = 0) -> dict:
    """The documented `triangles.json` schema (version 1) for scene `index` of the batch.

    Coordinates are pixels, origin at the top-left corner, y down (as in SVG); colours and
    opacity are floats in [0, 1]; list order is painter's order (last drawn on top).
    """
    verts = scene.to_pixels(height, width)[index].detach().cpu().double().numpy()
    colors = scene.colors[index].detach().cpu().double().numpy()
    opacity = scene.opacity[index].detach().cpu().double().numpy()
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "width": width,
        "height": height,
        "background": [round(float(c), 6) for c in scene.background[index].detach().cpu()],
        "triangles": [
            {
                "vertices": [[round(float(x), 4), round(float(y), 4)] for x, y in verts[t]],
                "color": [round(float(c), 6) for c in colors[t]],
                "opacity": round(float(opacity[t]), 6),
            }
            for t in range(verts.shape[0])
        ],
    }


def _hex(colour: list[float]) -> str:
    r, g, b = (int(round(min(max(c, 0.0), 1.0) * 255)) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def svg_from_dict(data: dict) -> str:
    """An SVG drawing the triangles in order, with fill and fill-opacity, over the background."""
    width, height = data["width"], data["height"]
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{_hex(data["background"])}"/>',
    ]
    for tri in data["triangles"]:
        points = " ".join(f"{x:.3f},{y:.3f}" for x, y in tri["vertices"])
        lines.append(f'<polygon points="{points}" fill="{_hex(tri["color"])}" '
                     f'fill-opacity="{tri["opacity"]:.4f}"/>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def rasterize_svg(svg: str) -> np.ndarray:
    """(H, W, 3) float image of an SVG as resvg draws it (hard edges, anti-aliased)."""
    png = resvg_py.svg_to_bytes(svg_string=svg, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def comparison_sheet(target: np.ndarray, render: np.ndarray) -> np.ndarray:
    """target | render | absolute error (mean over channels, inferno colour map, 0 to 0.5)."""
    error = np.abs(render - target).mean(axis=-1)
    heat = colormaps["inferno"](np.clip(error / 0.5, 0, 1))[..., :3].astype(np.float32)
    gap = np.ones((target.shape[0], 4, 3), dtype=np.float32)
    return np.concatenate([target, gap, render, gap, heat], axis=1)


def gif_bytes(frames: list[np.ndarray], duration_ms: int = 80) -> bytes:
    """Animated GIF of uint8 (H, W, 3) frames, holding the last one a little longer."""
    images = [Image.fromarray(f) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [max(duration_ms, 1000)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()
