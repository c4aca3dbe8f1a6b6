"""Pretrained reuse: channel adaptation, 2D -> 3D inflation, new heads, and loading that never unpickles."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from medzoo.errors import ConfigError, DataError
from medzoo.zoo import create_model
from medzoo.zoo.adapt import adapt_input_conv, channel_map, inflate_2d_to_3d, load_pretrained
from medzoo.zoo.checkpoint import save_checkpoint
from medzoo.zoo.factory import read_pretrained

SIDE = 16
TOL = {"rtol": 1e-4, "atol": 1e-4}
CHANNEL_CASES = [(1, 1000), (3, 1), (28, 64), (1000, 3)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _source(in_chans: int = 3, num_classes: int = 4, spatial_dims: int = 2, arch: str = "resnet10") -> nn.Module:
    """A small model whose batch-norm statistics and head are far from their initial values."""
    model = create_model(arch, in_chans=in_chans, num_classes=num_classes, spatial_dims=spatial_dims, stem="small")
    with torch.no_grad():
        # Fresh batch norm is the identity in eval mode: random statistics make the comparisons mean something.
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        if num_classes:
            model.fc.bias.normal_(0, 0.5)
    return model.eval()


def _save(model: nn.Module, path: Path) -> Path:
    card = {"arch": model.arch, "in_chans": model.in_chans, "num_classes": model.num_classes,
            "spatial_dims": model.spatial_dims, "model_kwargs": {"stem": model.stem}}
    return save_checkpoint(path, model, card)


def _image(spatial_dims: int = 2) -> torch.Tensor:
    return torch.randn(2, 1, *([SIDE] * spatial_dims))


def _replicated(x: torch.Tensor, chans: int) -> torch.Tensor:
    return x.expand(-1, chans, *x.shape[2:]).contiguous()


# --- adapt_input_conv ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", [(3, 3), (3, 3, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize(("c_src", "c_tgt"), [*CHANNEL_CASES, (3, 64), (64, 28), (4, 3), (2, 3), (5, 5)])
def test_adapt_input_conv_preserves_the_channel_sum(c_src: int, c_tgt: int, kernel: tuple[int, ...]) -> None:
    weight = torch.randn(8, c_src, *kernel, dtype=torch.float64)
    adapted = adapt_input_conv(weight, c_tgt)
    assert adapted.shape == (8, c_tgt, *kernel) and adapted.dtype == weight.dtype
    torch.testing.assert_close(adapted.sum(1), weight.sum(1), rtol=1e-12, atol=1e-12)


def test_adapt_input_conv_agrees_with_timm_where_timm_applies() -> None:
    weight = torch.randn(16, 3, 7, 7)
    torch.testing.assert_close(adapt_input_conv(weight, 1), weight.sum(1, keepdim=True))  # RGB sum
    gray = torch.randn(16, 1, 7, 7)
    torch.testing.assert_close(adapt_input_conv(gray, 5), gray.repeat(1, 5, 1, 1) / 5)  # repeat and divide
    same = adapt_input_conv(weight, 3)
    assert torch.equal(same, weight) and same.data_ptr() != weight.data_ptr()


@pytest.mark.parametrize(("c_src", "c_tgt"), [(28, 64), (64, 28), (1000, 3), (3, 1000)])
def test_channel_resampling_is_local_and_keeps_slice_order(c_src: int, c_tgt: int) -> None:
    mapping = channel_map(c_src, c_tgt)
    assert (mapping >= 0).all()
    # Linear interpolation: a target channel draws on two neighbouring source channels when upsampling, and a
    # source channel feeds two neighbouring target channels when downsampling.
    fan = (mapping > 0).sum(1 if c_tgt >= c_src else 0)
    assert fan.max() <= 2
    # A filter that is constant over channels stays constant (each target channel gets an equal share)...
    flat = adapt_input_conv(torch.ones(1, c_src, 1, 1, dtype=torch.float64), c_tgt).flatten()
    torch.testing.assert_close(flat, torch.full_like(flat, c_src / c_tgt), rtol=1e-5, atol=0)
    # ...and one that grows with slice position still grows with it.
    ramp = torch.arange(c_src, dtype=torch.float64).view(1, c_src, 1, 1)
    per_chan = adapt_input_conv(ramp, c_tgt).flatten() * c_tgt / c_src
    assert (per_chan.diff() >= -1e-9).all()


def test_adapt_input_conv_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_chans"):
        adapt_input_conv(torch.randn(4, 3, 3, 3), 0)
    with pytest.raises(ValueError, match="conv weight"):
        adapt_input_conv(torch.randn(4, 3), 2)


# --- whole models -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("c_src", "c_tgt"), CHANNEL_CASES, ids=[f"{s}to{t}" for s, t in CHANNEL_CASES])
def test_adapted_model_gives_the_source_output_on_replicated_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, c_src: int, c_tgt: int
) -> None:
    source = _source(in_chans=c_src)
    path = _save(source, tmp_path / "src.safetensors")
    caplog.set_level(logging.INFO, logger="medzoo.zoo.adapt")
    model = create_model("resnet10", pretrained=path, in_chans=c_tgt).eval()
    assert (model.in_chans, model.num_classes, model.stem) == (c_tgt, 4, "small")  # the rest from the card
    assert f"conv1: channels {c_src} -> {c_tgt} (interpolated, sum-preserving)" in caplog.text
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model(_replicated(x, c_tgt)), source(_replicated(x, c_src)), **TOL)


def test_same_settings_reload_exactly(tmp_path: Path) -> None:
    source = _source(in_chans=2)
    model = create_model("resnet10", pretrained=_save(source, tmp_path / "src.safetensors")).eval()
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_new_head_when_the_class_count_differs(tmp_path: Path) -> None:
    source = _source(num_classes=4)
    path = _save(source, tmp_path / "src.safetensors")
    model = create_model("resnet10", pretrained=path, num_classes=3)
    assert model.fc.out_features == 3 and model.num_classes == 3
    assert torch.equal(model.fc.bias, torch.zeros(3))  # freshly initialised, not cut from the old head
    assert not torch.equal(model.fc.weight, source.fc.weight[:3])
    src = source.state_dict()
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, src[name]), name
    state = {k: v for k, v in src.items()}
    report = load_pretrained(create_model("resnet10", num_classes=0, stem="small"), state, None)
    assert "dropped" in report["adapted"]["fc"]


def _conv_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}


def test_inflation_2d_to_3d(tmp_path: Path) -> None:
    source = _source(in_chans=1)
    path = _save(source, tmp_path / "src.safetensors")
    model = create_model("resnet10", pretrained=path, spatial_dims=3).eval()  # I3D mean inflation
    convs_2d, convs_3d = _conv_modules(source), _conv_modules(model)
    x = _image()
    volume = x.unsqueeze(2).expand(-1, -1, SIDE, -1, -1).contiguous()  # every slice the same image
    for name, conv in convs_3d.items():
        # Summed over depth, each inflated kernel is the 2D kernel.
        torch.testing.assert_close(conv.weight.sum(2), convs_2d[name].weight, **TOL)
    with torch.no_grad():
        # Away from the zero-padded first and last slices, the inflated conv reproduces the 2D conv exactly.
        out_3d, out_2d = convs_3d["conv1"](volume), convs_2d["conv1"](x)
        for depth in range(1, SIDE - 1):
            torch.testing.assert_close(out_3d[:, :, depth], out_2d, **TOL)

    # "centre" inflation is exact at every slice, so a depth-constant volume gives the 2D model's logits.
    state, card = {k: v.clone() for k, v in source.state_dict().items()}, {"spatial_dims": 2, "in_chans": 1}
    report = load_pretrained(model, state, card, depth_init="centre")
    assert report["adapted"]["inflated"] == "2D -> 3D: 12 kernels (centre over depth)"
    with torch.no_grad():
        torch.testing.assert_close(model(volume), source(x), **TOL)


def test_inflation_with_new_channels_and_head_in_one_step() -> None:
    source = _source(in_chans=3, num_classes=4)
    model = create_model("resnet10", in_chans=2, num_classes=5, spatial_dims=3, stem="small").eval()
    report = load_pretrained(model, source.state_dict(), {"arch": "resnet10"}, depth_init="centre")
    assert report["adapted"] == {
        "inflated": "2D -> 3D: 12 kernels (centre over depth)",
        "conv1": "channels 3 -> 2 (interpolated, sum-preserving)",
        "fc": "new head 4 -> 5 classes",
    }
    x = _image()
    volume = _replicated(x, 2).unsqueeze(2).expand(-1, -1, SIDE, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(volume).mean((2, 3, 4)),
                                   source.forward_features(_replicated(x, 3)).mean((2, 3)), **TOL)


def test_inflation_refuses_other_kernel_sizes() -> None:
    model = create_model("resnet10", spatial_dims=3, stem="small")
    state = dict(create_model("resnet10", stem="imagenet").state_dict())
    with pytest.raises(ConfigError, match=r"conv1.*\(64, 3, 7, 7\).*\(64, 3, 3, 3, 3\)"):
        inflate_2d_to_3d(state, model)


def test_3d_weights_are_not_deflated() -> None:
    source = create_model("resnet10", spatial_dims=3, stem="small")
    with pytest.raises(ConfigError, match="spatial_dims=3"):
        load_pretrained(create_model("resnet10", stem="small"), source.state_dict(), None)


# --- errors -------------------------------------------------------------------------------------------------

def test_mismatched_arch_names_both(tmp_path: Path) -> None:
    path = _save(_source(), tmp_path / "src.safetensors")
    with pytest.raises(ConfigError, match=r"'resnet10'.*'resnet18'"):
        create_model("resnet18", pretrained=path)


def test_other_shape_mismatch_names_the_layer_and_both_shapes() -> None:
    state = dict(_source().state_dict())
    state["layer2.0.conv1.weight"] = torch.randn(128, 64, 5, 5)
    model = create_model("resnet10", num_classes=4, stem="small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"layer2\.0\.conv1\.weight.*\(128, 64, 5, 5\).*\(128, 64, 3, 3\)"):
        load_pretrained(model, state, None)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # a failed load changes nothing
    # A card-less resnet18 state dict into a resnet10: the extra blocks are named, not dropped.
    with pytest.raises(ConfigError, match=r"unexpected \(layer1\.1\."):
        load_pretrained(model, _source(arch="resnet18").state_dict(), None)


def test_a_card_that_contradicts_the_weights_is_an_error() -> None:
    with pytest.raises(DataError, match="in_chans=3"):
        load_pretrained(_source(in_chans=1), _source(in_chans=2).state_dict(), {"in_chans": 3})


def test_missing_or_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        create_model("resnet10", pretrained=tmp_path / "nope.safetensors")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown checkpoint type"):
        read_pretrained(tmp_path / "w.ckpt")


# --- plain PyTorch files ------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates `marker`: the stand-in for arbitrary code in a hostile .pt file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path, writer: str) -> None:
    def write(path: Path, marker: Path) -> Path:
        obj = {"conv1.weight": _Payload(marker)}
        if writer == "torch.save":
            torch.save(obj, path)
        else:
            path.write_bytes(pickle.dumps(obj, protocol=2))
        return path

    marker = tmp_path / "pwned"
    hostile = write(tmp_path / "hostile.pt", marker)
    with pytest.raises(DataError, match="weights_only=True"):
        create_model("resnet10", pretrained=hostile)
    assert not marker.exists()
    # The control: an unsafe load of the same kind of file does run the payload, so the refusal above matters.
    control_marker = tmp_path / "control"
    control = write(tmp_path / "control.pt", control_marker)
    if writer == "torch.save":
        torch.load(control, weights_only=False)
    else:
        pickle.loads(control.read_bytes())
    assert control_marker.exists()


@pytest.mark.parametrize("layout", ["plain", "wrapped-ddp", "safetensors"])
def test_a_plain_state_dict_loads_and_adapts(tmp_path: Path, layout: str) -> None:
    source = _source(in_chans=3)
    state = source.state_dict()
    if layout == "plain":
        path = tmp_path / "weights.pth"
        torch.save(state, path)
    elif layout == "wrapped-ddp":
        path = tmp_path / "weights.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        path = tmp_path / "weights.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))  # no medzoo card
    model = create_model("resnet10", pretrained=path, in_chans=1, num_classes=4, stem="small").eval()
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(_replicated(x, 3)), **TOL)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(DataError, match="not a state dict"):
        create_model("resnet10", pretrained=path)
