"""The benchmark scripts still import against the package (a moved function once broke two of
them without any test noticing); their measurements are not run here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_benchmark_script_imports(script):
    assert callable(_load(script).main)


def test_quality_compares_with_primitive_at_the_same_count_at_256_and_the_same_time_at_full_size():
    quality = _load("quality.py")
    images, mean = quality.primitive_figures(256, 100, 15.0)
    assert mean == 22.21 and images["kodim01"]["psnr"] == 21.59
    images, mean = quality.primitive_figures(768, 2000, 60.0)
    assert mean == 22.01 and images["kodim05"] == {"psnr": 19.26, "triangles": 450}
    assert quality.primitive_figures(768, 1000, 30.0) == ({}, None)  # primitive was not run for 30 s
    rows = [{"image": "kodim01", "psnr": 25.27, "ssim": 0.5, "iterations": 10, "loop_s": 60.0}]
    text = quality.table(rows, 2000, "60 s", quality.primitive_figures(768, 2000, 60.0))
    assert "| kodim01 | 25.27 | 0.500 | 20.27 | +5.00 | 10 | 60.0 |" in text
    assert "| **mean** | **25.27** | **0.500** | 20.27 | **+5.00** | | |" in text
