"""Budgets (time, target PSNR), fraction schedules, respawn and the structure-aware initialisers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from triangulate_ai.cli import main
from triangulate_ai.config import load_config
from triangulate_ai.densify import Densifier
from triangulate_ai.loop import Fitter
from triangulate_ai.init import PARKED, initial_triangles
from triangulate_ai.metrics import Evaluator
from triangulate_ai.raster import TiledRenderer
from triangulate_ai.run import RunRecorder
from triangulate_ai.schedule import schedule_value
from triangulate_ai.triangles import TriangleSet

from .conftest import QUICK, smooth_image

SETS = [QUICK[i + 1] for i in range(0, len(QUICK), 2)]


def _target(height=32, width=40):
    return torch.from_numpy(smooth_image(height, width).astype(np.float32) / 255).permute(2, 0, 1)[None]


def _fitter(*extra):
    target = _target()
    return Fitter(load_config(None, [*SETS, *extra]), target, target.mean(dim=(2, 3)))


class _StepClock:
    """Observer: the longest step, loop overhead included."""

    def __init__(self) -> None:
        self.last, self.longest = time.perf_counter(), 0.0

    def on_step(self, fitter, result):
        now = time.perf_counter()
        self.longest, self.last = max(self.longest, now - self.last), now


def test_a_time_limit_ends_the_loop_at_the_first_step_boundary_past_it():
    fitter = _fitter("optim.iterations=null", "optim.time_limit=0.5")
    clock = _StepClock()
    assert fitter.run([clock]) == "time_limit"
    assert fitter.elapsed >= 0.5
    assert fitter.elapsed - 0.5 <= clock.longest + 0.05  # it stopped at the first check past the limit
    assert fitter.progress() == 1.0 and fitter.step > 1


def test_iterations_and_time_whichever_comes_first():
    fitter = _fitter("optim.iterations=7", "optim.time_limit=1000")
    assert fitter.run([]) == "iterations" and fitter.step == 7
    assert fitter.progress() == 1.0


def test_a_reachable_target_psnr_stops_early_and_says_so(image_path, tmp_path):
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "eval.every=5",
                 "--iterations", "400", "--target-psnr", "15"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "target_psnr" and summary["completed"]
    assert summary["iterations"] < 400 and summary["iterations"] % 5 == 0
    assert summary["psnr"] >= 15 > summary["psnr_initial"]


def test_time_flag_alone_bounds_by_time(image_path, tmp_path):
    out = tmp_path / "run"
    quick = [a for a in QUICK if not a.startswith("optim.iterations=")]
    quick = [a for i, a in enumerate(quick) if not (a == "--set" and quick[i + 1] == "--set")]
    assert main(["--image", str(image_path), "--out", str(out), *quick, "--time", "0.5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "time_limit" and summary["iterations_planned"] is None
    assert summary["time_limit_s"] == 0.5


@pytest.mark.parametrize("setting, culprit", [
    (["--time", "0"], "optim.time_limit"), (["--time", "-3"], "optim.time_limit"),
    (["--set", "optim.target_psnr=.nan"], "optim.target_psnr"), (["--target-psnr", "inf"], "optim.target_psnr"),
    (["--set", "respawn.until=1.5"], "respawn.until"), (["--set", "respawn.every=0"], "respawn.every"),
    (["--set", "respawn.max_share=0"], "respawn.max_share"), (["--set", "respawn.size=-1"], "respawn.size"),
    (["--set", "triangles.progressive.until=0"], "triangles.progressive.until"),
    (["--set", "optim.iterations=null"], "optim"),
])
def test_bad_budgets_and_respawn_settings_are_one_line_errors(setting, culprit, image_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--image", str(image_path), "--out", str(out), *QUICK, *setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0]
    assert not out.exists()


def test_fraction_schedules_follow_the_budget_share():
    cfg = load_config(None, ["schedules={render.sigma: {type: linear, unit: fraction, start_value: 1.0, "
                             "end_value: 0.2, start_step: 0.5, end_step: 1.0}}"]).schedules["render.sigma"]
    assert [schedule_value(cfg, step=999, progress=p) for p in (0.0, 0.5, 0.75, 1.0)] == pytest.approx(
        [1.0, 1.0, 0.6, 0.2])
    piecewise = load_config(None, ["schedules={render.sigma: {type: piecewise, unit: fraction, milestones: [0.5], "
                                   "values: [1.0, 0.5]}}"]).schedules["render.sigma"]
    assert schedule_value(piecewise, 0, 0.49) == 1.0 and schedule_value(piecewise, 0, 0.5) == 0.5
    with pytest.raises(Exception, match="shares of the budget"):
        load_config(None, ["schedules={render.sigma: {type: piecewise, unit: fraction, milestones: [50], "
                           "values: [1.0, 0.5]}}"])


def test_fraction_schedules_end_with_a_time_bound_run(monkeypatch):
    ticks = iter(range(10**6))
    monkeypatch.setattr(Fitter.run.__globals__["time"], "perf_counter", lambda: next(ticks) * 0.05)  # 50 ms a step
    fitter = _fitter("optim.iterations=null", "optim.time_limit=1.0",
                     "schedules={render.sigma: {type: linear, unit: fraction, start_value: 1.0, end_value: 0.2, "
                     "end_step: 1.0}}")
    seen = []

    class Watch:
        def on_step(self, fitter, result):
            seen.append(result.scheduled["render.sigma"])

    fitter.run([Watch()])
    # step k starts after (k + 1) ticks of the fake clock: share (k + 1) / 20; the 20th tick ends the run
    assert seen == pytest.approx([1.0 - 0.8 * (k + 1) / 20 for k in range(19)])


# ---------------------------------------------------------------------------------- respawn ----


def _blob_scene():
    """Grey target with a red square at x 28-36, y 4-12 (of 40x32); three grey triangles cover the
    left half, a fourth is dead (off the canvas)."""
    target = torch.full((1, 3, 32, 40), 0.5)
    target[:, :, 4:12, 28:36] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    verts = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.5, 1.0], [0.0, 1.0]],
                          [[3.0, 3.0], [3.2, 3.0], [3.0, 3.2]], [[0.1, 0.1], [0.4, 0.1], [0.1, 0.5]]])[None]
    colors = torch.full((1, 4, 3), 0.5)
    triangles = TriangleSet(verts, colors, torch.full((1, 4), 0.9), torch.full((1, 3), 0.5))
    return target, triangles


def test_respawn_moves_a_dead_triangle_to_the_largest_error_with_target_colour_and_fresh_adam_state():
    target, triangles = _blob_scene()
    cfg = load_config(None, ["respawn.enabled=true", "respawn.error_power=8", "respawn.error_blur=1",
                             "respawn.size=0.4", "triangles.count=4", "triangles.opacity=0.6"])
    optimizer = torch.optim.Adam(triangles.param_groups(cfg.optim.lr.model_dump()))
    renderer = TiledRenderer(0.3)
    loss = (renderer(triangles.scene(), 32, 40) - target).abs().mean()
    loss.backward()
    optimizer.step()
    before = {name: optimizer.state[getattr(triangles, name)]["exp_avg"].clone()
              for name in ("positions", "color_logits", "opacity_logits")}
    kept = triangles.positions.detach()[0, [0, 1, 3]].clone()
    moved = Densifier(cfg, triangles, seeds=[0])(triangles, optimizer, renderer, target, progress=0.1)
    assert moved == [1]
    new = triangles.positions.detach()[0, 3] * torch.tensor([40.0, 32.0])  # on top of the paint order
    centre = new.mean(dim=0)
    assert 26 <= centre[0] <= 38 and 2 <= centre[1] <= 14, centre  # in the red square (blur: +-2 px)
    assert torch.equal(triangles.positions.detach()[0, :3], kept)  # the others keep their order
    assert triangles.colors[0, 3, 0] - triangles.colors[0, 3, 1] > 0.5  # red: the target there, lightly blurred
    assert triangles.opacity[0, 3].item() == pytest.approx(0.6, abs=1e-4)
    for name, old in before.items():
        state = optimizer.state[getattr(triangles, name)]
        assert torch.equal(state["exp_avg"][0, 3], torch.zeros_like(old[0, 0]))
        assert torch.equal(state["exp_avg"][0, :2], old[0, :2]) and torch.equal(state["exp_avg"][0, 2], old[0, 3])
        assert torch.equal(state["exp_avg_sq"][0, 3], torch.zeros_like(old[0, 0]))


def test_a_large_image_is_placed_on_a_copy_of_at_most_placement_side_pixels(monkeypatch):
    """The blob scene at 4x the size, placed on a copy 40 px wide: the new triangle still lands in
    the red square, drawn from a 32 x 40 error map (the size placement saw)."""
    import triangulate_ai.densify as densify

    small, triangles = _blob_scene()
    target = torch.nn.functional.interpolate(small, scale_factor=4, mode="nearest")  # 128 x 160
    cfg = load_config(None, ["respawn.enabled=true", "respawn.error_power=8", "respawn.error_blur=1",
                             "respawn.size=0.4", "triangles.count=4", "respawn.placement_side=40"])
    seen = []
    real = densify.best_triangles
    monkeypatch.setattr(densify, "best_triangles", lambda render, target, *a: seen.append(target.shape) or
                        real(render, target, *a))
    optimizer = torch.optim.Adam(triangles.param_groups(cfg.optim.lr.model_dump()))
    assert Densifier(cfg, triangles, seeds=[0])(triangles, optimizer, TiledRenderer(0.3), target, 0.1) == [1]
    assert seen == [(3, 32, 40)]
    centre = triangles.positions.detach()[0, 3].mean(dim=0) * torch.tensor([40.0, 32.0])
    assert 26 <= centre[0] <= 38 and 2 <= centre[1] <= 14, centre


def test_living_triangles_are_left_alone():
    target, triangles = _blob_scene()
    triangles.positions.data[0, 2] = torch.tensor([[0.6, 0.5], [0.9, 0.5], [0.7, 0.9]])
    cfg = load_config(None, ["respawn.enabled=true", "triangles.count=4"])
    optimizer = torch.optim.Adam(triangles.param_groups(cfg.optim.lr.model_dump()))
    before = triangles.positions.detach().clone()
    assert Densifier(cfg, triangles, [0])(triangles, optimizer, TiledRenderer(0.3), target, 0.1) == [0]
    assert torch.equal(triangles.positions.detach(), before)


def test_min_share_moves_weak_triangles_relative_to_the_area_each_could_cover():
    """The living triangle covers ~77 px² at opacity 0.7: alive for `min_contribution` 1, weak
    once `min_share` asks for half the mean area per triangle (40 x 32 / 4 x 0.5 = 160 px)."""
    moved = []
    for share in (0.0, 0.5):
        target, triangles = _blob_scene()
        triangles.positions.data[0, 2] = torch.tensor([[0.6, 0.5], [0.9, 0.5], [0.7, 0.9]])
        cfg = load_config(None, ["respawn.enabled=true", "triangles.count=4", f"respawn.min_share={share}"])
        optimizer = torch.optim.Adam(triangles.param_groups(cfg.optim.lr.model_dump()))
        moved += Densifier(cfg, triangles, [0])(triangles, optimizer, TiledRenderer(0.3), target, 0.1)
    assert moved == [0, 1]


def test_resume_after_a_respawn_event_matches_an_uninterrupted_run(tmp_path):
    extra = ["respawn.enabled=true", "respawn.every=7", "respawn.min_contribution=20", "checkpoint.every=10",
             "optim.iterations=30"]

    def setup(folder):
        fitter = _fitter(*extra)
        folder.mkdir(exist_ok=True)
        return fitter, RunRecorder(folder, fitter, Evaluator(fitter.target[0].permute(1, 2, 0).numpy(), None,
                                                             torch.device("cpu")))

    full, rec = setup(tmp_path / "full")
    moved = []

    class Count:
        def on_step(self, fitter, result):
            if result.respawned is not None:
                moved.append(result.respawned[0])

    full.run([rec, Count()])
    assert moved and sum(moved) > 0  # events happened (steps 7, 14, 21, 28)

    class Crash:
        def on_step(self, fitter, result):
            if result.step == 24:
                raise RuntimeError("crash")

    cut, rec_cut = setup(tmp_path / "cut")
    with pytest.raises(RuntimeError):
        cut.run([rec_cut, Crash()])
    again, rec_again = setup(tmp_path / "cut")
    rec_again.resume(again)
    assert again.step == 20
    again.run([rec_again])
    for a, b in zip(full.triangles.parameters(), again.triangles.parameters()):
        assert torch.equal(a, b)
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["respawned"] for r in lines if "respawned" in r] == moved


# ------------------------------------------------------------------------------ initialisers ----


@pytest.mark.parametrize("init", ["random", "grid", "structure", "progressive"])
def test_initialisers_give_valid_triangles_of_the_count_deterministically(init):
    target = _target(48, 64).repeat(2, 1, 1, 1)
    cfg = load_config(None, [f"triangles.init={init}", "triangles.count=37"]).triangles
    make = [initial_triangles(cfg, target, target.mean(dim=(2, 3)), torch.Generator().manual_seed(s))
            for s in (0, 0, 1)]
    tri = make[0]
    assert tri.positions.shape == (2, 37, 3, 2)
    assert torch.equal(tri.positions, make[1].positions) and torch.equal(tri.colors, make[1].colors)
    if init in ("random", "structure", "progressive"):
        assert not torch.equal(tri.positions, make[2].positions)
    verts = tri.positions.detach()
    placed = ~(verts == PARKED).flatten(2).all(-1)
    if init == "progressive":
        assert placed.sum(dim=1).tolist() == [4, 4]  # start: 0.1 x 37, the rest parked off the canvas
    else:
        assert placed.all()
    px = verts * torch.tensor([64.0, 48.0])
    ab, ac = px[..., 1, :] - px[..., 0, :], px[..., 2, :] - px[..., 0, :]
    area = 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0]).abs()
    assert (area[placed] > 0.5).all()
    inside = verts[placed] if init != "random" else verts[placed].mean(dim=1)
    assert inside.min() >= 0 and inside.max() <= 1
    assert ((tri.colors >= 0) & (tri.colors <= 1)).all()


def test_structure_init_covers_the_canvas_and_follows_edges():
    target = torch.zeros(1, 3, 64, 64)
    target[:, :, :, 32:] = 1.0  # one vertical edge at x = 32
    cfg = load_config(None, ["triangles.init=structure", "triangles.count=200", "triangles.structure_uniform=0.1"])
    tri = initial_triangles(cfg.triangles, target, target.mean(dim=(2, 3)), torch.Generator().manual_seed(0))
    px = tri.positions.detach()[0] * 64
    ab, ac = px[:, 1] - px[:, 0], px[:, 2] - px[:, 0]
    area = 0.5 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0]).abs()
    assert area.sum() == pytest.approx(64 * 64, rel=0.02)  # a triangulation of the canvas (few dropped)
    near_edge = ((px[..., 0] - 32).abs() < 4).float().mean()
    assert near_edge > 0.4  # vertices crowd where the edge is
    colour = tri.colors[0].mean(dim=1)
    left = px[:, :, 0].max(dim=1).values <= 30  # (bilinear samples blur the last pixel)
    assert colour[left].max() < 0.05  # triangles wholly left of the edge are black


def test_progressive_init_brings_triangles_in_over_the_first_part_of_the_budget():
    fitter = _fitter("triangles.init=progressive", "triangles.count=40", "optim.iterations=50",
                     "triangles.progressive={start: 0.1, every: 5, until: 0.5}")
    counts = []

    class Count:
        def on_step(self, fitter, result):
            counts.append(int((~fitter.densifier.parked).sum()))

    fitter.run([Count()])
    assert counts[0] == 4 and counts[-1] == 40
    assert counts == sorted(counts) and counts[24] == 40  # all placed by half the budget


def test_placement_keeps_the_candidate_that_removes_most_error_with_its_best_colour():
    from triangulate_ai.placement import best_triangles, candidate_triangles, coverage

    # flat grey picture, target grey with one red square: the best candidates sit on the square
    picture = torch.full((3, 40, 48), 0.5, dtype=torch.float64)
    target = picture.clone()
    target[:, 10:22, 30:42] = torch.tensor([0.9, 0.1, 0.1], dtype=torch.float64)[:, None, None]
    density = (picture - target).abs().mean(dim=0)
    g = torch.Generator().manual_seed(0)
    verts, colours = best_triangles(picture, target, density, 2, side=10.0, opacity=0.8, candidates=64, generator=g)
    assert verts.shape == (2, 3, 2) and colours.shape == (2, 3)
    centre = verts[0].mean(dim=0)
    assert 28 <= centre[0] <= 44 and 8 <= centre[1] <= 24
    assert colours[0, 0] > 0.9 - 1e-9 and colours[0, 1] < 0.1 + 1e-9  # (0.9 - 0.2 x 0.5) / 0.8 = 1, clamped
    # the closed-form gain against a brute-force repaint, for random candidates on a random picture
    g = torch.Generator().manual_seed(1)
    picture, target = torch.rand(3, 20, 24, dtype=torch.float64), torch.rand(3, 20, 24, dtype=torch.float64)
    tris = candidate_triangles(torch.tensor([[12.0, 10.0]], dtype=torch.float64), 12.0, g)
    ys = torch.arange(20, dtype=torch.float64)[None, :, None] + 0.5
    xs = torch.arange(24, dtype=torch.float64)[None, None, :] + 0.5
    inside = coverage(tris, xs, ys)[0]
    assert inside.sum() > 10
    wanted = ((target - 0.2 * picture) / 0.8)[:, inside].mean(dim=1).clamp(0, 1)
    painted = picture.clone()
    painted[:, inside] = 0.8 * wanted[:, None] + 0.2 * picture[:, inside]
    for trial in range(20):  # no colour does better on those pixels than the closed form
        other = (wanted + (torch.rand(3, generator=g, dtype=torch.float64) - 0.5) * 0.2).clamp(0, 1)
        repaint = picture.clone()
        repaint[:, inside] = 0.8 * other[:, None] + 0.2 * picture[:, inside]
        assert (repaint - target).square().sum() >= (painted - target).square().sum() - 1e-12
