"""Pretrained backbones for perceptual losses and metrics: loading, freezing, sharing.

Weights are `imagenet` (torchvision's weights API and its cache in
`torch.hub.get_dir()/checkpoints`), `random` (offline smoke runs; recorded as such), or a path to
a state-dict file. A network is built once per (kind, weights, device, dtype) and shared between
loss terms and metrics.
"""

from __future__ import annotations

import pickle
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..checkpoints import shorten
from ..errors import UserError

# torchvision architecture -> the name of its ImageNet weights in torchvision.models (resnets: model encoders)
IMAGENET_WEIGHTS = {"vgg16": "VGG16_Weights", "vgg19": "VGG19_Weights", "alexnet": "AlexNet_Weights",
                    "squeezenet1_1": "SqueezeNet1_1_Weights", "resnet18": "ResNet18_Weights",
                    "resnet34": "ResNet34_Weights"}


def imagenet_weights(arch: str):
    """torchvision's ImageNet weights entry of `arch`. torchvision is imported here, when a
    network is first built: a fit without one (L1, L2, SSIM) starts a second sooner."""
    import torchvision

    return getattr(torchvision.models, IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1

_SHARED: dict[tuple, nn.Module] = {}
RANDOM_WEIGHTS_SEED = 0


@contextmanager
def fixed_init():
    """Build networks from a fixed RNG state, leaving the global one untouched: `random` weights
    are then the same in every run, and networks of different depth share their first layers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        yield


def weights_file(arch: str) -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of `arch`."""
    url = imagenet_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def backbone_state(arch: str, weights: str, setting: str) -> dict[str, torch.Tensor] | None:
    """State dict of a torchvision `arch` for a weights setting; None for `random`.

    `setting` is the config key, named in errors (e.g. loss.terms.vgg.weights)."""
    if weights == "random":
        return None
    if weights == "imagenet":
        try:
            return imagenet_weights(arch).get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # offline, refused, or a broken partial file
            path = weights_file(arch)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(
                f"pretrained weights for {arch} are missing: {path.name} is not in {path.parent} and could "
                f"not be downloaded ({reason}); copy {path.name} into {path.parent}, or set TORCH_HOME to a "
                f"folder whose hub/checkpoints/ holds it, or give a file with {setting}=PATH, or use "
                f"{setting}=random for an offline smoke run (results then are not comparable)") from None
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"{setting} = {weights!r}: no such weights file (expected imagenet, random or a path)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message is long and suggests weights_only=False: never here
        state = None
    except Exception as exc:  # corrupt, truncated, not a torch file
        raise UserError(f"{setting} = {weights!r}: cannot load it as a state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise UserError(f"{setting} = {weights!r}: refused: the file is not a state dict of tensors (loading "
                        "its Python objects could run code from it)")
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], rename: Callable[[str], str], source: str) -> None:
    """Copy `state[rename(key)]` into every parameter/buffer of `module`; all must be present."""
    own = module.state_dict()
    try:
        module.load_state_dict({key: state[rename(key)] for key in own})
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"{source}: weights do not fit the network: {shorten(str(exc))}") from None


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients: gradients flow to the image only."""
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def shared(key: tuple, device: torch.device, dtype: torch.dtype, build: Callable[[], nn.Module]) -> nn.Module:
    """The network for `key` on (device, dtype), built by `build` on first use. On the CPU its
    convolution weights are stored channels-last, so oneDNN runs the convolutions in that layout
    (forward+backward of VGG16 + LPIPS 13% faster on 2 cores, bench/perceptual.py; same values up
    to float rounding); GPUs, and CPUs with oneDNN switched off (whose fallback convolutions
    then round differently per batch size), keep the default layout."""
    onednn = torch.device(device).type == "cpu" and torch.backends.mkldnn.is_available() and \
        torch.backends.mkldnn.enabled
    layout = torch.channels_last if onednn else torch.contiguous_format
    full_key = (*key, str(device), dtype, layout)
    if full_key not in _SHARED:
        _SHARED[full_key] = freeze(build()).to(device=device, dtype=dtype, memory_format=layout)
    return _SHARED[full_key]


def clear_shared() -> None:
    """Forget every shared network (tests, or to free memory)."""
    _SHARED.clear()
