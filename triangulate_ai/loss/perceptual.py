"""Perceptual loss terms: VGG feature distances (torchvision) and LPIPS (the lpips package).

Both are frozen and shared per (device, dtype) through `networks.shared`; gradients reach the
image only. A mask is honoured by showing the networks the target where the mask is 0, so
masked-out pixels contribute no difference (the mean still runs over the whole image).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, Optional

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from ..section import Section
from .networks import backbone_state, fixed_init, load_into, shared
from .terms import LossTerm, TermConfig, ramp_order

if TYPE_CHECKING:
    import lpips

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_BACKBONES = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}


VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}  # convolutions per block


def vgg_layer_names(arch: str) -> list[str]:
    """Names of torchvision's VGG `features` modules in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for block, convs in enumerate(VGG_BLOCKS[arch], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


class VggTermConfig(TermConfig):
    arch: Literal["vgg16", "vgg19"] = "vgg16"
    layers: list[str] = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    layer_weights: Optional[list[float]] = None
    distance: Literal["l1", "l2"] = "l1"
    weights: str = "imagenet"
    resolution: Optional[int] = Field(None, ge=16)  # longer side the network sees (None: the image's)

    @field_validator("layers")
    @classmethod
    def _known_layers(cls, layers: list[str], info: ValidationInfo) -> list[str]:
        known = vgg_layer_names(info.data.get("arch", "vgg16"))
        unknown = [name for name in layers if name not in known]
        if unknown or not layers:
            raise ValueError(f"layers must be names of {info.data.get('arch', 'vgg16')} layers "
                             f"({known[0]}, {known[1]}, ..., {known[-1]}); unknown: {unknown}")
        return layers

    @field_validator("layer_weights")
    @classmethod
    def _one_weight_per_layer(cls, weights: Optional[list[float]], info: ValidationInfo) -> Optional[list[float]]:
        if weights is not None and len(weights) != len(info.data.get("layers", [])):
            raise ValueError("layer_weights needs one number per entry of layers (or null for all 1)")
        return weights


class LpipsConfig(Section):
    """The LPIPS network (of the loss term and of the `eval.lpips` metric)."""

    net: Literal["vgg", "alex", "squeeze"] = "vgg"
    weights: str = "imagenet"


class LpipsTermConfig(LpipsConfig):
    weight: float = Field(1.0, ge=0)
    start_iter: int = Field(0, ge=0)
    target_iter: int = Field(0, ge=0)
    resolution: Optional[int] = Field(None, ge=16)  # longer side the network sees (None: the image's)

    _ramp_order = field_validator("target_iter")(ramp_order)


def _masked(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return pred if mask is None else pred * mask + target.detach() * (1 - mask)


def network_input(image: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """The image a network sees: resized (antialiased bilinear) so its longer side is
    `resolution` pixels, when that is smaller; perceptual cost falls with the pixel count."""
    height, width = image.shape[-2:]
    if resolution is None or max(height, width) <= resolution:
        return image
    scale = resolution / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


class VGGPerceptual(LossTerm):
    """sum_l w_l * mean |phi_l(pred) - phi_l(target)| (or squared), phi_l VGG features after
    ImageNet normalisation. Only the layers up to the deepest one asked for are built."""

    name = "vgg"
    Options = VggTermConfig

    @classmethod
    def from_config(cls, options: VggTermConfig) -> "VGGPerceptual":
        return cls(options)

    def __init__(self, cfg: VggTermConfig, setting: str = "loss.terms.vgg.weights") -> None:
        names = vgg_layer_names(cfg.arch)
        self.cfg, self.setting = cfg, setting
        self.indices = [names.index(layer) for layer in cfg.layers]
        self.layer_weights = cfg.layer_weights or [1.0] * len(cfg.layers)
        self.depth = max(self.indices) + 1
        self._target: tuple | None = None

    def network(self, device: torch.device, dtype: torch.dtype) -> nn.Sequential:
        key = ("vgg", self.cfg.arch, self.cfg.weights, self.depth)
        return shared(key, device, dtype, self._build)

    def _build(self) -> nn.Sequential:
        with warnings.catch_warnings(), fixed_init():
            warnings.simplefilter("ignore")
            import torchvision  # imported when first built (networks.imagenet_weights says why)

            model = getattr(torchvision.models, self.cfg.arch)(weights=None)
        features = model.features[: self.depth]
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False  # keep pre-activation outputs intact when conv layers are asked for
        state = backbone_state(self.cfg.arch, self.cfg.weights, self.setting)
        if state is not None:
            load_into(features, state, lambda key: f"features.{key}", self.setting)
        return features

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        self.network(device, dtype)

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        net = self.network(image.device, image.dtype)
        mean = image.new_tensor(IMAGENET_MEAN)[:, None, None]
        std = image.new_tensor(IMAGENET_STD)[:, None, None]
        x, wanted, out = (image - mean) / std, set(self.indices), {}
        for i, layer in enumerate(net):
            x = layer(x)
            if i in wanted:
                out[i] = x
        return [out[i] for i in self.indices]

    def _target_features(self, target: torch.Tensor) -> list[torch.Tensor]:
        """The target is fixed during a fit: compute its features once."""
        cached = self._target
        if cached is None or cached[0] is not target or cached[1] != target._version:
            with torch.no_grad():
                self._target = (target, target._version, self.features(network_input(target, self.cfg.resolution)))
        return self._target[2]

    def __call__(self, pred, target, mask=None):
        pred_feats = self.features(network_input(_masked(pred, target, mask), self.cfg.resolution))
        total = pred.new_zeros(pred.shape[0])
        for weight, a, b in zip(self.layer_weights, pred_feats, self._target_features(target)):
            diff = (a - b).flatten(1)
            distance = diff.abs() if self.cfg.distance == "l1" else diff.square()
            total = total + weight * distance.mean(dim=1)
        return total


def build_lpips(net: str, weights: str, setting: str) -> "lpips.LPIPS":
    """lpips.LPIPS with its calibrated linear heads (shipped in the lpips package) on a backbone
    whose weights come from `backbone_state` (so offline runs say exactly what is missing). The
    package is imported here: the config, which reads this module's options, does not need it."""
    import lpips

    with warnings.catch_warnings(), fixed_init():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = backbone_state(LPIPS_BACKBONES[net], weights, setting)
    if state is not None:
        # lpips splits torchvision's `features` into slices that keep the original indices
        load_into(model.net, state, lambda key: "features." + key.split(".", 1)[1], setting)
    return model


def lpips_network(cfg: LpipsConfig, setting: str, device: torch.device, dtype: torch.dtype) -> "lpips.LPIPS":
    return shared(("lpips", cfg.net, cfg.weights), device, dtype, lambda: build_lpips(cfg.net, cfg.weights, setting))


class LPIPSTerm(LossTerm):
    """LPIPS distance (Zhang et al. 2018); images in [0, 1] are mapped to [-1, 1] by lpips."""

    name = "lpips"
    Options = LpipsTermConfig

    @classmethod
    def from_config(cls, options: LpipsTermConfig) -> "LPIPSTerm":
        return cls(options)

    def __init__(self, cfg: LpipsConfig, setting: str = "loss.terms.lpips.weights") -> None:
        self.cfg, self.setting = cfg, setting

    def prepare(self, device: torch.device, dtype: torch.dtype) -> None:
        lpips_network(self.cfg, self.setting, device, dtype)

    def __call__(self, pred, target, mask=None):
        net = lpips_network(self.cfg, self.setting, pred.device, pred.dtype)
        size = self.cfg.resolution
        return net(network_input(_masked(pred, target, mask), size), network_input(target, size),
                   normalize=True).flatten(1).mean(dim=1)
