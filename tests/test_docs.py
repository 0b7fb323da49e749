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
        assert all(f"{mean:.2f}" in page for mean in run.get("repeat_means", []))  # the spread is shown
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


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else f"{value:.3g} ms"


def render_table_row(row: dict) -> str:
    """docs/performance.md's row of one bench/render.py case."""
    t, f = row["torch"], row["fused"]
    ratio = row["fused_over_torch"]
    large = " large" if row["triangle_size"] != 0.08 else ""
    ref = row["reference"]
    dense = f"{_ms(ref['forward_backward_ms'])}, {ref['peak_mib']:.0f} MiB" if isinstance(ref, dict) \
        else "skipped (> 12 GB)"
    return (f"| {row['image'].split('x')[0]}² / {row['triangles']}{large} "
            f"| {_ms(t['forward_ms'])}, {_ms(t['forward_backward_ms'])}, {t['peak_mib']:.0f} MiB "
            f"| {_ms(f['forward_ms'])}, {_ms(f['forward_backward_ms'])}, {f['peak_mib']:.0f} MiB "
            f"| {ratio['forward_backward_ms']:.3f}, {ratio['peak_mib']:.3f} | {dense} |")


def test_renderer_and_batching_figures_are_those_of_render_json_and_batch_json():
    render = json.loads((RESULTS / "render.json").read_text())
    batch = json.loads((RESULTS / "batch.json").read_text())
    page = (ROOT / "docs" / "performance.md").read_text()
    for row in render["results"]:
        assert render_table_row(row) in page, row["image"]
    fit = render["quickstart_fit"]
    assert (f"| quickstart fit | {fit['torch']['iterations_per_s']:.3g} it/s | {fit['fused']['iterations_per_s']:.3g} "
            f"it/s | {fit['fused_over_torch_rate']:.1f} x the rate | |") in page
    for case in batch["cases"]:
        assert f"{case['ms_per_step']:.2f}" in page, case
        assert case["batch"] == 1 or f"{case['vs_b1']:.2f}x" in page, case
    for bench in (render, batch):
        assert bench["date"] in page and bench["commit"] in page


def test_loss_term_costs_are_those_of_render_json():
    render = json.loads((RESULTS / "render.json").read_text())
    terms = render["loss_terms"]["terms"]
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert f"| {terms['l1']['over_render_step']:.3f} x the render step |" in page
    assert f"| {terms['vgg16 relu1_2..relu4_3']['over_render_step']:.1f} x the render step |" in page
    lpips = terms["lpips vgg"]["over_render_step"], terms["lpips alex"]["over_render_step"]
    assert f"vgg: {lpips[0]:.1f} x, alex: {lpips[1]:.2f} x" in page
    assert f"{render['loss_terms']['render_step_ms']:.1f} ms" in page and render["commit"] in page


def test_perceptual_variants_are_those_of_perceptual_json():
    bench = json.loads((RESULTS / "perceptual.json").read_text())
    page = (ROOT / "docs" / "configuration.md").read_text()
    names = {"default": "default (full size, contiguous)", "resolution 128": "`resolution: 128`",
             "channels_last": "channels_last", "torch.compile": "torch.compile of the VGG features",
             "1 thread": "1 thread instead of 2"}
    for key, row in bench["variants"].items():
        assert f"| {names[key]} | {row['s_per_step']:.2f} | {row['vs_default']:.2f}x" in page, key
    assert bench["date"] in page and bench["commit"] in page


def test_gpu_work_counts_are_those_of_bins_json():
    bench = json.loads((RESULTS / "bins.json").read_text())
    page = (ROOT / "docs" / "gpu.md").read_text()
    for case in bench["cases"]:
        side = case["image"].split("x")[0]
        row = (f"| {case['tile']} | {case['pairs']:,} | {case['pixel_pairs'] / 1e6:.2f} M "
               f"| {case['pairs_per_pixel']:.1f} | {case['deepest_tile']} | {case['checkpoint_rows']:,} |")
        row = row.replace(",", " ")
        assert f"{side}² / {case['triangles']}" in page and row in page, case
    assert bench["date"] in page and bench["commit"] in page
