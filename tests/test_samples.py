"""render.samples: steps draw k x k samples per pixel and average them, so the soft render covers
pixels as the anti-aliased export does (slivers thinner than a pixel included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triangulate_ai.config import load_config
from triangulate_ai.errors import UserError
from triangulate_ai.export import rasterize_svg, scene_to_dict, svg_from_dict
from triangulate_ai.loop import Fitter
from triangulate_ai.memory import estimate_bytes
from triangulate_ai.raster import Scene
from triangulate_ai.triangles import _logit

from .conftest import quick_fitter

SAMPLES = "schedules={render.samples: {type: piecewise, milestones: [3], values: [1, 2]}}"


def _fitter(*extra: str) -> Fitter:
    return quick_fitter(*extra, height=24, width=32)[0]


def _slivers(fitter: Fitter) -> Scene:
    """Put thin, steep slivers (0.2 to 0.7 px wide) of opaque colours on a grey background."""
    count = fitter.triangles.count
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(count, generator=generator) * 0.8 + 0.1
    width = (0.2 + 0.5 * torch.rand(count, generator=generator)) / fitter.width
    top, bottom = torch.full_like(x, 0.05), torch.full_like(x, 0.95)
    verts = torch.stack([torch.stack([x, top], -1), torch.stack([x + width, bottom], -1),
                         torch.stack([x + 2 * width, top], -1)], 1)[None]
    with torch.no_grad():
        fitter.triangles.positions.copy_(verts)
        fitter.triangles.color_logits.copy_(_logit(torch.rand(1, count, 3, generator=generator).clamp(0.05, 0.95)))
        fitter.triangles.opacity_logits.fill_(6.0)
        fitter.triangles.background_logits.zero_()
    return fitter.triangles.scene()


def test_sampled_steps_cover_pixels_as_the_export_draws_them():
    errors = {}
    for k in (1, 4):
        fitter = _fitter(f"render.samples={k}", "render.sigma=0.05", "triangles.count=6")
        scene = _slivers(fitter)
        drawn = rasterize_svg(svg_from_dict(scene_to_dict(scene, fitter.height, fitter.width, index=0)))
        with torch.no_grad():
            soft = fitter.render()[0].permute(1, 2, 0).numpy()
        errors[k] = float(np.abs(soft - drawn).mean())
    # one sample per pixel at the centre sees a sliver as all or nothing; 16 see its share
    assert errors[4] < 0.25 * errors[1], errors
    assert errors[4] < 0.01, errors


def test_a_sampled_render_is_the_area_mean_of_the_finer_drawing():
    fitter = _fitter("render.samples=3")
    with torch.no_grad():
        fine = fitter.renderer(fitter.triangles.scene(), 72, 96)
        expected = fine.reshape(1, 3, 24, 3, 32, 3).mean(dim=(3, 5))
        torch.testing.assert_close(fitter.render(), expected)
    result = fitter.train_step()
    assert result.render.shape[-2:] == (24, 32)  # the log and the loss see the image's size


def test_a_schedule_raises_the_samples_and_bad_values_are_one_line():
    fitter = _fitter(SAMPLES)
    seen = [fitter.train_step().scheduled["render.samples"] for _ in range(5)]
    assert seen == [1, 1, 1, 2, 2] and fitter.samples == 2
    bad = _fitter("schedules={render.samples: {type: linear, start_value: 1, end_value: 2, end_step: 4}}")
    bad.train_step()
    with pytest.raises(UserError, match=r"render.samples must be 1, 2, 3 or 4, the schedule gives 1.25"):
        bad.train_step()
    with pytest.raises(UserError, match="render.samples"):
        load_config(None, ["render.samples=5"])


def test_the_memory_estimate_counts_the_finer_grid():
    sets = ["triangles.count=200"]
    plain = estimate_bytes(load_config(None, sets), 1, 1000, 1500)
    sampled = estimate_bytes(load_config(None, [*sets, "render.samples=2"]), 1, 1000, 1500)
    scheduled = estimate_bytes(load_config(None, [*sets, SAMPLES]), 1, 1000, 1500)
    assert sampled > plain + 50 * 2**20 and scheduled == sampled
