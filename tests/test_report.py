"""Ablation reports: single seeds have no spread, random networks are flagged where shown."""

from __future__ import annotations

import pytest

from triangulate_ai.experiments.report import markdown, random_networks


def _row(method, seed, psnr, lpips, networks="eval.lpips.weights"):
    return {"method": method, "family": method, "grid": "", "image": "a", "seed": seed, "status": "ok",
            "psnr": psnr, "ssim": 0.5, "lpips": lpips, "wall_time_s": 1.0, "collapse": "ok",
            "random_networks": networks, "folder": f"/x/{method}/{seed}"}


def test_a_single_seed_shows_no_spread():
    text = markdown([_row("equal", 0, 20.0, 0.3), _row("gm", 0, 21.5, 0.2)], "equal")
    assert "± 0.00" not in text
    assert "20.00 (n = 1, no spread)" in text
    assert "| gm | 1 | +1.50 | 1/1 | – |" in text  # one image: a difference, no interval, no test


def test_two_seeds_show_mean_and_sample_std():
    text = markdown([_row("equal", 0, 20.0, 0.3), _row("equal", 1, 22.0, 0.3)], "equal")
    assert "21.00 ± 1.41" in text


def test_lpips_from_a_random_network_is_flagged_and_not_ranked():
    rows = [_row("equal", 0, 20.0, 0.3), _row("gm", 0, 21.5, 0.2)]
    text = markdown(rows, "equal")
    assert "LPIPS (random network: not meaningful)" in text
    assert "**0.2000" not in text and "**21.50" in text  # PSNR is ranked, LPIPS is not
    real = [dict(r, random_networks="") for r in rows]
    assert "**0.2000" in markdown(real, "equal") and "not meaningful" not in markdown(real, "equal")


def test_random_loss_networks_are_named_above_the_table():
    rows = [_row("equal", 0, 20.0, 0.3, "loss.terms.vgg.weights;loss.terms.lpips.weights")]
    assert random_networks(rows) == {"metric": [], "terms": ["lpips", "vgg"]}
    assert "loss terms lpips, vgg ran on randomly initialised networks" in markdown(rows, "equal")


def test_balance_shares_and_warning_counts_from_the_run_folders(tmp_path):
    import json

    from triangulate_ai.experiments.report import balance, balance_markdown, plot_weight_trajectories

    rows = []
    for seed, (wa, la, ga) in enumerate([(1.0, 0.2, 2.0), (1.0, 0.6, 6.0)]):
        folder = tmp_path / f"gm{seed}"
        folder.mkdir()
        records = [{"step": 0, "loss/l1": 0.5, "loss/vgg": 1.0, "weight/l1": 1.0, "weight/vgg": 1.0},
                   {"step": 10, "loss/l1": la, "loss/vgg": 0.2, "weight/l1": wa, "weight/vgg": 2.0,
                    "grad_norm/l1": ga, "grad_norm/vgg": 1.0}]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rows.append(dict(_row("gm", seed, 20.0, 0.3, ""), folder=str(folder),
                         warnings="term_dominating;flat_collapse" if seed else "term_dominating"))
    rows.append(dict(_row("gm", 2, 0, 0), status="failed", error="loss term 'vgg' became nan at step 3"))
    entry = balance(rows)["gm"]
    # run 0: w.L = 0.2 and 0.4 -> 1/3, 2/3; run 1: 0.6 and 0.4 -> 0.6, 0.4; mean 0.4667 / 0.5333
    assert [s["l1"] for s in entry["loss"]] == pytest.approx([1 / 3, 0.6])
    # gradient shares: run 0: 2 vs 2 -> 0.5; run 1: 6 vs 2 -> 0.75
    assert [s["l1"] for s in entry["grad"]] == pytest.approx([0.5, 0.75])
    assert entry["warnings"] == {"term_dominating": 2, "flat_collapse": 1} and entry["nan"] == 1
    text = balance_markdown(rows)
    assert "| gm | 0.47 | 0.53 | 0.62 | 0.38 | 1 | 2 | 0 | 0 | 0 | 0 | 0 | 1 |" in text
    plot_weight_trajectories(rows, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 5000


def _study(values: dict[str, list[list[float]]], metric: str = "psnr") -> list[dict]:
    """Rows of methods x images x seeds with the given metric values (values[method][image][seed])."""
    rows = []
    for method, images in values.items():
        for i, seeds in enumerate(images):
            for seed, value in enumerate(seeds):
                rows.append({**_row(method, seed, 20.0, 0.3, ""), "image": f"img{i}", metric: value,
                             "colour_shift": 2.0})
    return rows


def test_methods_are_compared_per_image_with_cis_and_holm_corrected_p_values():
    import math

    from scipy import stats

    from triangulate_ai.experiments.statistics import compare, holm

    base = [[20.0, 22.0], [25.0, 25.0], [18.0, 19.0], [30.0, 31.0]]
    a = [[21.0, 22.0], [25.5, 26.5], [18.5, 19.5], [31.0, 31.0]]  # per image +0.5, +1.0, +0.5, +0.5
    b = [[19.0, 21.0], [25.0, 24.0], [18.5, 18.5], [29.0, 31.0]]  # per image -1.0, -0.5, 0.0, -0.5
    rows = _study({"base": base, "a": a, "b": b})
    found = {c.method: c for c in compare(rows, "base", "psnr", higher_is_better=True)}
    for method, diffs in (("a", [0.5, 1.0, 0.5, 0.5]), ("b", [-1.0, -0.5, 0.0, -0.5])):
        c = found[method]
        half = stats.t.ppf(0.975, 3) * stats.tstd(diffs) / 2
        assert c.images == 4 and c.mean == pytest.approx(sum(diffs) / 4)
        assert (c.low, c.high) == pytest.approx((c.mean - half, c.mean + half))
        assert c.p == pytest.approx(stats.ttest_rel([sum(s) / 2 for s in (a if method == "a" else b)],
                                                    [sum(s) / 2 for s in base]).pvalue)
    assert found["a"].wins == 4 and found["b"].wins == 0
    p = [found["a"].p, found["b"].p]
    low, high = sorted(p)
    assert sorted([found["a"].p_holm, found["b"].p_holm]) == pytest.approx([min(1, 2 * low), max(min(1, 2 * low),
                                                                                                high)])
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    text = markdown(rows, "base")
    assert "the image as the unit" in text and "PSNR (dB) per image, mean over seeds" in text
    assert "| a | 21.50 | 26.00 | 19.00 | 31.00 |" in text


def test_a_lower_colour_shift_counts_as_a_win():
    from triangulate_ai.experiments.statistics import compare

    rows = _study({"base": [[20.0]] * 3, "a": [[20.0]] * 3})
    for row in rows:
        row["colour_shift"] = 3.0 if row["method"] == "base" else 1.0 + 0.1 * int(row["image"][-1])
    (c,) = compare(rows, "base", "colour_shift", higher_is_better=False)
    assert c.wins == 3 and c.mean == pytest.approx(-1.9)


def test_the_report_counts_every_warning_kind_the_monitor_raises():
    import re
    from pathlib import Path

    import triangulate_ai.monitor as monitor

    raised = set(re.findall(r'_warn\(\s*"([a-z_]+)"', Path(monitor.__file__).read_text()))
    assert raised and raised == set(monitor.WARNING_KINDS)
    with pytest.raises(ValueError, match="unknown warning kind"):
        monitor.WarningMonitor(monitor.WarningsConfig(), ["l1"], 1.0)._warn("new_kind", 0, "x")


def test_every_metrics_panel_and_the_contact_sheet_say_when_random_networks_drove_the_fits(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from PIL import Image

    from triangulate_ai.experiments import report

    figures = []
    monkeypatch.setattr(report.plt, "close", lambda fig: figures.append(fig))
    rows = [_row("equal", 0, 20.0, 0.3, "loss.terms.vgg.weights"), _row("gm", 0, 21.0, 0.3, "loss.terms.vgg.weights")]
    for row in rows:
        row["colour_shift"] = 1.0
        Path_ = tmp_path / row["method"]
        Path_.mkdir()
        Image.new("RGB", (8, 8)).save(Path_ / "final.png")
        row["folder"] = str(Path_)
    report.plot_metrics(rows, tmp_path / "m.png")
    report.contact_sheet(rows, tmp_path / "c.png")
    metrics, sheet = figures
    assert all("fits driven by random-network losses" in ax.get_title() for ax in metrics.axes)
    assert "random-network losses" in sheet._suptitle.get_text()
    plt.close("all")


def test_colour_shift_is_the_same_everywhere_for_a_uniform_shift_whatever_the_size():
    import numpy as np

    from triangulate_ai.metrics import colour_shift

    target = np.full((100, 100, 3), 0.4, np.float32)  # 100 is no multiple of the 8-px blocks
    shifted = target + np.array([0.1, 0.0, 0.0], np.float32)
    assert colour_shift(target, target) == 0.0
    assert colour_shift(shifted, target) == pytest.approx(colour_shift(shifted[:8, :8], target[:8, :8]), rel=1e-9)
