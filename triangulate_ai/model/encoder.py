"""Encoders: an image in, feature maps at a few strides out, for the triangle head to sample.

`small_cnn` is cheap enough to train on a CPU in minutes; the torchvision resnets take
`imagenet` weights through the same loader as the loss networks (offline it names the missing
file), `random`, or a state-dict PATH.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..loss.networks import backbone_state, load_into
from ..loss.perceptual import IMAGENET_MEAN, IMAGENET_STD
from .config import EncoderConfig

SETTING = "model.encoder.weights"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 convolution, GroupNorm (batch-size independent, the same in training and inference), ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True))


class Encoder(nn.Module, ABC):
    """Normalises images in [0, 1] as ImageNet networks expect and returns feature maps
    (B, channels[i], H / strides[i], W / strides[i]). The first map is the normalised image itself,
    averaged over cells of the first network map's stride: normalisation layers blur absolute
    colour out of learnt features, and the head needs it to colour the triangles."""

    channels: list[int]
    strides: list[int]

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Every group of 3 channels scaled as ImageNet networks expect; the first two groups
        (an image, a drawing) also centred, a third (their difference) is centred already."""
        groups = images.shape[1] // 3
        mean = images.new_tensor([IMAGENET_MEAN if g < 2 else (0.0, 0.0, 0.0) for g in range(groups)]).reshape(-1)
        std = images.new_tensor([IMAGENET_STD] * groups).reshape(-1)
        return (images - mean[:, None, None]) / std[:, None, None]

    @abstractmethod
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The learnt maps of a normalised image."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(images)
        return [nn.functional.avg_pool2d(x, self.strides[1], ceil_mode=True), *self.features(x)]


class SmallCNN(Encoder):
    """Stem and three stride-2 stages of two blocks each: learnt maps at strides 4 and 8."""

    def __init__(self, width: int, inputs: int = 3) -> None:
        super().__init__()
        w = width
        self.stem = _block(inputs, w, 1)
        self.stage2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))
        self.stage4 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1))
        self.stage8 = nn.Sequential(_block(4 * w, 8 * w, 2), _block(8 * w, 8 * w, 1))
        self.channels, self.strides = [inputs, 4 * w, 8 * w], [4, 4, 8]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x4 = self.stage4(self.stage2(self.stem(x)))
        return [x4, self.stage8(x4)]


class ResNetEncoder(Encoder):
    """A torchvision resnet up to layer3: learnt maps of layer2 (stride 8) and layer3 (stride 16)."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision  # imported when a resnet is built: a fit or a small_cnn model does not need it

            net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.channels, self.strides = [3, 128, 256], [8, 8, 16]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x8 = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
        return [x8, self.layer3(x8)]


def build_encoder(cfg: EncoderConfig, load_weights: bool = True, inputs: int = 3) -> Encoder:
    """The encoder of `cfg`, with its starting weights (`load_weights`; not when a model
    checkpoint's weights are about to replace them), reading `inputs` channels (small_cnn)."""
    encoder = SmallCNN(cfg.width, inputs) if cfg.type == "small_cnn" else ResNetEncoder(cfg.type)
    if load_weights and cfg.weights != "random":
        state = backbone_state(cfg.type, cfg.weights, SETTING)  # imagenet (resnets) or a file
        load_into(encoder, state, lambda key: key, SETTING)
    return encoder
