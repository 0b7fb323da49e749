"""Perceptual terms and metrics: values, gradients, layer selection, and weight loading."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from triangulate_ai.cli import main
from triangulate_ai.loss.perceptual import LpipsConfig, LpipsTermConfig, VggTermConfig
from triangulate_ai.errors import UserError
from triangulate_ai.loss import networks
from triangulate_ai.loss.perceptual import LPIPSTerm, VGGPerceptual, lpips_network
from triangulate_ai.metrics import Evaluator, image_quality

from .conftest import QUICK


@pytest.fixture(autouse=True)
def fresh_networks():
    networks.clear_shared()
    torch.manual_seed(0)
    yield
    networks.clear_shared()


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and downloads that fail as they do without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch"


def _image(seed=0, size=96):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def _blur(image, sigma):
    return torchvision.transforms.functional.gaussian_blur(image, kernel_size=int(6 * sigma) | 1, sigma=sigma)


def _vgg(**kw):
    return VGGPerceptual(VggTermConfig(weights="random", **kw))


def _lpips(net="alex"):
    return LPIPSTerm(LpipsTermConfig(net=net, weights="random"))


@pytest.mark.parametrize("make", [_vgg, lambda: _lpips("alex"), lambda: _lpips("squeeze")],
                         ids=["vgg", "alex", "squeeze"])
def test_identical_zero_and_more_blur_scores_worse(make):
    term = make()
    x = _image()
    assert term(x, x).item() == pytest.approx(0.0, abs=1e-7)
    mild, strong = term(_blur(x, 1.0), x).item(), term(_blur(x, 3.0), x).item()
    assert 0 < mild < strong


@pytest.mark.parametrize("make", [_vgg, _lpips], ids=["vgg", "lpips"])
def test_gradients_reach_the_image_not_the_network(make):
    term = make()
    target = _image(1)
    pred = _image(2).requires_grad_()
    term(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    net = networks._SHARED[next(iter(networks._SHARED))]
    assert not net.training
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_layer_selection_and_weights_combine_as_a_weighted_sum():
    pred, target = _image(3), _image(4)
    one = _vgg(layers=["relu1_2"])(pred, target).item()
    two = _vgg(layers=["relu2_2"])(pred, target).item()
    both = _vgg(layers=["relu1_2", "relu2_2"], layer_weights=[2.0, 0.5])(pred, target).item()
    assert both == pytest.approx(2.0 * one + 0.5 * two, rel=1e-5)
    assert _vgg(layers=["conv1_2"])(pred, target).item() != pytest.approx(one)  # before the ReLU
    squared = _vgg(layers=["relu1_2"], distance="l2")(pred, target).item()
    assert squared != pytest.approx(one)


def test_only_needed_layers_are_built_and_networks_are_shared():
    shallow = _vgg(layers=["relu1_2", "relu2_2"])
    net = shallow.network(torch.device("cpu"), torch.float32)
    assert len(net) == 9  # conv1_1 .. relu2_2
    assert all(not getattr(m, "inplace", False) for m in net)
    again = _vgg(layers=["relu2_2"]).network(torch.device("cpu"), torch.float32)
    assert again is net
    assert shallow.network(torch.device("cpu"), torch.float64) is not net


def test_target_features_are_cached_but_follow_in_place_changes():
    term = _vgg(layers=["relu1_2"])
    pred, target = _image(5), _image(6)
    first = term(pred, target).item()
    assert term(pred, target).item() == first
    target.mul_(0.5)
    assert term(pred, target).item() == pytest.approx(_vgg(layers=["relu1_2"])(pred, target.clone()).item())


def test_mask_hides_pixels_from_the_term():
    pred, target = _image(7), _image(8)
    mask = torch.zeros(1, 1, 96, 96)
    for term in (_vgg(), _lpips()):
        assert term(pred, target, mask).item() == pytest.approx(0.0, abs=1e-7)
    mask[..., :48] = 1
    masked = pred.clone().requires_grad_()
    _vgg()(masked, target, mask).backward()
    assert masked.grad[..., :48].abs().sum() > 0 and masked.grad[..., 48:].abs().sum() == 0


def _write_features(path, arch, value):
    """A state dict with torchvision's key names for the `features` part, every tensor = value."""
    model = getattr(torchvision.models, arch)(weights=None)
    state = {f"features.{k}": torch.full_like(v, value) for k, v in model.features.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_imagenet_weights_load_from_the_torch_hub_cache(offline_torch_home):
    cached = offline_torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    _write_features(cached, "vgg16", 0.25)
    assert networks.weights_file("vgg16") == cached
    term = VGGPerceptual(VggTermConfig(weights="imagenet", layers=["relu1_2"]))
    net = term.network(torch.device("cpu"), torch.float32)
    assert torch.all(net[0].weight == 0.25) and torch.all(net[2].bias == 0.25)


def test_lpips_backbone_loads_from_the_cache_and_keeps_its_linear_heads(offline_torch_home):
    _write_features(offline_torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth", "alexnet", 0.125)
    net = lpips_network(LpipsConfig(net="alex", weights="imagenet"), "eval.lpips.weights",
                        torch.device("cpu"), torch.float32)
    assert torch.all(net.net.slice1[0].weight == 0.125) and torch.all(getattr(net.net.slice5, "10").bias == 0.125)
    shipped_file = __import__("lpips").__path__[0] + "/weights/v0.1/alex.pth"
    shipped = torch.load(shipped_file, map_location="cpu", weights_only=True)
    assert torch.equal(net.lin0.model[1].weight, shipped["lin0.model.1.weight"])


def test_weights_from_a_path(tmp_path):
    path = tmp_path / "mine.pth"
    _write_features(path, "vgg16", 0.5)
    term = VGGPerceptual(VggTermConfig(weights=str(path), layers=["relu1_1"]))
    net = term.network(torch.device("cpu"), torch.float32)
    assert torch.all(net[0].weight == 0.5)
    with pytest.raises(UserError, match="no such weights file"):
        VGGPerceptual(VggTermConfig(weights=str(tmp_path / "nope.pth"))).prepare(torch.device("cpu"), torch.float32)
    torch.save({"something": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="weights do not fit the network"):
        VGGPerceptual(VggTermConfig(weights=str(tmp_path / "wrong.pth"))).prepare(torch.device("cpu"), torch.float32)


def test_missing_weights_message_names_file_folder_and_ways_out(offline_torch_home):
    folder = offline_torch_home / "hub" / "checkpoints"
    with pytest.raises(UserError) as info:
        VGGPerceptual(VggTermConfig(weights="imagenet")).prepare(torch.device("cpu"), torch.float32)
    assert str(info.value) == (
        f"pretrained weights for vgg16 are missing: vgg16-397923af.pth is not in {folder} and could not be "
        f"downloaded (<urlopen error offline>); copy vgg16-397923af.pth into {folder}, or set TORCH_HOME to a "
        "folder whose hub/checkpoints/ holds it, or give a file with loss.terms.vgg.weights=PATH, or use "
        "loss.terms.vgg.weights=random for an offline smoke run (results then are not comparable)")


def test_cli_stops_on_missing_weights_before_writing_anything(offline_torch_home, image_path, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--image", str(image_path), "--out", str(out), *QUICK, "--set", "eval.lpips.weights=imagenet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert err[-1].startswith("error: pretrained weights for alexnet are missing: alexnet-owt-7be5be79.pth")
    assert "eval.lpips.weights=random" in err[-1]


def test_cli_fits_with_all_three_terms_and_flags_random_weights(image_path, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--image", str(image_path), "--out", str(out), *QUICK, "--set", "optim.iterations=12",
            "--set", "loss.terms.vgg={weight: 0.1, weights: random, layers: [relu1_2, relu2_2]}",
            "--set", "loss.terms.lpips={weight: 0.5, net: alex, weights: random}"]
    assert main(args) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all("=random" in line for line in warnings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["perceptual_weights"] == "random"
    assert summary["network_weights"] == {"loss.terms.vgg.weights": "random", "loss.terms.lpips.weights": "random",
                                          "eval.lpips.weights": "random"}
    assert set(summary["final_losses"]) == {"l1", "vgg", "lpips"}
    assert {"psnr", "ssim", "lpips"} <= set(summary) and summary["lpips_meaningful"] is False
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"loss/vgg", "loss/lpips", "weight/vgg", "weight/lpips"} <= set(record)


def test_psnr_ssim_lpips_on_known_images():
    target = np.full((64, 64, 3), 0.5, np.float32)
    noisy = target + np.where(np.indices((64, 64)).sum(0) % 2 == 0, 0.1, -0.1)[..., None].astype(np.float32)
    scores = image_quality(noisy, target)
    assert scores["psnr"] == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert image_quality(target, target)["ssim"] == pytest.approx(1.0)
    evaluator = Evaluator(target, LpipsConfig(net="alex", weights="random"), torch.device("cpu"))
    assert evaluator(target)["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert evaluator(noisy)["lpips"] > 0 and not evaluator.lpips_meaningful


def test_images_too_small_for_a_network_are_refused_with_one_line():
    tiny = np.full((12, 12, 3), 0.5, np.float32)
    with pytest.raises(UserError, match=r"the LPIPS metric \(alex\) cannot score a 12x12 image"):
        Evaluator(tiny, LpipsConfig(net="alex", weights="random"), torch.device("cpu"))


def test_cpu_networks_are_channels_last_and_match_the_default_layout():
    """The layout is a speed choice only: the loss and its gradient agree with a contiguous
    network to float rounding; without oneDNN the default layout is kept."""
    cfg = VggTermConfig(weights="random", layers=["relu1_2", "relu2_2"])
    target, pred = _image(5), _image(6).requires_grad_()
    fast = VGGPerceptual(cfg)
    net = fast.network(torch.device("cpu"), torch.float32)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    loss = fast(pred, target)
    (grad,) = torch.autograd.grad(loss.sum(), pred)
    networks.clear_shared()
    with torch.backends.mkldnn.flags(enabled=False):
        plain = VGGPerceptual(cfg)
        assert plain.network(torch.device("cpu"), torch.float32)[0].weight.is_contiguous()
        want = plain(pred, target)
        (want_grad,) = torch.autograd.grad(want.sum(), pred)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=1e-4, atol=1e-6)
