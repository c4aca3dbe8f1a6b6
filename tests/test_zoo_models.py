"""Every registered model builds, runs forward and backward, and exposes the shared model surface."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medzoo.errors import ConfigError, UnknownNameError
from medzoo.zoo import create_model, is_model, list_models, register_model
from medzoo.zoo import registry as registry_module

MODELS = list_models()
NUM_CLASSES = 5
BATCH = 2
# (spatial_dims, side, stem): the small stem at MedMNIST size, the imagenet stem at the smallest size
# that still leaves layer4 a 2x2 map, and 3D at 16^3 with the small stem (2^3 at layer4).
CASES = [(2, 32, "small"), (2, 64, "imagenet"), (3, 16, "small")]
CASE_IDS = [f"{sd}d-{side}-{stem}" for sd, side, stem in CASES]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _input(in_chans: int, spatial_dims: int, side: int) -> torch.Tensor:
    return torch.randn(BATCH, in_chans, *([side] * spatial_dims))


def test_registry_holds_the_resnet_family() -> None:
    assert {"resnet10", "resnet18", "resnet34", "resnet50"} <= set(MODELS)
    assert MODELS == sorted(MODELS)
    assert list_models("resnet1*") == ["resnet10", "resnet18"]
    assert list_models("RESNET*") == []  # matching is case-sensitive on every OS
    assert list_models("vit*") == []
    assert is_model("resnet50") and not is_model("resnet51")


@pytest.mark.parametrize("in_chans", [1, 3, 64])
@pytest.mark.parametrize(("spatial_dims", "side", "stem"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name: str, spatial_dims: int, side: int, stem: str, in_chans: int) -> None:
    model = create_model(
        name, in_chans=in_chans, num_classes=NUM_CLASSES, spatial_dims=spatial_dims, stem=stem
    )
    assert (model.arch, model.stem) == (name, stem)
    assert (model.in_chans, model.num_classes, model.spatial_dims) == (in_chans, NUM_CLASSES, spatial_dims)

    # first_conv and classifier must name real layers: checkpoint adaptation rebuilds exactly these.
    conv = model.get_submodule(model.first_conv)
    assert isinstance(conv, (nn.Conv2d, nn.Conv3d)[spatial_dims - 2])
    assert (conv.in_channels, conv.out_channels) == (in_chans, 64)
    head = model.get_submodule(model.classifier)
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (model.num_features, NUM_CLASSES)

    out = model(_input(in_chans, spatial_dims, side))
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_2d_matches_contiguous(name: str) -> None:
    model = create_model(name, in_chans=3, num_classes=NUM_CLASSES, stem="small").eval()
    x = _input(3, 2, 32)
    with torch.no_grad():
        expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = model(x_cl)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert model.conv1.weight.grad is not None


@pytest.mark.parametrize("name", MODELS)
def test_forward_head_of_forward_features_equals_forward(name: str) -> None:
    model = create_model(name, in_chans=2, num_classes=NUM_CLASSES, stem="small").eval()
    x = _input(2, 2, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (BATCH, model.num_features, 4, 4)  # 32 px / 8 with the small stem
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (BATCH, model.num_features)


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier(name: str) -> None:
    model = create_model(name, in_chans=1, num_classes=NUM_CLASSES, stem="small")
    x = _input(1, 2, 32)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_submodule(model.classifier).out_features == 7
    out = model(x)
    assert out.shape == (BATCH, 7)
    out.sum().backward()
    assert model.fc.weight.grad is not None
    model.reset_classifier(0)  # timm convention: no head, the model returns pooled features
    assert model(x).shape == (BATCH, model.num_features)


def test_num_classes_zero_returns_pooled_features() -> None:
    model = create_model("resnet10", num_classes=0, spatial_dims=3, stem="small")
    assert model(_input(3, 3, 16)).shape == (BATCH, 512)


@pytest.mark.parametrize(
    ("input_size", "expected"),
    [(28, "small"), (32, "small"), (63, "small"), (64, "imagenet"), (224, "imagenet"), (None, "imagenet")],
)
def test_stem_auto_follows_input_size(input_size: int | None, expected: str) -> None:
    model = create_model("resnet10", input_size=input_size)
    assert model.stem == expected
    if expected == "imagenet":
        assert (model.conv1.kernel_size, model.conv1.stride) == ((7, 7), (2, 2))
        assert isinstance(model.maxpool, nn.MaxPool2d)
    else:
        assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
        assert isinstance(model.maxpool, nn.Identity)


def test_explicit_stem_wins_over_input_size() -> None:
    assert create_model("resnet10", stem="imagenet", input_size=28).stem == "imagenet"
    assert create_model("resnet10", stem="small", input_size=224).stem == "small"


@pytest.mark.parametrize(
    ("spatial_dims", "side", "stem", "layer1_side"),
    [(2, 64, "imagenet", 16), (2, 32, "small", 32), (3, 32, "imagenet", 8), (3, 16, "small", 16)],
)
def test_stem_downsampling_before_layer1(spatial_dims: int, side: int, stem: str, layer1_side: int) -> None:
    model = create_model("resnet10", in_chans=1, spatial_dims=spatial_dims, stem=stem).eval()
    seen: list[torch.Size] = []
    model.layer1.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))
    with torch.no_grad():
        model(_input(1, spatial_dims, side))
    assert seen == [torch.Size([BATCH, 64, *([layer1_side] * spatial_dims)])]


def test_shortcut_is_a_projection_without_bias() -> None:
    # Shortcut "B" as in torchvision: 1x1 strided conv (no bias, batch norm follows) + batch norm.
    model = create_model("resnet18")
    proj, norm = model.layer2[0].downsample
    assert isinstance(proj, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
    assert (proj.kernel_size, proj.stride, proj.bias) == ((1, 1), (2, 2), None)
    assert model.layer1[0].downsample is None
    assert create_model("resnet50").layer1[0].downsample is not None  # 64 -> 256 channels


@pytest.mark.parametrize(
    ("name", "params"),
    # torchvision's published parameter counts (3 channels, 1000 classes): same architecture.
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_parameter_count_matches_torchvision(name: str, params: int) -> None:
    assert sum(p.numel() for p in create_model(name).parameters()) == params


def test_many_input_channels() -> None:
    model = create_model("resnet10", in_chans=1024, num_classes=3, stem="small")
    assert model(_input(1024, 2, 32)).shape == (BATCH, 3)


def test_unknown_name_suggests_the_close_match() -> None:
    with pytest.raises(UnknownNameError, match="resnet18") as info:
        create_model("resnt18")
    assert "resnt18" in str(info.value)
    assert isinstance(info.value, KeyError)


def test_pretrained_that_is_neither_a_file_nor_a_zoo_name_is_an_error() -> None:
    from medzoo.errors import MedzooError

    with pytest.raises(MedzooError, match="resnet10.medmnist"):
        create_model("resnet10", pretrained="resnet10.medmnist")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"stem": "huge"}, "stem"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"width": 0}, "width"),
        ({"width": "half"}, "width"),
        ({"width": 0.3, "norm": "group"}, "width"),  # 19-channel stages: 32 groups do not divide them
    ],
)
def test_bad_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        create_model("resnet10", **kwargs)


def test_register_model_adds_an_entrypoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_model_entrypoints", dict(registry_module._model_entrypoints))

    @register_model
    def tiny_linear(*, in_chans: int, num_classes: int, spatial_dims: int, width: int = 4) -> nn.Module:
        """A stand-in family for the test."""
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.Linear(width, num_classes))

    assert is_model("tiny_linear") and "tiny_linear" in list_models("tiny*")
    model = create_model("tiny_linear", num_classes=2, width=8)
    assert model[2].in_features == 8 and model[2].out_features == 2


def test_register_model_refuses_a_second_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_model_entrypoints", dict(registry_module._model_entrypoints))

    def resnet18(**kwargs: object) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet18)


@pytest.mark.parametrize("norm, expected", [("batch", {"BatchNorm2d"}), ("group", {"GroupNorm"}),
                                            ("instance", {"InstanceNorm2d"})])
def test_norm_choice_reaches_every_block(norm: str, expected: set[str]) -> None:
    model = create_model("resnet18", in_chans=1, num_classes=2, stem="small", norm=norm)
    assert {type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__} == expected


def test_width_scales_every_stage_and_survives_a_checkpoint(tmp_path) -> None:
    from medzoo.zoo.checkpoint import save_checkpoint
    from medzoo.zoo.factory import model_from_checkpoint

    options = {"in_chans": 1, "num_classes": 2, "spatial_dims": 3, "stem": "imagenet"}
    full, half = create_model("resnet18", **options), create_model("resnet18", width=0.5, **options).eval()
    stages = [getattr(half, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5)]
    assert stages == [32, 64, 128, 256] and half.conv1.out_channels == 32
    assert half.num_features == half.fc.in_features == 256
    count = {name: sum(p.numel() for p in model.parameters()) for name, model in (("full", full), ("half", half))}
    assert 0.24 < count["half"] / count["full"] < 0.26
    card = {"arch": "resnet18", "model_kwargs": {"stem": "imagenet", "norm": "batch", "width": 0.5}, "in_chans": 1,
            "num_classes": 2, "spatial_dims": 3, "input_size": [28, 28, 28], "classes": ["a", "b"],
            "preprocessing": {"pre": [], "eval": []}}
    loaded, _ = model_from_checkpoint(save_checkpoint(tmp_path / "half.safetensors", half, card))
    x = torch.randn(2, 1, 28, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), half(x))
