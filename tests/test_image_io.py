"""Image input: formats, bit depths, alpha, downscaling, and bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from triangulate_ai.cli import main
from triangulate_ai.errors import UserError
from triangulate_ai.io import load_image

from .conftest import smooth_image


def test_rgb_png_and_jpeg(tmp_path):
    pixels = smooth_image(20, 30)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    png = load_image(tmp_path / "a.png")
    assert png.alpha is None and png.size == (30, 20)
    assert np.allclose(png.colour, pixels / 255.0, atol=1e-6)
    jpg = load_image(tmp_path / "a.jpg")
    assert np.abs(jpg.colour - pixels / 255.0).mean() < 0.03


def test_grayscale_8_and_16_bit(tmp_path):
    grey16 = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    Image.fromarray((grey16 // 257).astype(np.uint8), mode="L").save(tmp_path / "g8.png")
    g16 = load_image(tmp_path / "g16.png")
    assert g16.colour.shape == (16, 24, 3)
    assert np.allclose(g16.colour[..., 1], grey16 / 65535.0, atol=1e-6)  # 16-bit precision kept
    g8 = load_image(tmp_path / "g8.png")
    assert np.allclose(g8.colour, g16.colour, atol=1 / 255)


def test_rgba_is_premultiplied_and_composited(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :4, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.alpha is not None and img.alpha[:, :4].min() == 1 and img.alpha[:, 4:].max() == 0
    composite = img.composite(np.array([0.0, 0.0, 1.0]))
    assert np.allclose(composite[:, :4], [1, 0, 0]) and np.allclose(composite[:, 4:], [0, 0, 1])


def test_opaque_rgba_has_no_mask(tmp_path):
    rgba = np.full((8, 8, 4), 255, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").alpha is None


def test_max_size_downscales_longer_side(tmp_path):
    Image.fromarray(smooth_image(60, 90)).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png", max_size=45)
    assert img.size == (45, 30) and img.original_size == (90, 60)
    assert load_image(tmp_path / "a.png", max_size=200).size == (90, 60)  # never upscaled


def test_bad_images_are_named(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(smooth_image()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cases = {
        tmp_path / "missing.png": "image not found",
        tmp_path: "is a directory",
        tmp_path / "text.png": "not an image file",
        tmp_path / "cut.png": "cannot read image",
    }
    for path, fragment in cases.items():
        with pytest.raises(UserError) as info:
            load_image(path)
        assert fragment in str(info.value) and str(path) in str(info.value)


def test_cli_bad_image_creates_nothing(tmp_path, capsys):
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "run"
    assert main(["--image", str(tmp_path / "cut.jpg"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path / "cut.jpg") in err and "\n" not in err
    assert not out.exists()
