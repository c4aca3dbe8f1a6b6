"""Weights from outside the zoo: torchvision, timm and MedicalNet ResNet state dicts, built here from their
documented tensor names (torchvision and timm cannot be installed on a CPU-only test machine), give in medzoo the
output of the source network, computed by a reference forward pass written from the sources' definitions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import ResNet as MonaiResNet
from monai.networks.nets.resnet import ResNetBlock
from safetensors.torch import save_file

from medzoo.errors import DataError
from medzoo.zoo import create_model
from medzoo.zoo.resnet import ZeroPadShortcut

# depth -> (blocks per stage, bottleneck?), as torchvision, timm and MedicalNet define them
DEPTHS = {10: ((1, 1, 1, 1), False), 18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False),
          50: ((3, 4, 6, 3), True)}
STAGE_PLANES = (64, 128, 256, 512)
BN_STATS = ("weight", "bias", "running_mean", "running_var")
# float64 on both sides (the weights as float32 files hold them); the two sum the same products in another order.
TOL = {"rtol": 1e-9, "atol": 1e-9}
# An adapted first conv is resampled in float64 and stored in the model's float32 before the model becomes float64:
# agreement to float32 rounding.
ADAPTED_TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- the sources' layouts, from their documented names ----------------------------------------------------

def documented_resnet(depth: int, *, spatial_dims: int = 2, in_chans: int = 3, num_classes: int = 1000,
                      zero_pad_shortcut: bool = False, batches_tracked: bool = True,
                      width: float = 1.0) -> dict[str, torch.Tensor]:
    """A random state dict with torchvision's / timm's ResNet tensor names: conv1, bn1, layer{s}.{b}.conv{i},
    layer{s}.{b}.bn{i}, layer{s}.0.downsample.0 (1x1 conv) / .1 (norm), fc; 3D kernels for MedicalNet, which has
    no fc and (ResNet-18/34) no downsample tensors. torchvision's released files predate num_batches_tracked."""
    blocks, bottleneck = DEPTHS[depth]
    expansion = 4 if bottleneck else 1
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        fan_in = inp * k**spatial_dims
        state[f"{name}.weight"] = torch.randn(out, inp, *([k] * spatial_dims), dtype=torch.float64) * (2 / fan_in) ** 0.5

    def bn(name: str, chans: int) -> None:
        state[f"{name}.weight"] = torch.rand(chans, dtype=torch.float64) * 0.5 + 0.5
        state[f"{name}.bias"] = torch.randn(chans, dtype=torch.float64) * 0.1
        state[f"{name}.running_mean"] = torch.randn(chans, dtype=torch.float64) * 0.1
        state[f"{name}.running_var"] = torch.rand(chans, dtype=torch.float64) * 1.5 + 0.5
        if batches_tracked:
            state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    planes = [int(p * width) for p in STAGE_PLANES]
    conv("conv1", planes[0], in_chans, 7)
    bn("bn1", planes[0])
    inplanes = planes[0]
    for stage, (count, mid) in enumerate(zip(blocks, planes), start=1):
        for block in range(count):
            name = f"layer{stage}.{block}"
            if bottleneck:
                conv(f"{name}.conv1", mid, inplanes, 1)
                conv(f"{name}.conv2", mid, mid, 3)
                conv(f"{name}.conv3", mid * expansion, mid, 1)
                for i, chans in enumerate((mid, mid, mid * expansion), start=1):
                    bn(f"{name}.bn{i}", chans)
            else:
                conv(f"{name}.conv1", mid, inplanes, 3)
                conv(f"{name}.conv2", mid, mid, 3)
                bn(f"{name}.bn1", mid)
                bn(f"{name}.bn2", mid)
            changes_shape = block == 0 and (stage > 1 or inplanes != mid * expansion)
            if changes_shape and not zero_pad_shortcut:
                conv(f"{name}.downsample.0", mid * expansion, inplanes, 1)
                bn(f"{name}.downsample.1", mid * expansion)
            inplanes = mid * expansion
    if num_classes:
        state["fc.weight"] = torch.randn(num_classes, inplanes, dtype=torch.float64) * inplanes**-0.5
        state["fc.bias"] = torch.randn(num_classes, dtype=torch.float64) * 0.1
    return state


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, depth: int) -> torch.Tensor:
    """The sources' ResNet, written from their definitions: 7x7 stride-2 stem + 3x3 stride-2 max-pool; basic blocks
    stride in conv1, bottlenecks in the 3x3 conv2 (torchvision's "v1.5", which timm and MedicalNet share); shortcut
    a 1x1 strided conv + norm where one is stored, else MedicalNet's 1-wide strided average pool padded with zero
    channels; global average pool; fc when there is one (MedicalNet: the pooled features)."""
    blocks, bottleneck = DEPTHS[depth]
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    max_pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    avg_pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        mean, var, weight, bias = (state[f"{name}.{s}"] for s in ("running_mean", "running_var", "weight", "bias"))
        return F.batch_norm(t, mean, var, weight, bias, training=False, eps=1e-5)

    h = F.relu(bn(conv(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    h = max_pool(h, kernel_size=3, stride=2, padding=1)
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            name, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            if bottleneck:
                out = F.relu(bn(conv(h, state[f"{name}.conv1.weight"]), f"{name}.bn1"))
                out = F.relu(bn(conv(out, state[f"{name}.conv2.weight"], stride=stride, padding=1), f"{name}.bn2"))
                out = bn(conv(out, state[f"{name}.conv3.weight"]), f"{name}.bn3")
            else:
                out = F.relu(bn(conv(h, state[f"{name}.conv1.weight"], stride=stride, padding=1), f"{name}.bn1"))
                out = bn(conv(out, state[f"{name}.conv2.weight"], padding=1), f"{name}.bn2")
            if f"{name}.downsample.0.weight" in state:
                shortcut = bn(conv(h, state[f"{name}.downsample.0.weight"], stride=stride), f"{name}.downsample.1")
            elif out.shape != h.shape:
                shortcut = avg_pool(h, kernel_size=1, stride=stride)
                pad = torch.zeros(out.shape[0], out.shape[1] - shortcut.shape[1], *shortcut.shape[2:], dtype=h.dtype)
                shortcut = torch.cat([shortcut, pad], dim=1)
            else:
                shortcut = h
            h = F.relu(out + shortcut)
    pooled = h.mean(dim=tuple(range(2, h.ndim)))
    return F.linear(pooled, state["fc.weight"], state["fc.bias"]) if "fc.weight" in state else pooled


def _medzoo(name: str, **kwargs) -> torch.nn.Module:
    return create_model(name, **kwargs).double().eval()


def _replicated(x: torch.Tensor, chans: int) -> torch.Tensor:
    return x.expand(-1, chans, *x.shape[2:])


# --- the layouts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_the_documented_names_are_medzoos_names(depth: int) -> None:
    documented = documented_resnet(depth, width=0.25)
    model = create_model(f"resnet{depth}", width=0.25)
    assert {k: v.shape for k, v in documented.items()} == {k: v.shape for k, v in model.state_dict().items()}


# --- torchvision and timm ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "depth", "filename"), [
    ("torchvision", 18, "resnet18-f37072fd.pth"),  # torch.save'd, no num_batches_tracked
    ("timm", 50, "model.safetensors"),  # as hf-hub:timm/resnet50.a1_in1k holds it
])
def test_torchvision_and_timm_weights_give_the_source_output(tmp_path: Path, source: str, depth: int,
                                                               filename: str) -> None:
    state = documented_resnet(depth, batches_tracked=source == "timm")
    path = tmp_path / filename
    if path.suffix == ".safetensors":
        save_file({k: v.float() for k, v in state.items()}, str(path))
    else:
        torch.save({k: v.float() for k, v in state.items()}, path)
    state = {k: v.float().double() for k, v in state.items()}  # the file holds float32, as published weights do
    model = _medzoo(f"resnet{depth}", pretrained=path)  # everything else from the tensors
    assert (model.in_chans, model.num_classes, model.spatial_dims, model.stem) == (3, 1000, 2, "imagenet")
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(state, x, depth), **TOL)


@pytest.mark.parametrize("in_chans", [1, 28])
def test_imagenet_weights_adapt_to_other_channels_and_classes(tmp_path: Path, in_chans: int,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    state = {k: v.float() for k, v in documented_resnet(18).items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    state = {k: v.double() for k, v in state.items()}
    caplog.set_level(logging.INFO)
    model = _medzoo("resnet18", pretrained=path, in_chans=in_chans, num_classes=4)
    assert f"conv1: channels 3 -> {in_chans}" in caplog.text and "fc: new head 1000 -> 4 classes" in caplog.text
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        # The adapted first conv keeps each filter's sum over channels: on a channel-replicated image the features
        # are the source's on the same image in RGB; the head is new.
        features = model.forward_head(model.forward_features(_replicated(x, in_chans)), pre_logits=True)
        torch.testing.assert_close(features, reference_forward({k: v for k, v in state.items() if "fc" not in k},
                                                               _replicated(x, 3), 18), **ADAPTED_TOL)
    assert model.fc.out_features == 4 and torch.equal(model.fc.bias, torch.zeros(4, dtype=torch.float64))


# --- MedicalNet ----------------------------------------------------------------------------------------------

def _medicalnet_file(tmp_path: Path, depth: int, with_segmentation_head: bool) -> tuple[Path, dict]:
    """A MedicalNet checkpoint as torch.save wrote it: {"state_dict": {"module.<name>": ...}}, 1 input channel,
    3D kernels, no fc; ResNet-18/34 with the zero-padding shortcut; the original release's conv_seg decoder."""
    state = documented_resnet(depth, spatial_dims=3, in_chans=1, num_classes=0, zero_pad_shortcut=depth in (18, 34),
                              batches_tracked=False)
    state = {k: v.float().double() for k, v in state.items()}  # the file holds float32, as published weights do
    saved = {f"module.{k}": v.float() for k, v in state.items()}
    if with_segmentation_head:
        head_in = 512 * (4 if DEPTHS[depth][1] else 1)
        saved |= {"module.conv_seg.0.weight": torch.randn(head_in, 32, 2, 2, 2, dtype=torch.float64),
                  "module.conv_seg.0.bias": torch.zeros(32, dtype=torch.float64),
                  "module.conv_seg.6.weight": torch.randn(2, 32, 1, 1, 1, dtype=torch.float64)}
    path = tmp_path / f"resnet_{depth}_23dataset.pth"
    torch.save({"state_dict": saved}, path)
    return path, state


@pytest.mark.parametrize("depth", [10, 18])
def test_medicalnet_weights_give_the_source_output(tmp_path: Path, depth: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path, state = _medicalnet_file(tmp_path, depth, with_segmentation_head=True)
    caplog.set_level(logging.INFO)
    model = _medzoo(f"resnet{depth}", pretrained=path)
    assert "dropped 3 tensors of a segmentation head" in caplog.text
    assert (model.in_chans, model.num_classes, model.spatial_dims) == (1, 0, 3)
    assert model.shortcut == ("zero_pad" if depth == 18 else "projection")
    volume = torch.randn(2, 1, 32, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model(volume)
        torch.testing.assert_close(out, reference_forward(state, volume, depth), **TOL)
        # MONAI's own MedicalNet model, loaded MONAI's way (strip "module.", strict), with the strided stem.
        monai = MonaiResNet(ResNetBlock, list(DEPTHS[depth][0]), list(STAGE_PLANES), spatial_dims=3,
                            n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="A" if depth == 18
                            else "B", bias_downsample=False, feed_forward=False).double().eval()
        monai.load_state_dict(state, strict=False)  # strict but for num_batches_tracked, absent from the file
        assert set(monai.state_dict()) - set(state) == {k for k in monai.state_dict() if "num_batches" in k}
        torch.testing.assert_close(out, monai(volume), **TOL)


def test_medicalnet_weights_adapt_to_two_channels_and_a_head(tmp_path: Path) -> None:
    path, state = _medicalnet_file(tmp_path, 10, with_segmentation_head=False)
    model = _medzoo("resnet10", pretrained=path, in_chans=2, num_classes=3)
    volume = torch.randn(1, 1, 32, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(_replicated(volume, 2)), pre_logits=True)
        torch.testing.assert_close(features, reference_forward(state, volume, 10), **ADAPTED_TOL)
    assert model(_replicated(volume, 2)).shape == (1, 3)


def test_the_zero_pad_shortcut_passes_gradients() -> None:
    # MONAI's version pads `out.data`, which cuts the shortcut out of the backward pass.
    x = torch.randn(2, 4, 6, 6, 6, requires_grad=True)
    out = ZeroPadShortcut(planes=8, stride=2)(x)
    assert out.shape == (2, 8, 3, 3, 3) and torch.equal(out[:, :4], x[:, :, ::2, ::2, ::2])
    out.sum().backward()
    assert torch.equal(x.grad[:, :, ::2, ::2, ::2], torch.ones(2, 4, 3, 3, 3))


# --- what is not recognised ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("tensors", "named"), [
    # timm's resnet50d: a deep stem (conv1.0/.1/.3) and an average-pooled shortcut (downsample.1 is the conv)
    ({"conv1.0.weight": torch.zeros(32, 3, 3, 3), "conv1.1.weight": torch.zeros(32),
      "layer1.0.downsample.2.weight": torch.zeros(256)}, r"conv1\.0\.weight, conv1\.1\.weight, layer1\.0\.downsample"),
    ({"cls_token": torch.zeros(1, 1, 8), "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)}, "cls_token"),  # a ViT
    ({"bn1.weight": torch.zeros(64)}, "no 4D or 5D conv1.weight"),
])
def test_an_unknown_layout_is_a_data_error_naming_the_file_and_the_names(tmp_path: Path, tensors: dict,
                                                                          named: str) -> None:
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(DataError, match=named) as info:
        create_model("resnet50", pretrained=path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
