"""Paired comparisons of ablation methods that a reviewer accepts.

The unit is the image: the seeds of one image are not independent samples of the method's
behaviour, so each method's runs on an image are averaged over seeds first, and the methods
are compared pairwise over the images both have (same grid values). For each metric and each
method against the baseline: the mean difference, its 95% confidence interval (Student's t over
the images), wins, and the paired t-test's p-value, Holm-corrected over the methods compared
(the family of tests of one metric).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import stats

# metric key, label, whether higher is better
COMPARED = [("psnr", "PSNR (dB)", True), ("ssim", "SSIM", True), ("colour_shift", "colour shift (ΔE00)", False)]


@dataclass
class Comparison:
    """A method against the baseline on one metric, the image as the unit."""

    method: str
    metric: str
    images: int
    mean: float  # mean over images of (method - baseline), each image's value averaged over its seeds
    low: float  # 95% confidence interval of the mean difference
    high: float
    wins: int  # images where the method is better (in the metric's direction)
    p: float  # paired t-test, two-sided; NaN when it cannot be computed (one image, or no spread)
    p_holm: float = math.nan


def image_means(rows: list[dict], metric: str) -> dict[tuple[str, str, str], float]:
    """{(method, grid, image): the metric averaged over the image's seeds} of the finished runs."""
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and row.get(metric) is not None and np.isfinite(float(row[metric])):
            values[(row["family"], row["grid"], row["image"])].append(float(row[metric]))
    return {key: float(np.mean(v)) for key, v in values.items()}


def compare(rows: list[dict], baseline: str, metric: str, higher_is_better: bool) -> list[Comparison]:
    """Every method other than the baseline against it, Holm-corrected over those methods."""
    means = image_means(rows, metric)
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        pairs = [(value, means[(baseline, grid, image)]) for (family, grid, image), value in means.items()
                 if (family + grid) == method and family != baseline and (baseline, grid, image) in means]
        if not pairs:
            continue
        diffs = np.array([a - b for a, b in pairs])
        n, mean = len(diffs), float(diffs.mean())
        spread = float(diffs.std(ddof=1)) if n > 1 else 0.0
        if n > 1 and spread > 0:
            half = float(stats.t.ppf(0.975, n - 1)) * spread / math.sqrt(n)
            p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        else:
            half, p = math.nan, math.nan
        wins = int(np.sum(diffs > 0) if higher_is_better else np.sum(diffs < 0))
        out.append(Comparison(method, metric, n, mean, mean - half, mean + half, wins, p))
    for comparison, adjusted in zip(out, holm([c.p for c in out])):
        comparison.p_holm = adjusted
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), NaN entries left out of the family and
    kept NaN: the i-th smallest of m p-values is multiplied by (m - i), running maximum, at most 1."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def per_image(rows: list[dict], metric: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The images, and per method {image: the metric averaged over seeds}."""
    means = image_means(rows, metric)
    images = sorted({image for _, _, image in means})
    table: dict[str, dict[str, float]] = defaultdict(dict)
    for (family, grid, image), value in means.items():
        table[family + grid][image] = value
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m in table]
    return images, {m: table[m] for m in methods}
