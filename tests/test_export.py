"""Exports held to an independent reference: outputs of a freshly loaded checkpoint, taken before export, against
the exported file loaded and run here (onnxruntime, torch.jit.load, MONAI's own bundle runner)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from medzoo.engine.inference import Preprocessor, list_inputs
from medzoo.errors import ConfigError, DataError
from medzoo.zoo import create_model, hub
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import read_card, save_checkpoint
from medzoo.zoo.export import BUNDLE_STEPS, bundle_transforms, export
from medzoo.zoo.factory import model_from_checkpoint
from tests.cli_runner import run_medzoo
from tests.helpers import make_image_folder

MEDZOO = shutil.which("medzoo", path=str(sys.executable.rsplit("/", 1)[0])) or "medzoo"
SHIPPED = "brain_tumor_resnet18_cpu"
PROBABILITY_TOLERANCE = 1e-4  # fp32, as issue 14 asks of the bundle against `medzoo predict`


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


def fresh_reference(path, images, count: int = 5) -> tuple[torch.Tensor, np.ndarray]:
    """Preprocessed inputs and the logits of a model loaded from `path` only for this, before any export."""
    model, card = model_from_checkpoint(path)
    inputs = torch.stack([Preprocessor(card).file(p) for p in list_inputs(images)[:count]])
    with torch.no_grad():
        return inputs, model(inputs).numpy()


def test_onnx_file_runs_like_a_fresh_checkpoint_and_carries_its_preprocessing(checkpoint, tmp_path):
    """Catches an exporter that changes the model it is given (e.g. a block replaced before export): the file
    is compared with a separately loaded checkpoint, not with the object export() received."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[dev]')")
    onnx = pytest.importorskip("onnx")
    inputs, expected = fresh_reference(*checkpoint)
    model, card = model_from_checkpoint(checkpoint[0])
    result = export(model, card, "onnx", inputs, tmp_path)
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    for batch in (inputs, inputs[:1]):  # the batch axis is dynamic
        got = session.run(None, {"image": batch.numpy()})[0]
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4
    with torch.no_grad():  # export() left the caller's model as it was
        assert np.abs(model(inputs).numpy() - expected).max() <= 1e-6
    props = {p.key: p.value for p in onnx.load(result["path"]).metadata_props}
    assert json.loads(props["medzoo_card_preprocessing"]) == card.to_dict()["preprocessing"]
    assert json.loads(props["medzoo_classes"]) == ["a", "b", "c", "d"]
    assert json.loads(props["medzoo_input"])["size"] == [64, 64]


def test_onnx_without_onnxruntime_names_the_extra(checkpoint, tmp_path, monkeypatch):
    model, card = model_from_checkpoint(checkpoint[0])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ConfigError, match=r"pip install 'medzoo\[export\]'"):
        export(model, card, "onnx", torch.zeros(1, 1, 64, 64), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_torchscript_file_runs_like_a_fresh_checkpoint(checkpoint, tmp_path):
    """Catches a TorchScript file saved from a changed model (e.g. without a block): the test loads the file
    itself and compares it with a separately loaded checkpoint, not with the exporter's own figure."""
    inputs, expected = fresh_reference(*checkpoint)
    model, card = model_from_checkpoint(checkpoint[0])
    result = export(model, card, "torchscript", inputs, tmp_path)
    loaded = torch.jit.load(result["path"])
    with torch.no_grad():
        for batch in (inputs, inputs[:1]):
            assert np.abs(loaded(batch).numpy() - expected[: len(batch)]).max() <= 1e-5


def test_export_command_checks_onnx_on_real_images(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[dev]')")
    path, images = checkpoint
    done = run_medzoo("export", f"ckpt={path}", "format=onnx", f"inputs={images}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["max_abs_difference"] <= 1e-4 and report["checked_on"] == 8


def test_bundle_network_def_rebuilds_a_half_width_model_in_plain_monai():
    from monai.networks.nets import ResNet

    from medzoo.zoo.export import network_def

    torch.manual_seed(0)
    model = create_model("resnet18", in_chans=1, num_classes=2, spatial_dims=3, stem="imagenet", width=0.5).eval()
    card = ModelCard.from_dict({"arch": "resnet18", "model_kwargs": {"stem": "imagenet", "norm": "batch", "width": 0.5},
                                "in_chans": 1, "num_classes": 2, "classes": ["x", "y"], "spatial_dims": 3})
    definition = network_def(card)
    assert definition.pop("_target_") == "monai.networks.nets.ResNet"
    network = ResNet(**definition).eval()
    network.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x))


# --- MONAI bundle: preprocessing, refusal, and MONAI's runner against `medzoo predict` ---------------------
@pytest.fixture
def bundle_preprocessing(tmp_path, monkeypatch):
    """Build a card's bundle preprocessing with MONAI's ConfigParser, the bundle's scripts module importable."""
    from monai.bundle import ConfigParser

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "__init__.py").write_text("")
    (tmp_path / "scripts" / "medzoo_steps.py").write_text(BUNDLE_STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        monkeypatch.delitem(sys.modules, name)

    def build(card: ModelCard):
        transforms, _ = bundle_transforms(card)
        return ConfigParser({"preprocessing": {"_target_": "Compose", "transforms": transforms}}) \
            .get_parsed_content("preprocessing")

    yield build
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        sys.modules.pop(name)


def odd_images(folder):
    """Images whose decoding differs by mode: colour, palette, 16-bit and RGBA PNGs, tiny, blank, non-square."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / "colour.jpg", quality=90)
    Image.fromarray(colour).convert("P").save(folder / "palette.png")
    Image.fromarray((rng.random((40, 52)) * 4000).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(np.dstack([colour, colour[..., :1]])).save(folder / "alpha.png")
    Image.fromarray(colour[:20, :13, 0]).save(folder / "tiny gray (1).png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(folder / "blank.png")
    return folder


@pytest.mark.parametrize("variant", ["brain_tumor", "brain_tumor_rgb", "breastmnist"])
def test_bundle_preprocessing_equals_medzoo_on_any_image_mode(variant, bundle_preprocessing, tmp_path):
    """The bundle's transforms give the model the very tensor medzoo's Preprocessor gives it (bit for bit where
    the README says exact; float32 rounding for mean/std Normalize)."""
    name = "breastmnist_resnet18" if variant == "breastmnist" else SHIPPED
    card = read_card(hub.resolve(name))
    if variant == "brain_tumor_rgb":
        card = dataclasses.replace(card, in_chans=3)
    preprocess, medzoo = bundle_preprocessing(card), Preprocessor(card)
    files = list_inputs(odd_images(tmp_path / "odd")) + list_inputs(make_image_folder(tmp_path / "set", 1, 0))
    for path in files:
        got, expected = preprocess({"image": str(path)})["image"], medzoo.file(path)
        assert got.dtype == torch.float32 and got.shape == expected.shape, path
        if variant == "breastmnist":
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        else:
            assert torch.equal(got, expected), (path, float((got - expected).abs().max()))


@pytest.mark.parametrize("change, match", [
    ({"eval": ({"name": "albumentations.CLAHE", "params": {}},)}, "albumentations.CLAHE has no MONAI bundle"),
    ({"eval": ({"name": "albumentations.Normalize", "params": {"normalization": "min_max"}},)}, "min_max"),
    ({"pre": ({"name": "albumentations.Resize", "params": {"height": 8, "width": 8, "p": 0.5}},)}, "p < 1"),
])
def test_bundle_refuses_a_step_it_cannot_reproduce(change, match, tmp_path):
    path = hub.resolve(SHIPPED)
    model, card = model_from_checkpoint(path)
    card = dataclasses.replace(card, preprocessing=dataclasses.replace(card.preprocessing, **change))
    with pytest.raises(DataError, match=f"{match}.*format=onnx"):
        export(model, card, "monai-bundle", torch.zeros(1, 1, 128, 128), tmp_path, str(path))
    assert not list(tmp_path.iterdir())  # nothing written


def test_bundle_refuses_volumes():
    card = read_card(hub.resolve("adrenalmnist3d_resnet18_3d"))
    with pytest.raises(DataError, match="3D 'volume' input.*no MONAI bundle equivalent.*format=onnx"):
        bundle_transforms(card, "adrenal.safetensors")


def _env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDZOO_DATA"}
    return {**env, "MEDZOO_HOME": str(home), "MEDZOO_OFFLINE": "1"}


def _run(command, **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command[:5]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def shipped_bundle(tmp_path_factory):
    """`medzoo export ckpt=brain_tumor_resnet18_cpu format=monai-bundle`, once for the tests below."""
    run_dir = tmp_path_factory.mktemp("bundle-export")
    _run([MEDZOO, "export", f"ckpt={SHIPPED}", "format=monai-bundle", f"hydra.run.dir={run_dir}"],
         env=_env(tmp_path_factory.mktemp("home")))
    report = json.loads((run_dir / "export.json").read_text())
    assert report["max_abs_difference"] <= 1e-5
    return run_dir / f"{SHIPPED}_bundle"


def bundle_against_predict(bundle, inputs, tmp_path) -> tuple[dict, dict]:
    """Class probabilities per image from MONAI's bundle runner and from `medzoo predict` (fp32)."""
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
          "--input", str(inputs), "--output_dir", str(tmp_path / "bundle")], cwd=bundle, env=_env(tmp_path))
    _run([MEDZOO, "predict", f"ckpt={SHIPPED}", f"inputs={inputs}", "trainer.precision=fp32", "trainer.device=cpu",
          f"hydra.run.dir={tmp_path / 'predict'}"], env=_env(tmp_path))
    read = [json.loads((tmp_path / where / "predictions.json").read_text()) for where in ("bundle", "predict")]
    by_path = [{row["path"]: row for row in found["predictions"]} for found in read]
    assert by_path[0].keys() == by_path[1].keys() and by_path[0]
    return by_path[0], by_path[1]


def assert_same_probabilities(bundle_rows: dict, predict_rows: dict) -> float:
    worst = max(abs(row["probabilities"][c] - predict_rows[path]["probabilities"][c])
                for path, row in bundle_rows.items() for c in row["probabilities"])
    assert worst <= PROBABILITY_TOLERANCE, worst
    assert all(row["prediction"] == predict_rows[path]["prediction"] for path, row in bundle_rows.items())
    return worst


def test_bundle_runner_matches_medzoo_predict_on_synthetic_images(shipped_bundle, tmp_path):
    """The bundle path in CI without the real data: JPEGs of varied sizes, names with spaces and parentheses."""
    images = make_image_folder(tmp_path / "images", per_class_train=0, per_class_test=2) / "Testing"
    bundle_rows, predict_rows = bundle_against_predict(shipped_bundle, images, tmp_path)
    assert len(bundle_rows) == 8
    assert_same_probabilities(bundle_rows, predict_rows)


def test_bundle_runner_matches_medzoo_predict_on_real_testing_images(shipped_bundle, brain_tumor_root, tmp_path):
    """Issue 14: the exported bundle, run by MONAI's runner on real Testing images (one per class), gives the
    class probabilities `medzoo predict` gives."""
    chosen = tmp_path / "real"
    chosen.mkdir()
    for folder in sorted((brain_tumor_root / "Testing").iterdir()):
        first = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0]
        (chosen / f"{folder.name}_{first.name}").symlink_to(first)
    bundle_rows, predict_rows = bundle_against_predict(shipped_bundle, chosen, tmp_path)
    assert len(bundle_rows) == 4
    assert_same_probabilities(bundle_rows, predict_rows)
