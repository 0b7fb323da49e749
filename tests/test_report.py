"""Ablation reports: single seeds have no spread, random networks are flagged where shown."""

from __future__ import annotations

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
