"""Exports: ONNX parity with onnxruntime, TorchScript reload, and a MONAI bundle that MONAI loads and runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from medzoo.engine.inference import Preprocessor, list_inputs
from medzoo.zoo import create_model
from medzoo.zoo.checkpoint import model_from_checkpoint, save_checkpoint
from medzoo.zoo.export import export
from tests.helpers import make_image_folder

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[dev]')")
MEDZOO = shutil.which("medzoo", path=str(sys.executable.rsplit("/", 1)[0])) or "medzoo"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = create_model("resnet18", in_chans=1, num_classes=4, stem="imagenet")
    model.eval()
    for module in model.modules():  # non-trivial running statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    card = {"arch": "resnet18", "model_kwargs": {"stem": "imagenet", "norm": "batch"}, "in_chans": 1,
            "num_classes": 4, "spatial_dims": 2, "input_size": [64, 64], "classes": ["a", "b", "c", "d"],
            "recipe": "test", "preprocessing": {
                "pre": [{"_target_": "albumentations.Resize", "height": 64, "width": 64}],
                "eval": [{"_target_": "albumentations.Normalize", "normalization": "image"}]}}
    path = save_checkpoint(folder / "model.safetensors", model, card)
    images = make_image_folder(folder / "images", per_class_train=2, per_class_test=1)
    return path, images / "Training"


def real_inputs(path, images):
    model, card = model_from_checkpoint(path)
    preprocess = Preprocessor(card)
    return model, card, torch.stack([preprocess.file(p) for p in list_inputs(images)[:5]])


def test_onnx_matches_pytorch_on_real_inputs_with_any_batch(checkpoint, tmp_path):
    model, card, inputs = real_inputs(*checkpoint)
    result = export(model, card, "onnx", inputs, tmp_path)
    assert result["max_abs_difference"] <= 1e-4 and result["checked_on"] == 5
    import onnxruntime

    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    single = session.run(None, {"image": inputs[:1].numpy()})[0]
    with torch.no_grad():
        assert abs(single - model(inputs[:1]).numpy()).max() <= 1e-4


def test_torchscript_reloads_to_the_same_outputs(checkpoint, tmp_path):
    model, card, inputs = real_inputs(*checkpoint)
    result = export(model, card, "torchscript", inputs, tmp_path)
    assert result["max_abs_difference"] <= 1e-5


def test_monai_bundle_loads_and_runs_with_monai_alone(checkpoint, tmp_path):
    from monai.bundle import ConfigParser

    model, card, inputs = real_inputs(*checkpoint)
    root = tmp_path / "test_bundle"
    export(model, card, "monai-bundle", inputs, tmp_path)
    for name in ("configs/inference.json", "configs/metadata.json", "models/model.pt", "docs/README.md"):
        assert (root / name).is_file(), name
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser["bundle_root"] = str(root)
    assert parser["network_def"]["_target_"] == "monai.networks.nets.ResNet"
    network = parser.get_parsed_content("network")
    parser.get_parsed_content("load_weights")
    network.eval()
    with torch.no_grad():
        torch.testing.assert_close(network(inputs), model(inputs), rtol=1e-4, atol=1e-5)
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 1


def test_export_command_checks_onnx_on_real_images(checkpoint, tmp_path):
    path, images = checkpoint
    subprocess.run([MEDZOO, "export", f"ckpt={path}", "format=onnx", f"inputs={images}",
                    f"hydra.run.dir={tmp_path}"], check=True, capture_output=True)
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["max_abs_difference"] <= 1e-4 and report["checked_on"] == 8


def test_bundle_network_def_rebuilds_a_half_width_model_in_plain_monai():
    from monai.networks.nets import ResNet

    from medzoo.zoo.export import network_def

    torch.manual_seed(0)
    model = create_model("resnet18", in_chans=1, num_classes=2, spatial_dims=3, stem="imagenet", width=0.5).eval()
    card = {"arch": "resnet18", "model_kwargs": {"stem": "imagenet", "norm": "batch", "width": 0.5}, "in_chans": 1,
            "num_classes": 2, "spatial_dims": 3}
    definition = network_def(card)
    assert definition.pop("_target_") == "monai.networks.nets.ResNet"
    network = ResNet(**definition).eval()
    network.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x))
