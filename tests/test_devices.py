"""Device neutrality: no code that runs during a fit creates a tensor without naming its device.

On a CUDA machine a tensor created without `device=` lands on the CPU and the next operation
with a CUDA tensor fails. Without a GPU, the same mistake is made visible by setting the default
device to `meta` while the loop runs: such a tensor is then a meta tensor, and mixing it with
the fit's (CPU) tensors raises at once, naming the line. Everything that runs per step is
covered: the loop, every balancer, the terms and modifiers, respawn and progressive placement,
the regulariser, schedules, gradient-norm logging, the recorder (metrics, evaluation of the
hard-edged export, checkpoints, outputs), a batch of scenes, and the landscape slices.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from triangulate_ai.api import Job, Run
from triangulate_ai.config import load_config
from triangulate_ai.experiments import landscape
from triangulate_ai.loop import Fitter

from .conftest import smooth_image

TYPES = ["fixed", "scale_norm", "geometric_mean", "uncertainty", "gradnorm", "cov", "dynamic", "dwa", "hybrid"]
EVERYTHING = ["triangles.count=16", "optim.iterations=6", "loss.terms.l2={}", "respawn.enabled=true",
              "respawn.every=2", "respawn.min_contribution=5", "log.grad_norm_every=2", "regularizer.weight=0.1",
              "modifiers.edge.enabled=true", "modifiers.entropy.enabled=true",
              "modifiers.target_smoothing.enabled=true",
              "schedules={render.sigma: {type: cosine, unit: fraction, start_value: 0.6, end_value: 0.2, "
              "end_step: 1}}"]


@contextmanager
def tensors_must_name_their_device():
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device("cpu")


def _target():
    return torch.from_numpy(smooth_image(24, 32).astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("kind", TYPES)
def test_every_balancer_and_every_loop_part_name_their_devices(kind):
    extra = ["loss.baseline_iterations=50"] if kind == "dynamic" else []
    cfg = load_config(None, [*EVERYTHING, f"loss.type={kind}", *extra])
    target = _target().repeat(2, 1, 1, 1)
    fitter = Fitter(cfg, target, target.mean(dim=(2, 3)), seeds=[0, 1])
    with tensors_must_name_their_device():
        assert fitter.run([]) == "iterations"


def test_progressive_placement_names_its_devices():
    cfg = load_config(None, ["triangles.count=30", "triangles.init=progressive", "optim.iterations=8",
                             "triangles.progressive={every: 2, until: 0.5}"])
    fitter = Fitter(cfg, _target(), _target().mean(dim=(2, 3)))
    with tensors_must_name_their_device():
        fitter.run([])
    assert not fitter.densifier.parked.any()


def test_a_recorded_batch_names_its_devices(tmp_path):
    paths = []
    for i in range(2):
        Image.fromarray(smooth_image(64, 64, seed=i)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    jobs = [Job(load_config(None, [*EVERYTHING, f"image.path={p}", "eval.lpips.weights=random", "eval.every=2",
                                   "checkpoint.every=2", "loss.terms.vgg={weights: random, layers: [relu1_2]}"]),
                tmp_path / p.stem) for p in paths]
    run = Run.batch(jobs)
    with tensors_must_name_their_device():
        results = run.execute_all()
    assert all(r.completed for r in results)


def test_landscape_slices_name_their_devices():
    cfg = load_config(None, ["triangles.count=10", "loss.terms.l2={}"])
    fitter = Fitter(cfg, _target(), _target().mean(dim=(2, 3)))
    with tensors_must_name_their_device():
        landscape.slice_1d(fitter, points=3)
        landscape.slice_2d(fitter, points=2)


def test_the_check_catches_a_tensor_without_a_device():
    fitter = Fitter(load_config(None, ["triangles.count=4", "optim.iterations=2"]), _target(),
                    _target().mean(dim=(2, 3)))

    class Careless:
        def on_step(self, fitter, result):
            fitter.triangles.positions.detach() + torch.zeros(1)  # no device: lands on the default

    with tensors_must_name_their_device(), pytest.raises((RuntimeError, NotImplementedError)):
        fitter.run([Careless()])
