"""ACS convolutions: the paper's equivalence per view, shapes and gradients of ACS ResNets, and 2D weights (medzoo's
own checkpoints included) loading into them tensor for tensor."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medzoo.errors import ConfigError, DataError
from medzoo.zoo import create_model, model_from_checkpoint
from medzoo.zoo.acs import VIEWS, ACSConv, view_channels
from medzoo.zoo.adapt import load_pretrained
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import save_checkpoint

# float64 convolutions that sum the same products: agreement to rounding.
EXACT = {"rtol": 1e-12, "atol": 1e-12}
# float32 models: a few ulps of the activations after a dozen layers.
TOL = {"rtol": 1e-5, "atol": 1e-5}
# (kernel, stride, padding, dilation) of the convs a ResNet has, and a dilated one
CONV_CASES = [(3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1), (1, 2, 0, 1), (3, 1, 2, 2)]
# The paper's views of a (D, H, W) volume, D the slice axis: axial kernels are flat along D, coronal along H,
# sagittal along W; the first third of the output channels is axial.
PAPER_VIEWS = [("axial", 0), ("coronal", 1), ("sagittal", 2)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _acs(in_chans: int = 4, out_chans: int = 8, kernel: int = 3, stride: int = 1, padding: int = 1,
         dilation: int = 1) -> ACSConv:
    conv = ACSConv(in_chans, out_chans, kernel, stride=stride, padding=padding, dilation=dilation, bias=True,
                   dtype=torch.float64)
    with torch.no_grad():
        conv.bias.normal_()
    return conv


def test_output_channels_split_over_the_three_views() -> None:
    assert view_channels(64) == (22, 21, 21)
    assert view_channels(512) == (171, 171, 170)
    assert view_channels(3) == (1, 1, 1)
    assert sum(view_channels(257)) == 257


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), CONV_CASES)
@pytest.mark.parametrize(("view", "flat_axis"), PAPER_VIEWS)
def test_each_view_is_the_2d_conv_on_a_volume_constant_across_it(
    view: str, flat_axis: int, kernel: int, stride: int, padding: int, dilation: int
) -> None:
    """The paper's property: on a volume that does not change along the axis a view's kernels are flat in, that
    view's output channels are the 2D conv of those kernels over the cross-section, at every slice."""
    conv = _acs(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    section = torch.randn(2, 4, 11, 13, dtype=torch.float64)  # unequal sides: a swapped axis would not fit
    volume = section.unsqueeze(2 + flat_axis).expand(*[9 if d == 2 + flat_axis else -1 for d in range(5)])
    group = [name for name, _ in PAPER_VIEWS].index(view)
    first = sum(conv.view_channels[:group])
    channels = slice(first, first + conv.view_channels[group])
    with torch.no_grad():
        out = conv(volume.contiguous())[:, channels]
        expected = F.conv2d(section, conv.weight[channels], conv.bias[channels], stride, padding, dilation)
    slices = out.movedim(2 + flat_axis, 0)
    assert slices.shape[0] == len(range(0, 9, stride))
    for plane in slices:
        torch.testing.assert_close(plane, expected, **EXACT)


def test_an_image_goes_through_the_2d_conv() -> None:
    conv = _acs(kernel=3, stride=2, padding=1)
    image = torch.randn(2, 4, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(conv(image), F.conv2d(image, conv.weight, conv.bias, 2, 1), **EXACT)


def test_only_square_settings_are_accepted() -> None:
    with pytest.raises(ValueError, match="square kernel_size"):
        ACSConv(2, 3, (3, 5))
    with pytest.raises(ValueError, match="square stride"):
        ACSConv(2, 3, 3, stride=(1, 2))
    with pytest.raises(ValueError, match="integer padding"):
        ACSConv(2, 3, 3, padding="same")


# --- ACS ResNets --------------------------------------------------------------------------------------------

def _bn_far_from_identity(model: nn.Module) -> nn.Module:
    """Random batch-norm statistics and head: a fresh model's are the identity and zeros, which prove nothing."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        if getattr(model, "num_classes", 0):
            model.fc.bias.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize(("name", "side", "stem", "layer4_side"),
                         [("resnet18", 16, "small", 2), ("resnet50", 32, "imagenet", 1), ("resnet10", 28, "small", 4)])
def test_acs_resnet_shapes_and_layers(name: str, side: int, stem: str, layer4_side: int) -> None:
    model = create_model(name, in_chans=2, num_classes=3, spatial_dims=3, conv="acs", stem=stem)
    plain_2d = create_model(name, in_chans=2, num_classes=3, stem=stem)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert convs and all(type(m) is ACSConv for m in convs)  # no 3D conv left behind
    # The state dict is the 2D model's: same names, same shapes (2D kernels, 1D norm and head vectors).
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in plain_2d.state_dict().items()}
    volume = torch.randn(2, 2, side, side, side)
    with torch.no_grad():
        features = model.forward_features(volume)
    assert features.shape == (2, model.num_features, *([layer4_side] * 3))
    assert model(volume).shape == (2, 3)
    with pytest.raises(ValueError, match="volumes"):
        model.conv1(torch.randn(2, 2, side))


def test_gradients_reach_every_parameter_and_every_view() -> None:
    model = create_model("resnet18", in_chans=1, num_classes=4, spatial_dims=3, conv="acs", stem="small")
    model(torch.randn(2, 1, 16, 16, 16)).logsumexp(1).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    for name, module in model.named_modules():
        if isinstance(module, ACSConv):
            for view, grad in zip(VIEWS, module.weight.grad.split(module.view_channels)):
                assert grad.abs().sum() > 0, f"{name}: no gradient reaches the {view[0]} kernels"


def _save_2d(model: nn.Module, path: Path) -> Path:
    card = {"arch": model.arch, "in_chans": model.in_chans, "num_classes": model.num_classes, "spatial_dims": 2,
            "model_kwargs": {"stem": model.stem}}
    return save_checkpoint(path, model, card)


def test_a_2d_checkpoint_loads_into_the_acs_model_tensor_for_tensor(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    source = _bn_far_from_identity(create_model("resnet18", in_chans=1, num_classes=4, stem="small"))
    path = _save_2d(source, tmp_path / "2d.safetensors")
    caplog.set_level(logging.INFO, logger="medzoo.zoo.adapt")
    model = create_model("resnet18", spatial_dims=3, conv="acs", pretrained=path).eval()
    assert "adapted: none needed" in caplog.text  # no inflation, no resampling: the 2D tensors as they are
    assert (model.in_chans, model.num_classes, model.stem, model.conv) == (1, 4, "small", "acs")
    loaded, expected = model.state_dict(), source.state_dict()
    assert loaded.keys() == expected.keys()  # nothing missing, nothing unexpected
    for name, tensor in expected.items():
        assert torch.equal(loaded[name], tensor), name
    # The first layer of the 3D model on a depth-constant volume: the axial kernels give the 2D model's conv1 at
    # every slice (in float32, both sum the same products).
    image = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        axial = model.conv1(image.unsqueeze(2).expand(-1, -1, 5, -1, -1))[:, :model.conv1.view_channels[0]]
        for depth in range(5):
            torch.testing.assert_close(axial[:, :, depth], source.conv1(image)[:, :model.conv1.view_channels[0]],
                                       **TOL)
    # ...and with other channels and classes the usual adaptation applies to the 2D tensors.
    adapted = create_model("resnet18", spatial_dims=3, conv="acs", pretrained=path, in_chans=3, num_classes=2)
    torch.testing.assert_close(adapted.conv1.weight.sum(1), source.conv1.weight.sum(1), **TOL)
    assert adapted.fc.out_features == 2


@pytest.mark.parametrize("name", ["breastmnist_resnet18", "adrenalmnist3d_resnet18_2d5"])
def test_the_zoos_2d_checkpoints_load_into_acs_models(name: str) -> None:
    from medzoo.zoo.factory import read_pretrained

    state, card, _ = read_pretrained(name)
    assert card.spatial_dims == 2
    model = create_model(card.arch, spatial_dims=3, conv="acs", pretrained=name)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v.to(model.state_dict()[k].dtype)) for k, v in state.items())
    side = (card.input_size or [28])[0]
    assert model(torch.randn(1, card.in_chans, 8, side, side)).shape == (1, card.num_classes)


def test_an_acs_checkpoint_round_trips_and_serves_a_2d_model(tmp_path: Path) -> None:
    acs = _bn_far_from_identity(create_model("resnet10", in_chans=1, num_classes=3, spatial_dims=3, conv="acs",
                                             stem="small"))
    card = {"arch": "resnet10", "in_chans": 1, "num_classes": 3, "classes": ["a", "b", "c"], "spatial_dims": 3,
            "model_kwargs": {"stem": "small", "conv": "acs"}}
    path = save_checkpoint(tmp_path / "acs.safetensors", acs, card)
    reloaded, read = model_from_checkpoint(path)
    assert read.kernel_dims == 2 and reloaded.conv == "acs"
    volume = torch.randn(2, 1, 12, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(volume), acs(volume), rtol=0, atol=0)
    # The same weights are a 2D model's: an explicit conv wins over the card's.
    flat = create_model("resnet10", pretrained=path, spatial_dims=2, conv="standard")
    assert flat.conv == "standard" and all(torch.equal(flat.state_dict()[k], v) for k, v in acs.state_dict().items())


def test_bad_acs_settings_are_errors() -> None:
    with pytest.raises(ConfigError, match="spatial_dims=3"):
        create_model("resnet18", conv="acs")
    with pytest.raises(ConfigError, match="conv"):
        create_model("resnet18", spatial_dims=3, conv="axial")
    with pytest.raises(DataError, match="model_kwargs.conv"):
        ModelCard.from_dict({"arch": "resnet18", "in_chans": 1, "num_classes": 0, "classes": [], "spatial_dims": 2,
                             "model_kwargs": {"conv": "acs"}})
    # 3D kernels do not go into an ACS model: the message says what to use instead.
    with pytest.raises(ConfigError, match="conv='standard'"):
        load_pretrained(create_model("resnet10", spatial_dims=3, conv="acs", stem="small"),
                        create_model("resnet10", spatial_dims=3, stem="small").state_dict(), None)
