"""Figures for `visualize_geometric_loss.py`: analytic surfaces, empirical slices, run curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .landscape import analytic_surfaces  # noqa: E402


def save(fig, path: Path, pdf: bool, note: str | None = None) -> list[Path]:
    """PNG (and PDF); `note` goes on top in red: it marks numbers from random networks."""
    if note:
        fig.suptitle(note, color="tab:red", fontsize=9)
    fig.tight_layout()
    written = [path.with_suffix(".png")]
    fig.savefig(written[0], dpi=120)
    if pdf:
        written.append(path.with_suffix(".pdf"))
        fig.savefig(written[1])
    plt.close(fig)
    return written


def plot_analytic(out: Path, pdf: bool = False, lo: float = 0.01, hi: float = 2.0, points: int = 60) -> list[Path]:
    """Contours of each objective over (L1, L2), with arrows along -gradient coloured by its
    magnitude: weighted sums push with the same force everywhere, the log forms push hardest
    where a loss is small (gradient 1/L)."""
    axis = np.geomspace(lo, hi, points)
    l1, l2 = np.meshgrid(axis, axis, indexing="xy")
    surfaces = analytic_surfaces(l1, l2)
    cols = 3
    rows = -(-len(surfaces) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    step = max(1, points // 12)
    for ax, (name, (value, g1, g2)) in zip(axes.flat, surfaces.items()):
        contour = ax.contourf(l1, l2, value, levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax, label="objective")
        magnitude = np.hypot(g1, g2)
        sl = (slice(None, None, step), slice(None, None, step))
        ax.quiver(l1[sl], l2[sl], -g1[sl] / magnitude[sl], -g2[sl] / magnitude[sl], np.log10(magnitude[sl]),
                  cmap="autumn", scale=25, width=0.005)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("L1 (loss 1)")
        ax.set_ylabel("L2 (loss 2)")
        ax.set_title(f"{name}\narrows: −gradient, colour: log10 |gradient|", fontsize=9)
    for ax in list(axes.flat)[len(surfaces):]:
        ax.axis("off")
    return save(fig, out / "analytic", pdf)


def plot_slice_1d(alphas: np.ndarray, losses: dict, objectives: dict, out: Path, pdf: bool,
                  note: str | None = None) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, values in losses.items():
        axes[0].plot(alphas, values, label=name)
    axes[0].set_yscale("log")
    axes[0].set_title("loss terms along a random direction")
    for name, values in objectives.items():
        axes[1].plot(alphas, values - values[len(values) // 2], label=name)
    axes[1].set_title("objectives (minus their value at the fit)")
    for ax in axes:
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("α (filter-normalised direction)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("loss")
    axes[1].set_ylabel("objective − objective(0)")
    return save(fig, out / "slice_1d", pdf, note)


def plot_slice_2d(axis: np.ndarray, surfaces: dict, out: Path, pdf: bool, note: str | None = None) -> list[Path]:
    """Contour and surface plot per loss term and objective."""
    a, b = np.meshgrid(axis, axis, indexing="ij")
    fig = plt.figure(figsize=(4.2 * len(surfaces), 7.6))
    for i, (name, values) in enumerate(surfaces.items()):
        ax = fig.add_subplot(2, len(surfaces), i + 1)
        contour = ax.contourf(a, b, values, levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax)
        ax.plot(0, 0, "r+")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax3 = fig.add_subplot(2, len(surfaces), len(surfaces) + i + 1, projection="3d")
        ax3.plot_surface(a, b, values, cmap="viridis", linewidth=0)
        ax3.set_xlabel("α")
        ax3.set_ylabel("β")
        ax3.set_zlabel(name, fontsize=7)
    return save(fig, out / "slice_2d", pdf, note)


def plot_curves(runs: dict[str, dict], out: Path, pdf: bool, note: str | None = None) -> list[Path]:
    """Raw losses (log scale), log losses and effective weights over steps, runs overlaid."""
    terms = sorted({k[len("loss/"):] for series in runs.values() for k in series if k.startswith("loss/")})
    panels = [("loss/", "loss", True), ("log_loss/", "log loss", False), ("weight/", "weight", False)]
    fig, axes = plt.subplots(len(panels), max(len(terms), 1), figsize=(4.5 * max(len(terms), 1), 3.2 * len(panels)),
                             squeeze=False)
    for row, (prefix, label, log_scale) in enumerate(panels):
        for col, term in enumerate(terms):
            ax = axes[row][col]
            for run, series in runs.items():
                if prefix + term in series:
                    ax.plot(*series[prefix + term], label=run)
            ax.set_xlabel("step")
            ax.set_ylabel(f"{label} {term}")
            if log_scale:
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    return save(fig, out / "curves", pdf, note)
