"""Reading target images and writing files so that a crash never leaves half a file."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

Item = TypeVar("Item")


@dataclass
class TargetImage:
    """An image as premultiplied RGB plus alpha, so it can be composited onto any background.

    colour: (H, W, 3) float32 in [0, 1], already multiplied by alpha.
    alpha:  (H, W) float32 in [0, 1], or None for an opaque image.
    """

    path: Path
    colour: np.ndarray
    alpha: np.ndarray | None
    original_size: tuple[int, int]  # (width, height) before any downscale

    @property
    def size(self) -> tuple[int, int]:
        return self.colour.shape[1], self.colour.shape[0]

    def composite(self, background: np.ndarray) -> np.ndarray:
        """(H, W, 3) RGB with the transparent parts showing `background` (3,)."""
        if self.alpha is None:
            return self.colour
        return self.colour + (1.0 - self.alpha[..., None]) * background.astype(np.float32)


def load_image(path: str | Path, max_size: int = 0) -> TargetImage:
    """PNG/JPEG/... in grayscale, RGB or RGBA, 8 or 16 bit, downscaled (Lanczos) so that its
    longer side is at most `max_size` (0 keeps it). Any problem is a UserError naming the path."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image not found: {path}")
    if path.is_dir():
        raise UserError(f"image path is a directory, not a file: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            pixels = _to_float(img)
    except UnidentifiedImageError:
        raise UserError(f"not an image file (Pillow cannot identify it): {path}") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None
    return _target(path, pixels, max_size)


def working_size(path: str | Path, max_size: int = 0) -> tuple[int, int]:
    """(width, height) of an image once downscaled to `max_size` (0 keeps it), as load_image
    would give it, from its header alone; the same one-line errors for what cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}" if not path.exists() else f"image path is a directory: {path}")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        raise UserError(f"not an image file (Pillow cannot identify it): {path}") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None
    scale = max_size / max(width, height) if max_size else 1.0
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1.0 else (width, height)


def _too_large(path: Path, exc: Exception) -> UserError:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" ({int(found[1]):,} pixels)" if found else ""
    return UserError(f"image {path}{size} has more pixels than Pillow decodes ({2 * Image.MAX_IMAGE_PIXELS:,}, its "
                     "guard against decompression bombs); downscale it first")


def image_from_array(array: np.ndarray, max_size: int = 0) -> TargetImage:
    """A target from an (H, W), (H, W, 3) or (H, W, 4) array: uint8/uint16 scaled to [0, 1],
    floats taken as they are (clipped to [0, 1])."""
    pixels = np.asarray(array)
    if pixels.ndim == 2:
        pixels = pixels[..., None].repeat(3, axis=-1)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or 0 in pixels.shape[:2]:
        raise UserError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        pixels = pixels.astype(np.float32) / 65535.0
    elif np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise UserError("the image array holds NaN or infinite values")
        pixels = np.clip(pixels, 0, 1).astype(np.float32)
    else:
        raise UserError(f"an image array must be uint8, uint16 or float, got {pixels.dtype}")
    return _target(Path("<array>"), pixels, max_size)


def _target(path: Path, pixels: np.ndarray, max_size: int) -> TargetImage:
    """Premultiplied colour and alpha, downscaled so the longer side is at most `max_size`."""
    height, width = pixels.shape[:2]
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3]
        colour = pixels[..., :3] * alpha[..., None]
    else:
        alpha, colour = None, pixels
    scale = max_size / max(width, height) if max_size else 1.0
    if scale < 1.0:
        new = (max(1, round(width * scale)), max(1, round(height * scale)))
        colour = np.stack([_resize(colour[..., c], new) for c in range(3)], axis=-1)
        alpha = None if alpha is None else _resize(alpha, new)
    if alpha is not None and alpha.max() <= 0.0:
        raise UserError(f"image {path} is fully transparent: there is nothing to fit")
    if alpha is not None and alpha.min() >= 1.0:
        alpha = None
    return TargetImage(path, np.clip(colour, 0, 1).astype(np.float32),
                       None if alpha is None else np.clip(alpha, 0, 1).astype(np.float32), (width, height))


def _to_float(img: Image.Image) -> np.ndarray:
    """(H, W, 3 or 4) float32 in [0, 1], keeping 16-bit grey precision."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img).astype(np.float32) / 65535.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if img.mode == "F":
        return np.repeat(np.asarray(img, dtype=np.float32)[..., None], 3, axis=-1)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    return np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0


def _resize(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize(size, Image.LANCZOS))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp alone gives 0600


TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # write_atomic's names: .NAME.XXXXXXXX.tmp


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what write_atomic left in `folder` when its process died mid-write; only for a
    folder this process is about to own (a resumed run)."""
    stale = [p for p in folder.iterdir() if p.is_file() and TEMPORARY.match(p.name)] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def clear_outputs(folder: Path, names: tuple[str, ...]) -> None:
    """Delete the files and folders `names` a run writes into `folder` (and write_atomic's
    temporaries), nothing else: to start a run again in its own folder."""
    remove_temporaries(folder)
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see old or new.
    The file gets the user's usual permissions (umask), like any other file of the run."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_json(data: object) -> object:
    """`data` with every NaN or infinite float replaced by None: JSON has no such numbers (Python
    would write the non-standard tokens NaN and Infinity). In our files a null number is one that
    was not finite, such as the infinite PSNR of an exact copy."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def json_text(data: object, indent: int | None = None) -> str:
    """Standard JSON of `data`, non-finite numbers as null (finite_json)."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False)


def write_json(path: str | Path, data: object) -> None:
    write_atomic(path, json_text(data, indent=2) + "\n")


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an (H, W, 3) float image in [0, 1] or a uint8 image."""
    pixels = image if image.dtype == np.uint8 else to_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> None:
    write_atomic(path, png_bytes(image))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def expand_images(items: list[str], option: str = "--image") -> list[Path]:
    """Files as given, folders as the images they hold (sorted), glob patterns as their matches;
    an empty folder or a pattern matching nothing is an error naming `option`."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in Path().glob(item) if p.is_file()) if not path.is_absolute() else \
                sorted(p for p in Path(path.anchor).glob(str(path.relative_to(path.anchor))) if p.is_file())
            if not matches:
                raise UserError(f"{option} {item}: the pattern matches no file")
            found += matches
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UserError(f"{option} {item}: the folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += inside
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def batches_by(items: list[Item], key: Callable[[Item], Hashable], size: int) -> list[list[Item]]:
    """`items` grouped by `key` (those that can share one loop: one canvas size, one method), in
    first-seen order, each group cut into batches of up to `size`."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]
