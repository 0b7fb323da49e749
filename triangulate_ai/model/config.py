"""The configuration of a model's training: the fit's config plus `model`, `data` and `train`.

A model is trained with the fit's parts (triangles.count, render, loss, regularizer, modifiers,
schedules, log, eval.lpips), so its config is a fit config with three more sections. Fit keys
that mean nothing to a model (the per-image budget, initialisers, respawn, step checkpoints) are
refused when given (Config.REFUSED), so that no setting is silently ignored. Schedules may count epochs too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..config import Config, ScheduleConfig, Section, adam_betas, load_config

# Fit keys a model's training does not use: setting one is an error (see ModelRunConfig).
FIT_ONLY = {
    "image": "the images come from data.images",
    "optim": "the model's optimiser is train.*; optim.* is the per-image fit's (train.py)",
    "respawn": "respawn moves a fit's triangles; a model predicts them",
    "checkpoint": "a model's training writes a checkpoint every epoch",
    "eval.every": "a model is validated every epoch",
    "log.gif_every": "a model's training writes no progress GIF",
    "render.scale": "a model is trained at data.crop and validated at the pictures' size",
    "render.samples": "a model's training draws one sample per pixel",
    **{f"triangles.{key}": "the model's head places the triangles (model.head)"
       for key in ("init", "model", "size", "colors", "opacity", "structure_uniform", "progressive")},
}


class EncoderConfig(Section):
    """The network that looks at the image. `weights` are its starting weights: `random`,
    `imagenet` (resnets, through torchvision's cache, offline as honest as the loss networks) or
    the path of a state dict of this encoder."""

    type: Literal["small_cnn", "resnet18", "resnet34"] = "small_cnn"
    weights: str = "random"
    width: int = Field(16, ge=4, le=256)  # small_cnn only: channels of the first stage, doubled at each stride

    @model_validator(mode="after")
    def _fits_type(self) -> "EncoderConfig":
        if self.type == "small_cnn" and self.weights == "imagenet":
            raise ValueError("small_cnn has no ImageNet weights: use weights: random or a PATH, or type: resnet18")
        return self


class HeadConfig(Section):
    """The head that turns features into triangles. Sizes are in canvas units (the canvas is 1 x 1):
    every triangle's area is at least 0.9 x min_size^2 of the canvas, and its vertices stay on it."""

    hidden: int = Field(128, ge=8)
    embedding: int = Field(16, ge=0)  # a learnt vector per triangle slot
    min_size: float = Field(0.02, gt=0)
    max_size: float = Field(0.45, gt=0, lt=0.5)
    opacity: float = Field(0.7, gt=0, lt=1)  # opacity the head starts from
    colour: Literal["features", "sampled"] = "features"  # colours from the features at the triangle, or
    # the image's mean under it (sampled at fixed points inside, on a smoothed copy) plus a learnt correction

    @field_validator("max_size")
    @classmethod
    def _above_min(cls, value: float, info: ValidationInfo) -> float:
        if value <= info.data.get("min_size", 0):
            raise ValueError("max_size must be greater than min_size")
        return value


class ModelConfig(Section):
    input_size: int = Field(64, ge=16)  # images are resized to input_size^2 before the encoder
    encoder: EncoderConfig = EncoderConfig()
    head: HeadConfig = HeadConfig()
    refine: int = Field(0, ge=0)  # the last `refine` triangles come from a second stage that sees the first's drawing
    solve: int = Field(0, ge=0)  # in inference: colours solved by least squares at this longer side (px); 0 = off
    mirrors: Literal[1, 2, 4] = 1  # in inference: also predict the image mirrored (left-right, then up-down too)
    # and keep, per image, the prediction whose solved drawing is closest to it (needs solve)

    @model_validator(mode="after")
    def _refiner(self) -> "ModelConfig":
        if self.refine and self.encoder.type != "small_cnn":
            raise ValueError("refine needs encoder type small_cnn (its second stage reads 9 channels)")
        if self.mirrors > 1 and not self.solve:
            raise ValueError("mirrors > 1 needs solve > 0 (mirrored predictions are compared by their solved error)")
        return self


class DataConfig(Section):
    images: list[str] = []  # files, folders, glob patterns; --data sets it
    val_images: list[str] = []  # validation pictures; none: a val_share of the images' pictures is held out
    max_size: int = Field(256, ge=0)  # images are first downscaled (Lanczos) to this longer side; 0 keeps them
    crop: int = Field(64, ge=8)  # side of the square crops trained on (and validated on, with val: crops)
    scale: list[float] = [0.08, 0.4]  # share of the image's area a crop covers before its resize to `crop`
    ratio: list[float] = [1.0, 1.0]  # width / height of the cropped region before its resize to a square
    val: Literal["crops", "whole"] = "crops"  # validate on val_crops fixed crops of each image, or on each whole
    hflip: bool = True
    vflip: bool = False
    val_share: float = Field(0.25, gt=0, lt=1)  # share of the source images held out for validation
    val_crops: int = Field(8, ge=1)  # fixed crops per validation image
    crops_per_image: int = Field(64, ge=1)  # training crops per image and epoch
    workers: int = Field(0, ge=0)  # DataLoader worker processes
    same_source: float = Field(0.05, ge=0)  # images whose 16x16 thumbnails differ by less (RMS) are one source

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: list[float]) -> list[float]:
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError("scale must be [low, high] with 0 < low <= high <= 1")
        return scale

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, ratio: list[float]) -> list[float]:
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError("ratio must be [low, high] with 0 < low <= high")
        return ratio


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)  # AdamW learning rate of the network; schedulable as train.lr
    weight_decay: float = Field(0.0, ge=0)
    betas: list[float] = [0.9, 0.999]
    grad_clip: Optional[float] = Field(1.0, gt=0)  # largest gradient norm of a step; null = no clipping

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        return adam_betas(betas)


class ModelScheduleConfig(ScheduleConfig):
    """A fit's schedule, plus `unit: epochs` (epochs done, fractional). `unit: fraction` is the
    share of all training steps (epochs x steps per epoch), `unit: steps` counts optimiser steps."""

    unit: Literal["steps", "fraction", "epochs"] = "steps"


class ModelRunConfig(Config):
    REFUSED: ClassVar[dict[str, str]] = {key: f"is a setting of per-image fits, not of model training: {why}"
                                         for key, why in FIT_ONLY.items()}

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    schedules: dict[str, ModelScheduleConfig] = {}

    @model_validator(mode="after")
    def _stages(self) -> "ModelRunConfig":
        if self.model.refine >= self.triangles.count:
            raise ValueError(f"model.refine ({self.model.refine}) must be less than triangles.count "
                             f"({self.triangles.count}): the first stage needs triangles too")
        return self

    def dump(self) -> dict:
        """Every value model training uses (the fit-only keys left out, so the dump loads again)."""
        data = super().dump()
        for dotted in FIT_ONLY:
            section, _, key = dotted.partition(".")
            if key:
                data[section].pop(key)
            else:
                data.pop(section)
        return data


def load_model_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                      values: dict[str, Any] | None = None, values_source: str = "command line") -> ModelRunConfig:
    """A model training config, layered and validated as fit configs are (one-line errors)."""
    return load_config(path, overrides, values, values_source, schema=ModelRunConfig)
