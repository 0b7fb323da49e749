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
    assert "20.00 (n = 1, no spread)" in text and "+1.50 (n = 1, no spread)" in text


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
    assert "| gm | 0.47 | 0.53 | 0.62 | 0.38 | 1 | 2 | 0 | 0 | 0 | 0 | 1 |" in text
    plot_weight_trajectories(rows, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 5000
