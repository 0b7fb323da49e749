"""Loss landscapes: analytic surfaces of balancing objectives, empirical slices through
triangle-parameter space around a fit, and loss/weight curves of runs. Computation only;
`plots.py` draws the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..loop import Fitter
from ..run import load_fitter_state, metric_series, read_checkpoint

# ---------------------------------------------------------------- analytic (two losses) ----


def analytic_surfaces(l1: np.ndarray, l2: np.ndarray, eps: float = 1e-8,
                      weightings: tuple[tuple[float, float], ...] = ((1, 1), (1, 10), (10, 1))) -> dict:
    """Objective value and gradient (d/dL1, d/dL2) on a grid of two losses, per objective:
    weighted sums, the sum of logs, the geometric mean sqrt(L1 L2), and uncertainty weighting at
    its equilibrium e^{s_i} = L_i, where total = sum_i 1/2 (1 + log L_i) and d/dL_i = 1/(2 L_i)."""
    out = {}
    for a, b in weightings:
        out[f"sum {a:g}·L1 + {b:g}·L2"] = (a * l1 + b * l2, np.full_like(l1, a), np.full_like(l2, b))
    out["sum of logs"] = (np.log(l1 + eps) + np.log(l2 + eps), 1 / (l1 + eps), 1 / (l2 + eps))
    g = np.sqrt(l1 * l2)
    out["geometric mean"] = (g, g / (2 * l1), g / (2 * l2))
    out["uncertainty (equilibrium)"] = (0.5 * (2 + np.log(l1) + np.log(l2)), 1 / (2 * l1), 1 / (2 * l2))
    return out


# ------------------------------------------------------------- empirical (parameter space) ----

GROUPS = ("positions", "color_logits", "opacity_logits")


def random_directions(fitter: Fitter, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`count` Gaussian directions over the triangle parameters, filter-normalised as in Li et
    al. 2018 with each triangle as a filter: per triangle and parameter group, the direction has
    the norm of that triangle's parameters."""
    g = torch.Generator().manual_seed(seed)
    directions = []
    for _ in range(count):
        d = {}
        for name in GROUPS:
            theta = getattr(fitter.triangles, name).detach()
            rand = torch.randn(theta.shape, generator=g, dtype=theta.dtype, device="cpu").to(theta.device)
            dims = tuple(range(2, theta.dim()))
            theta_norm = theta.norm(dim=dims, keepdim=True) if dims else theta.abs()
            rand_norm = rand.norm(dim=dims, keepdim=True) if dims else rand.abs()
            d[name] = rand * theta_norm / rand_norm.clamp_min(1e-12)
        directions.append(d)
    return directions


def evaluate_points(fitter: Fitter, coefficients: np.ndarray, directions: list[dict[str, torch.Tensor]],
                    batch: int = 41) -> dict[str, np.ndarray]:
    """Every loss term at theta + sum_k c_k d_k for each row c of `coefficients` (N, K).
    Renders `batch` points at once as a batch of scenes (B = batch x the fit's B)."""
    tri = fitter.triangles
    base = {name: getattr(tri, name).detach() for name in GROUPS}
    results: dict[str, list[float]] = {name: [] for name in fitter.terms}
    scene = tri.scene()
    with torch.no_grad():
        for start in range(0, len(coefficients), batch):
            chunk = torch.as_tensor(coefficients[start:start + batch], dtype=base["positions"].dtype,
                                    device=base["positions"].device)
            params = {}
            for name in GROUPS:
                shift = sum(chunk[:, k].reshape(-1, *[1] * base[name].dim()) * directions[k][name][None]
                            for k in range(len(directions)))
                params[name] = (base[name][None] + shift).flatten(0, 1)
            n = len(chunk) * tri.batch_size
            moved = type(scene)(params["positions"], torch.sigmoid(params["color_logits"]),
                                torch.sigmoid(params["opacity_logits"]),
                                scene.background.repeat(len(chunk), 1))
            renders = fitter.renderer(moved, fitter.height, fitter.width)
            target = fitter.target
            for i in range(n):
                pred = renders[i:i + 1]
                for name, term in fitter.terms.items():
                    results[name].append(float(term(pred, target[i % target.shape[0]:][:1], fitter.mask)))
    return {name: np.asarray(values) for name, values in results.items()}


def totals(losses: dict[str, np.ndarray], weights: dict[str, float], eps: float = 1e-8,
           run_weights: dict[str, float] | None = None, run_label: str = "") -> dict[str, np.ndarray]:
    """Balancing objectives over evaluated losses: the weighted sum (config weights), the sum of
    logs, the geometric mean, and the run's own balancer linearised with its logged weights."""
    names = list(losses)
    out = {"weighted sum": sum(weights.get(n, 1.0) * losses[n] for n in names),
           "sum of logs": sum(np.log(losses[n] + eps) for n in names),
           "geometric mean": np.exp(np.mean([np.log(losses[n] + eps) for n in names], axis=0))}
    if run_weights:
        out[f"{run_label} (weights frozen at the checkpoint)"] = sum(run_weights.get(n, 0.0) * losses[n] for n in names)
    return out


def slice_1d(fitter: Fitter, points: int = 41, span: float = 1.0, seed: int = 0) -> tuple[np.ndarray, dict]:
    alphas = np.linspace(-span, span, points)
    return alphas, evaluate_points(fitter, alphas[:, None], random_directions(fitter, 1, seed), batch=points)


def slice_2d(fitter: Fitter, points: int = 41, span: float = 1.0, seed: int = 0) -> tuple[np.ndarray, dict]:
    axis = np.linspace(-span, span, points)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    values = evaluate_points(fitter, grid, random_directions(fitter, 2, seed), batch=points)
    return axis, {name: v.reshape(points, points) for name, v in values.items()}


def last_weights(folder: Path) -> dict[str, float]:
    """The effective weights logged last in a run's metrics.jsonl."""
    return {key[len("weight/"):]: values[-1] for key, (_, values) in metric_series(folder).items()
            if key.startswith("weight/") and "/" not in key[len("weight/"):]}


# --------------------------------------------------------------------------- loading ----


def load_fitter(config: Path, image: Path | None = None, overrides: tuple[str, ...] = (),
                checkpoint: Path | None = None) -> Fitter:
    """A Fitter from a config (and image), with a checkpoint's parameters if given."""
    from ..api import model_start, prepare_target
    from ..config import load_config
    from ..loop import resolve_device
    from ..io import load_image

    values = {"image.path": str(image)} if image else {}
    cfg = load_config(config, list(overrides), values, values_source="--image")
    if cfg.image.path is None:
        raise UserError("no image: give --image or use a run folder")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    _, target, background, mask = prepare_target(load_image(cfg.image.path, cfg.image.max_size), cfg, device)
    fitter = Fitter(cfg, target, background, mask, start=model_start(cfg, target, background))
    if checkpoint is not None:
        load_fitter_state(fitter, read_checkpoint(checkpoint, device), checkpoint)
    return fitter
