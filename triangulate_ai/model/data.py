"""Training data: images from folders, grouped by source, split, cropped.

The split is by source image, never by crop: crops of one picture on both sides would let the
validation score reward memorising it. A source is found by content, not by name: images whose
16x16 grey thumbnails nearly agree (the same picture saved at another size, say) are one source
and land on the same side.

Every crop is a function of (seed, epoch, index) alone, whichever process draws it, so a resumed
training sees exactly the crops an uninterrupted one sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import UserError
from ..init import resolve_background
from ..io import expand_images, load_image
from .config import DataConfig

if TYPE_CHECKING:
    from torchvision.transforms import v2

THUMBNAIL = 16


@dataclass
class Source:
    path: Path
    image: torch.Tensor  # (3, H, W) float in [0, 1], transparency composited over the mean colour


@dataclass
class Split:
    train: list[Source]
    val: list[Source]

    def names(self) -> dict[str, list[str]]:
        return {"train": [str(s.path) for s in self.train], "val": [str(s.path) for s in self.val]}


def load_sources(cfg: DataConfig, key: str = "images") -> list[Source]:
    """Every image of data.images (or data.val_images), read and checked before anything is
    trained (UserErrors)."""
    if not getattr(cfg, key):
        raise UserError("no training images: set data.images in the config or pass --data PATH ...")
    sources = []
    for path in expand_images(getattr(cfg, key), option=f"data.{key}:"):
        target = load_image(path, cfg.max_size)
        colour = torch.from_numpy(target.colour).permute(2, 0, 1)[None]
        alpha = None if target.alpha is None else torch.from_numpy(target.alpha)[None, None]
        background = resolve_background("mean", colour, alpha)[0].numpy()
        image = torch.from_numpy(np.ascontiguousarray(target.composite(background))).permute(2, 0, 1)
        sources.append(Source(path, image.contiguous()))
    return sources


def thumbnail(image: torch.Tensor) -> np.ndarray:
    """16x16 grey thumbnail (area average) of a (3, H, W) image."""
    grey = (image * image.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0).numpy()
    return np.asarray(Image.fromarray(grey.astype(np.float32), mode="F").resize((THUMBNAIL, THUMBNAIL), Image.BOX))


def group_sources(sources: list[Source], threshold: float) -> list[list[int]]:
    """Indices of the sources grouped by picture: thumbnails closer than `threshold` (RMS) and
    aspect ratios within 5% join one group (transitively). Groups in order of first member."""
    thumbs = np.stack([thumbnail(s.image).ravel() for s in sources])
    aspects = np.log([s.image.shape[2] / s.image.shape[1] for s in sources])
    parent = list(range(len(sources)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    distance = np.sqrt(((thumbs[:, None, :] - thumbs[None, :, :]) ** 2).mean(axis=-1))
    for i in range(len(sources)):
        for j in range(i + 1, len(sources)):
            if distance[i, j] < threshold and abs(aspects[i] - aspects[j]) < 0.05:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(sources)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def data_split(cfg: DataConfig, seed: int) -> Split:
    """The training and validation pictures: data.images and data.val_images when both are given
    (a picture on both sides is an error), else data.images split by split_sources."""
    if not cfg.val_images:
        return split_sources(load_sources(cfg), cfg, seed)
    train, val = load_sources(cfg), load_sources(cfg, "val_images")
    for group in group_sources(train + val, cfg.same_source):
        sides = {i < len(train) for i in group}
        if len(sides) == 2:
            both = [(train + val)[i].path for i in group]
            raise UserError(f"data.val_images: {both[-1]} is the same picture as the training image {both[0]}")
    return Split(train, val)


def split_sources(sources: list[Source], cfg: DataConfig, seed: int) -> Split:
    """Whole groups to validation (a `val_share` of the groups, at least one) and the rest to
    training, drawn with `seed`. A held-out picture is validated once: the first file of its
    group stands for it (the others are left out, so no picture weighs double in the scores)."""
    groups = group_sources(sources, cfg.same_source)
    if len(groups) < 2:
        raise UserError(f"data.images: {len(sources)} image(s) of {len(groups)} distinct picture(s); a train/val "
                        "split by source needs at least 2 distinct pictures")
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(max(1, round(cfg.val_share * len(groups))), len(groups) - 1)
    val = sorted(groups[g][0] for g in order[:held])
    train = sorted(i for g in order[held:] for i in groups[g])
    return Split([sources[i] for i in train], [sources[i] for i in val])


def _crop_transform(cfg: DataConfig, flips: bool) -> "v2.Compose":
    """A random region (a `scale` share of the area, a `ratio` aspect) resized to a square: a
    squashed region is still a picture for triangles, which any affine map keeps triangles."""
    from torchvision.transforms import v2  # imported for training: loading a model for a fit does not need it

    steps = [v2.RandomResizedCrop(cfg.crop, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), antialias=True)]
    if flips and cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if flips and cfg.vflip:
        steps.append(v2.RandomVerticalFlip())
    return v2.Compose(steps)


def _seeded_crop(transform: "v2.Compose", image: torch.Tensor, *key: int) -> torch.Tensor:
    """The transform's crop of `image` with its random draws seeded by `key` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hash(key) % (2**63))
        return transform(image).clamp(0, 1)


class TrainCrops(Dataset):
    """`crops_per_image` random crops (random resized square crops, flips) of every training
    image per epoch; item i of epoch e depends on (seed, e, i) only."""

    def __init__(self, sources: list[Source], cfg: DataConfig, seed: int) -> None:
        self.images = [s.image for s in sources]
        self.per_image = cfg.crops_per_image
        self.transform = _crop_transform(cfg, flips=True)
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.images) * self.per_image

    def __getitem__(self, index: int) -> torch.Tensor:
        return _seeded_crop(self.transform, self.images[index // self.per_image], self.seed, self.epoch, index)


def epoch_batches(size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's shuffled batches of dataset indices (the last, incomplete one dropped)."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i:i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]


def validation_images(sources: list[Source], cfg: DataConfig, seed: int) -> list[torch.Tensor]:
    """What every epoch validates on, (3, H, W) each: the whole images (data.val: whole), or
    `val_crops` fixed crops of each (no flips), the same in every epoch and run with this seed."""
    if cfg.val == "whole":
        return [s.image for s in sources]
    transform = _crop_transform(cfg, flips=False)
    return [_seeded_crop(transform, s.image, seed, -1, i, k) for i, s in enumerate(sources) for k in range(cfg.val_crops)]
