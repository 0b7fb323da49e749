"""Exports: JSON schema, SVG as drawn by a standard rasterizer against our render."""

from __future__ import annotations

import numpy as np
import torch

from triangulate_ai.export import comparison_sheet, gif_bytes, rasterize_svg, scene_to_dict, svg_from_dict
from triangulate_ai.raster import Scene, TiledRenderer


def _scene():
    verts = torch.tensor([[[[0.1, 0.1], [0.8, 0.2], [0.3, 0.9]],
                           [[0.5, 0.4], [0.95, 0.6], [0.6, 0.95]],
                           [[-0.2, 0.5], [0.4, 0.45], [0.1, 1.2]]]])
    return Scene(verts, torch.tensor([[[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9]]]),
                 torch.tensor([[0.9, 0.6, 0.75]]), torch.tensor([[0.95, 0.9, 0.8]]))


def test_json_schema_in_pixels_and_painter_order():
    data = scene_to_dict(_scene(), height=40, width=50)
    assert data["format"] == "triangulate_ai.triangles" and data["version"] == 1
    assert (data["width"], data["height"]) == (50, 40)
    first = data["triangles"][0]
    assert first["vertices"] == [[5.0, 4.0], [40.0, 8.0], [15.0, 36.0]]
    assert first["color"] == [0.9, 0.1, 0.1] and first["opacity"] == 0.9
    svg = svg_from_dict(data)
    assert svg.count("<polygon") == 3 and svg.index("#e61a1a") < svg.index("#1acc33")


def test_svg_as_rasterized_matches_the_soft_render_away_from_edges():
    scene = _scene()
    height, width = 80, 100
    svg_image = rasterize_svg(svg_from_dict(scene_to_dict(scene, height, width)))
    render = TiledRenderer(sigma=0.3)(scene, height, width)[0].permute(1, 2, 0).numpy()
    diff = np.abs(svg_image - render).max(axis=-1)
    assert svg_image.shape == render.shape
    assert np.median(diff) < 2 / 255  # interiors agree to 8-bit quantisation
    assert (diff > 0.1).mean() < 0.03  # disagreement only along edges


def test_comparison_and_gif():
    a = np.zeros((6, 5, 3), np.float32)
    sheet = comparison_sheet(a, a + 0.5)
    assert sheet.shape == (6, 5 * 3 + 8, 3)
    assert np.allclose(sheet[:, 5 + 4:10 + 4], 0.5)
    assert gif_bytes([np.zeros((4, 4, 3), np.uint8)] * 3).startswith(b"GIF89a")
