"""Figures in the README and docs come from the committed bench results: each table shows the
values of its JSON, so no stale figure can land."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "bench" / "results"


def _mean(run: dict, key: str) -> float:
    return sum(row[key] for row in run["rows"]) / len(run["rows"])


def test_fit_quality_figures_are_those_of_quality_json():
    quality = json.loads((RESULTS / "quality.json").read_text())
    primitive = json.loads((RESULTS / "primitive.json").read_text())["mean"]
    readme, page = (ROOT / "README.md").read_text(), (ROOT / "docs" / "quality.md").read_text()
    for run in quality["runs"]:
        psnr, reference = _mean(run, "psnr"), primitive[str(run["triangles"])]["psnr"]
        for text in (readme, page):
            assert f"**{psnr:.2f}**" in text and f"**{psnr - reference:+.2f}**" in text, run["triangles"]
        assert " | ".join(f"{row['psnr']:.2f}" for row in run["rows"]) in page
    assert quality["date"][:10] in readme and quality["date"] in page and quality["commit"] in page


def test_full_size_fit_quality_figures_are_those_of_quality_768_json():
    quality = json.loads((RESULTS / "quality_768.json").read_text())
    primitive = json.loads((RESULTS / "primitive.json").read_text())["full_size"]
    readme, page = (ROOT / "README.md").read_text(), (ROOT / "docs" / "quality.md").read_text()
    assert quality["size"] == primitive["size"] == 768
    for run in quality["runs"]:
        psnr = _mean(run, "psnr")
        assert f"**{psnr:.2f}**" in page and " | ".join(f"{row['psnr']:.2f}" for row in run["rows"]) in page
        if run["budget"] == f"{primitive['seconds']} s":  # primitive was measured after 60 s only
            delta = f"**{psnr - primitive['mean']['psnr']:+.2f}**"
            assert f"**{psnr:.2f}**" in readme and delta in readme and delta in page
    assert quality["date"] in page and quality["commit"] in page


def test_model_figures_are_those_of_model_json_and_the_card():
    model = json.loads((RESULTS / "model.json").read_text())
    card = json.loads((ROOT / "triangulate_ai" / "models" / "default.json").read_text())
    readme, page = (ROOT / "README.md").read_text(), (ROOT / "docs" / "model.md").read_text()
    one = model["one_pass"]
    assert f"**{one['psnr']:.2f}** in {one['ms_model']:.0f} ms" in readme
    assert f"**{one['psnr']:.2f} dB** / {one['ssim']:.3f}" in page and f"{one['ms_model_svg']:.1f} with the SVG" in page
    for start in ("model", "quality"):
        fits = model["fits"][start]
        assert " / ".join(f"{fits[b]['mean_psnr']:.2f}" for b in ("2", "5", "15")) in page
    assert f"{card['validation']['psnr']:.2f} dB at the end" in page
    assert model["commit"] in page and model["date"] in page


def test_balancer_costs_are_those_of_balancers_json():
    bench = json.loads((RESULTS / "balancers.json").read_text())
    page = (ROOT / "docs" / "balancing.md").read_text()
    for method, row in bench["results"].items():
        if method != "fixed":
            assert f"{method} {row['over_fixed']:.2f}" in page
    assert bench["commit"] in page and bench["date"] in page


def test_the_structural_study_report_shows_the_statistics_of_its_results_csv():
    import csv

    from triangulate_ai.experiments.statistics import COMPARED, compare

    folder = ROOT / "docs" / "study" / "structural"
    rows = [{**row, "family": row["method"], "grid": ""} for row in csv.DictReader((folder / "results.csv").open())]
    page = (folder / "README.md").read_text()
    assert len(rows) == 264 and all(row["status"] == "ok" for row in rows)
    for baseline in ("fixed", "dominant"):
        for metric, _, higher in COMPARED:
            digits = 4 if metric == "ssim" else 2
            for c in compare(rows, baseline, metric, higher):
                assert f"{c.mean:+.{digits}f} [{c.low:+.{digits}f}, {c.high:+.{digits}f}]" in page, (baseline, c)
