"""A corpus of crafted checkpoints run through `medzoo predict`, `eval` and `export`: each is refused with a
one-line error and exit code 2, no marker file is ever created, and nothing outside the run directory changes.

The attacks are those found by trying the zoo as an attacker would: attribute hops through allowed modules to
`os.system` / `np.savetxt` / `np.load(allow_pickle=True)`, `builtins.eval`, targets nested in containers and in the
card's data settings, every OmegaConf resolver, Hydra's `_args_` / `_partial_`, path traversal in names, markup in
class names, cards that are not JSON or miss fields, weights that do not fit the card, and absurd sizes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medzoo import cli
from medzoo.zoo import create_model
from medzoo.zoo.checkpoint import FORMAT, read_card
from tests.helpers import CLASSES, make_image_folder

MARKER = "MARKER"


class _Payload:
    """Unpickling this creates the marker file: what a pickle payload in a crafted .npy would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def base_card(size: int = 32) -> dict:
    """A schema-1 card (as medzoo wrote before typed cards), valid for the synthetic brain-tumour folder."""
    return {
        "arch": "resnet10", "model_kwargs": {"stem": "small", "norm": "batch", "width": 1.0}, "in_chans": 1,
        "num_classes": 4, "classes": list(CLASSES), "spatial_dims": 2, "input_size": [size, size],
        "preprocessing": {"backend": "albumentations",
                          "pre": [{"_target_": "albumentations.Resize", "height": size, "width": size}],
                          "eval": [{"_target_": "albumentations.Normalize", "normalization": "image"}]},
        "precision": "fp32", "recipe": "brain_tumor_resnet18", "epoch": 1, "metrics": {},
        "data": {"name": "brain_tumor", "fingerprint": "x", "num_train": 1, "num_val": 1, "num_test": 1},
        "config": {"data": {"_target_": "medzoo.datasets.image_folder.ImageFolderSource", "name": "brain_tumor",
                            "channels": 1, "val_fraction": 0.25, "cache": "memory", "num_workers": 0},
                   "trainer": {"channels_last": False}},
        "versions": {}, "license": "test", "intended_use": "test",
    }


def attacks(marker: Path, pickle_file: Path) -> dict[str, object]:
    """name -> a function that mutates a base card (or a raw metadata string) into the attack."""
    hop = lambda target, **params: {"_target_": target, **params}  # noqa: E731
    touch = f"touch {marker}"

    def pre(step):
        return lambda card: card["preprocessing"]["pre"].insert(0, step)

    def in_data(key, value):
        return lambda card: card["config"]["data"].__setitem__(key, value)

    return {
        "hop_os_system": pre(hop("medzoo.transforms.multichannel.os.system", command=touch)),
        "hop_savetxt": pre(hop("medzoo.transforms.intensity.np.savetxt", fname=str(marker), X=[1.0])),
        "hop_np_load_pickle": pre(hop("medzoo.transforms.intensity.np.load", file=str(pickle_file),
                                      allow_pickle=True)),
        "builtins_eval": pre(hop("builtins.eval", source=f"open({str(marker)!r}, 'w')")),
        "nested_target_in_oneof": pre(hop("albumentations.OneOf", transforms=[hop("os.system", command=touch)], p=1)),
        "args_chain": pre(hop("albumentations.Resize", _args_=[hop("os.system", command=touch)], height=8, width=8)),
        "partial_flag": pre(hop("albumentations.Resize", _partial_=True, height=8, width=8)),
        "recursive_flag": pre(hop("albumentations.Resize", _recursive_=True, height=8, width=8)),
        "oc_create": pre(hop("albumentations.Resize", height="${oc.create:{_target_: os.system, command: touch x}}",
                             width=8)),
        "oc_decode": pre(hop("albumentations.Resize", height="${oc.decode:'{_target_: os.system}'}", width=8)),
        "oc_env_in_class": lambda card: card["classes"].__setitem__(0, "${oc.env:HOME}"),
        "oc_env_in_data": in_data("root", "${oc.env:HOME}"),
        "oc_select_in_recipe": lambda card: card.__setitem__("recipe", "${oc.select:x,y}"),
        "nested_target_in_data": in_data("class_map", {"glioma": hop("os.system", command=touch)}),
        "foreign_data_target": in_data("_target_", "os.system"),
        "recipe_traversal": lambda card: card.__setitem__("recipe", "../../x"),
        "recipe_absolute": lambda card: card.__setitem__("recipe", str(marker.parent / "abs")),
        "class_with_separator": lambda card: card["classes"].__setitem__(0, "../../evil"),
        "class_with_html": lambda card: card["classes"].__setitem__(1, "<script>alert(1)</script>"),
        "missing_arch": lambda card: card.pop("arch"),
        "missing_classes_and_count": lambda card: (card.pop("classes"), card.pop("num_classes")),
        "wrong_in_chans": lambda card: card.__setitem__("in_chans", 3),
        "wrong_num_classes": lambda card: (card.__setitem__("num_classes", 5), card["classes"].append("extra")),
        "huge_num_classes": lambda card: card.__setitem__("num_classes", 2**40),
        "huge_width": lambda card: card["model_kwargs"].__setitem__("width", 1e9),
        "unknown_model_option": lambda card: card["model_kwargs"].__setitem__("pretrained", "/etc/passwd"),
        "unknown_arch": lambda card: card.__setitem__("arch", "os.system"),
        "reader_option_object": lambda card: card["config"]["data"].__setitem__("reader_kwargs", {"x": {"y": 1}}),
        "future_schema": lambda card: card.__setitem__("schema_version", 99),
        "not_json": "{not json",
        "json_list": "[1, 2, 3]",
        "nan_constant": '{"arch": NaN}',
    }


def write_checkpoint(path: Path, card: dict | str, state: dict[str, torch.Tensor]) -> Path:
    text = card if isinstance(card, str) else json.dumps(card)
    save_file(state, str(path), metadata={"format": FORMAT, "card": text})
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def tree_digest(folder: Path, skip: Path | None = None) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and (skip is None or skip not in p.parents)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    data = make_image_folder(root / "brain-tumor-mri", per_class_train=4, per_class_test=2, size=32)
    torch.manual_seed(0)
    state = create_model("resnet10", in_chans=1, num_classes=4, stem="small").state_dict()
    marker = root / MARKER
    pickle_file = root / "payload.npy"
    np.save(pickle_file, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    files = {"valid": write_checkpoint(root / "valid.safetensors", base_card(), state)}
    for name, attack in attacks(marker, pickle_file).items():
        if isinstance(attack, str):
            card = attack
        else:
            card = copy.deepcopy(base_card())
            attack(card)
        files[name] = write_checkpoint(root / f"{name}.safetensors", card, state)
    assert not marker.exists()
    return root, data, files, marker


def commands(ckpt: Path, data: Path, run: Path) -> dict[str, list[str]]:
    images = data / "Testing" / CLASSES[0]  # a folder: the files' names hold parentheses
    return {
        "predict": ["predict", f"ckpt={ckpt}", f"inputs={images}", f"hydra.run.dir={run}"],
        "eval": ["eval", f"ckpt={ckpt}", f"data.root={data}", "split=test", "data.cache=memory",
                 f"hydra.run.dir={run}"],
        "export": ["export", f"ckpt={ckpt}", "format=monai-bundle", f"hydra.run.dir={run}"],
    }


def test_the_valid_checkpoint_of_the_corpus_works_through_every_command(corpus, capsys):
    root, data, files, _ = corpus
    card = read_card(files["valid"])  # a schema-1 card, migrated on read
    assert card.schema_version == 2 and card.preprocessing.pre[0]["name"] == "albumentations.Resize"
    for command, argv in commands(files["valid"], data, root / "runs" / "valid").items():
        code, err = run_cli([*argv[:-1], f"hydra.run.dir={root / 'runs' / ('valid-' + command)}"], capsys)
        assert code == 0, (command, err)
    assert (root / "runs" / "valid-predict" / "predictions.json").is_file()
    assert (root / "runs" / "valid-eval" / "metrics.json").is_file()


@pytest.mark.parametrize("name", sorted(attacks(Path("m"), Path("p"))))
def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(name, corpus, capsys):
    root, data, files, marker = corpus
    outside = tree_digest(root, skip=root / "runs")
    for command, argv in commands(files[name], data, root / "runs" / f"{name}-x").items():
        run = root / "runs" / f"{name}-{command}"
        code, err = run_cli([*argv[:-1], f"hydra.run.dir={run}"], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (name, command, err[-2000:])
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, (name, command, err[-2000:])
        assert files[name].name in lines[0], (name, command, lines[0])
        assert not marker.exists(), (name, command)
        assert not list(run.rglob("*_bundle")), (name, command)
    assert tree_digest(root, skip=root / "runs") == outside  # nothing outside the run directories changed
    assert not (root.parent / "x").exists() and not (root / "abs_bundle").exists()


# ----------------------------------------------------------------------------- sizes and steps a file claims

def card_v2(**changes) -> dict:
    """A schema-2 card (`name`/`params` steps, `input`) for the resnet10 `tiny_state` fits."""
    card = {"schema_version": 2, "arch": "resnet10", "model_kwargs": {"stem": "small", "norm": "batch", "width": 1.0},
            "in_chans": 1, "num_classes": 4, "classes": list(CLASSES), "spatial_dims": 2,
            "input": {"size": [32, 32], "layout": "image"},
            "preprocessing": {"backend": "albumentations",
                              "pre": [{"name": "albumentations.Resize", "params": {"height": 32, "width": 32}}],
                              "eval": [{"name": "albumentations.Normalize", "params": {"normalization": "image"}}]},
            "precision": "fp32", "provenance": {"recipe": "x", "data_name": "brain_tumor"}, "metrics": {}}
    card.update(changes)
    return card


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("resnet10", in_chans=1, num_classes=4, stem="small").state_dict()


def refused(call, *args) -> str:
    """The one-line DataError `call(*args)` raises."""
    from medzoo.errors import DataError

    with pytest.raises(DataError) as exc:
        call(*args)
    assert "\n" not in str(exc.value), str(exc.value)
    return str(exc.value)


def record_builds(monkeypatch) -> list[str]:
    """The device of every model `medzoo.zoo.factory` builds from now on, in order ('meta' takes no memory)."""
    from medzoo.zoo import factory

    built, entrypoint = [], factory.entrypoint

    def recording(name):
        def build(**kwargs):
            model = entrypoint(name)(**kwargs)
            built.append(next(model.parameters()).device.type)
            return model
        return build

    monkeypatch.setattr(factory, "entrypoint", recording)
    return built


def test_weights_with_an_empty_axis_are_refused_before_a_model_is_built(tmp_path, tiny_state):
    from medzoo.zoo.factory import model_from_checkpoint

    # an empty axis costs no bytes, so the other one could claim any class count (here 2 TB of classifier)
    cardless = tmp_path / "cardless.safetensors"
    save_file({**tiny_state, "fc.weight": torch.zeros(10**9, 0), "fc.bias": torch.zeros(0)}, str(cardless))
    message = refused(lambda: create_model("resnet10", pretrained=cardless))
    assert str(cardless) in message and "fc.bias" in message and "empty axis" in message
    # a card whose channel and class counts only zero-size tensors "prove"
    card = card_v2(in_chans=4096, num_classes=10000, classes=[f"c{i}" for i in range(10000)],
                   model_kwargs={"stem": "imagenet", "norm": "batch", "width": 2.0})
    forged = write_checkpoint(tmp_path / "forged.safetensors", card,
                              {**tiny_state, "x.weight": torch.zeros(0, 4096, 0, 0), "y.weight": torch.zeros(10000, 0)})
    message = refused(model_from_checkpoint, forged)
    assert str(forged) in message and "x.weight" in message and "empty axis" in message


def test_a_card_is_checked_against_its_tensors_before_its_model_takes_memory(tmp_path, tiny_state, monkeypatch):
    from medzoo.zoo import factory

    card = card_v2(in_chans=512, num_classes=1000, classes=[f"c{i}" for i in range(1000)],
                   model_kwargs={"stem": "imagenet", "norm": "batch", "width": 2.0})
    # one small tensor of each claimed dimension passes the card's dimension check
    path = write_checkpoint(tmp_path / "wide.safetensors", card,
                            {**tiny_state, "x.weight": torch.zeros(1, 512, 1, 1), "y.weight": torch.zeros(1000, 1)})
    built = record_builds(monkeypatch)
    message = refused(factory.model_from_checkpoint, path)
    assert str(path) in message and "do not fit the model its card describes" in message
    assert built and set(built) == {"meta"}, built  # the card's model never got real memory


def _legacy_claiming(path: Path, elements: int) -> Path:
    """A legacy (non-zip) torch file whose one storage claims `elements` floats while the file holds 70000."""
    import struct

    torch.save({"conv1.weight": torch.zeros(70000)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    claim = b"J" + struct.pack("<i", 70000)
    assert data.count(claim) >= 1
    path.write_bytes(data.replace(claim, b"J" + struct.pack("<i", elements), 1))
    return path


def _deflated(path: Path, elements: int) -> Path:
    """A torch.save zip whose tensor record is deflated: a few KB on disk that inflate to `elements` floats."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"conv1.weight": torch.zeros(elements)}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            record = zipfile.ZipInfo(info.filename, info.date_time)
            record.compress_type = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            out.writestr(record, source.read(info))
    plain.unlink()
    return path


@pytest.mark.parametrize(("kind", "problem"), [("legacy", "not a complete PyTorch zip archive"),
                                               ("deflated", "is compressed")])
def test_plain_torch_weights_must_be_a_stored_zip_before_torch_reads_them(tmp_path, kind, problem):
    from medzoo.zoo.checkpoint import read_weights

    # legacy: torch allocates the claimed 200 MB before it finds the file short; deflated: 8 MB from ~10 KB
    path = (_legacy_claiming(tmp_path / "legacy.pt", 50_000_000) if kind == "legacy"
            else _deflated(tmp_path / "deflated.pt", 2_000_000))
    assert path.stat().st_size < 300_000
    message = refused(read_weights, path)
    assert str(path) in message and problem in message and "torch.save(model.state_dict(), path)" in message


def test_a_card_step_that_fails_when_built_or_applied_is_one_line_naming_the_checkpoint(tmp_path, tiny_state,
                                                                                           capsys):
    from PIL import Image

    image = tmp_path / "in" / "scan.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    monai = card_v2()  # a MONAI step has no place in an albumentations pipeline (A.Compose: AttributeError)
    monai["preprocessing"]["pre"].insert(0, {"name": "monai.transforms.Resize", "params": {"spatial_size": [8, 8]}})
    crop = card_v2()  # built fine, but fails on a 40 x 40 input (albumentations' CropSizeError)
    crop["preprocessing"]["pre"].insert(0, {"name": "albumentations.CenterCrop",
                                            "params": {"height": 1000, "width": 1000}})
    for name, card, problem in (("monai", monai, "pre[0]: 'monai.transforms.Resize' is not an albumentations"),
                                ("crop", crop, "CropSizeError: Crop size")):
        ckpt = write_checkpoint(tmp_path / f"{name}.safetensors", card, tiny_state)
        code, err = run_cli(["predict", f"ckpt={ckpt}", f"inputs={image.parent}", f"hydra.run.dir={tmp_path / name}"],
                            capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
        assert str(ckpt) in lines[0] and problem in lines[0], lines[0]


@pytest.mark.parametrize(("options", "suffix", "problem"), [
    ({"channel_axis": "x"}, ".npy", "channel_axis='x' is not of type int | None"),
    ({"spacing": 5}, ".npy", "spacing=5 is not of type Sequence[float] | None"),
    ({"spacing": "abc"}, ".npy", "spacing='abc'"),
    ({"key": 5}, ".npz", "key=5 is not of type str | None"),
])
def test_card_reader_options_of_the_wrong_type_are_refused(tmp_path, tiny_state, options, suffix, problem):
    from medzoo.engine.inference import Preprocessor

    volume = np.random.default_rng(0).random((1, 4, 16, 16), dtype=np.float32)
    source = tmp_path / f"volume{suffix}"
    np.save(source, volume) if suffix == ".npy" else np.savez(source, x=volume)
    card = card_v2(input={"size": [32, 32], "layout": "image", "reader_options": options})
    ckpt = write_checkpoint(tmp_path / "options.safetensors", card, tiny_state)
    message = refused(Preprocessor(read_card(ckpt), str(ckpt)).items, source)
    assert str(ckpt) in message and problem in message and "reader_options" in message


def test_export_bounds_the_check_input_the_card_asks_for(tmp_path, tiny_state, capsys, monkeypatch):
    from medzoo.datasets.readers.registry import MAX_ARRAY_ENV

    monkeypatch.setenv(MAX_ARRAY_ENV, "1000000")  # so a small file shows it: 2 x 1 x 1024 x 1024 floats are 8 MB
    ckpt = write_checkpoint(tmp_path / "big-input.safetensors", card_v2(input={"size": [1024, 1024],
                                                                               "layout": "image"}), tiny_state)
    code, err = run_cli(["export", f"ckpt={ckpt}", "format=torchscript", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert str(ckpt) in lines[0] and "(2, 1, 1024, 1024) (input.size)" in lines[0] and MAX_ARRAY_ENV in lines[0]


SIZES = "16384 pixels per side and 268,435,456 pixels in all"
FACTORS = "beyond the factor of 8 by which a step may scale an image"


@pytest.mark.parametrize(("step", "problem"), [
    ({"name": "albumentations.Resize", "params": {"height": 40000, "width": 40000}}, SIZES),
    ({"name": "monai.transforms.SpatialPad", "params": {"spatial_size": [1024, 1024, 1024]}}, SIZES),
    ({"name": "albumentations.OneOf", "params": {"transforms": [
        {"name": "albumentations.LongestMaxSize", "params": {"max_size": 20000}}]}}, SIZES),
    ({"name": "albumentations.Affine", "params": {"scale": 1000.0, "fit_output": True}}, FACTORS),
    ({"name": "albumentations.Affine", "params": {"scale": {"x": [1.0, 1.0], "y": [1.0, 1e6]}, "fit_output": True}},
     FACTORS),
    ({"name": "albumentations.RandomScale", "params": {"scale_limit": [99.0, 99.0], "p": 1.0}}, FACTORS),
    ({"name": "monai.transforms.Zoom", "params": {"zoom": 500.0, "keep_size": False}}, FACTORS),
    ({"name": "monai.transforms.RandZoom", "params": {"min_zoom": 1.0, "max_zoom": 1e9, "keep_size": False}}, FACTORS),
])
def test_card_steps_may_not_ask_for_huge_images(tmp_path, tiny_state, step, problem):
    from medzoo.engine.inference import Preprocessor

    card = card_v2()
    card["preprocessing"]["pre"].insert(0, step)
    ckpt = write_checkpoint(tmp_path / "huge.safetensors", card, tiny_state)
    message = refused(lambda: Preprocessor(read_card(ckpt), str(ckpt)))
    assert str(ckpt) in message and problem in message


def test_prediction_bounds_the_inputs_it_holds_even_when_a_small_file_has_many_slices(tmp_path, tiny_state,
                                                                                       monkeypatch):
    # 1 x 1 x 200 voxels on disk; each slice becomes a 32 x 32 float32 input (4 KiB): 800 KiB from 200 bytes
    import nibabel as nib

    from medzoo.datasets.readers import registry
    from medzoo.engine.predictor import Predictor

    nib.save(nib.Nifti1Image(np.arange(200, dtype=np.uint8).reshape(1, 1, 200), np.eye(4)), tmp_path / "thin.nii")
    ckpt = write_checkpoint(tmp_path / "ok.safetensors", card_v2(), tiny_state)
    predictor = Predictor(ckpt)
    assert len(predictor.items(tmp_path / "thin.nii")) == 200  # within the cap it reads as before
    monkeypatch.setattr(registry, "MAX_ARRAY_BYTES", 100 * 4096)
    message = refused(predictor.items, tmp_path / "thin.nii")
    assert message.startswith(f"{tmp_path / 'thin.nii'}#slice100: the model inputs made so far take 413,696 bytes, "
                              "more than the 409,600 bytes limit"), message
    assert "give fewer inputs or slices at a time" in message
    images = [np.zeros((20, 20), np.uint8)] * 150  # arrays and files count together
    assert "array[100]: the model inputs made so far" in refused(predictor.items, images)


def test_a_class_count_from_a_cardless_file_must_come_with_its_classifier_width(tmp_path, tiny_state, monkeypatch):
    from medzoo.zoo import factory

    # 100,000 rows of one number each: 400 KB on disk, a 100,000 x 512 classifier (200 MB) once built
    path = tmp_path / "tall.safetensors"
    save_file({**tiny_state, "fc.weight": torch.zeros(100_000, 1), "fc.bias": torch.zeros(100_000)}, str(path))
    built = record_builds(monkeypatch)
    message = refused(lambda: factory.create_model("resnet10", pretrained=path))
    assert message == (f"{path}: fc.weight has shape (100000, 1), but the model these weights describe takes "
                       "(100000, 512); the file is damaged or not this architecture's weights.")
    assert set(built) == {"meta"}, built
    model = factory.create_model("resnet10", pretrained=path, num_classes=3)  # a head the caller sizes is new
    assert model.fc.weight.shape == (3, 512)


def test_a_card_step_that_fails_on_the_data_is_one_line_in_eval_too(corpus, tiny_state, tmp_path, capsys):
    _, data, _, _ = corpus
    crop = card_v2()  # a 1000 x 1000 crop of 32 x 32 images: albumentations' CropSizeError while the data loads
    crop["preprocessing"]["pre"].insert(0, {"name": "albumentations.CenterCrop",
                                            "params": {"height": 1000, "width": 1000}})
    ckpt = write_checkpoint(tmp_path / "crop.safetensors", crop, tiny_state)
    code, err = run_cli([*commands(ckpt, data, tmp_path / "run")["eval"], "data=brain_tumor"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert f"{ckpt}: preprocessing.pre fails on an input of shape" in lines[0] and "CropSizeError" in lines[0]


# ----------------------------------------------------------------------------- where a card says the data lies

def test_eval_takes_the_data_from_the_command_line_or_medzoo_data_never_from_the_card(corpus, tiny_state, tmp_path,
                                                                                      capsys, monkeypatch):
    """A card records where its data lay on the training machine; a crafted one could name any folder or file.
    eval reads the data the user names (data.root=, or MEDZOO_DATA), so a decoy the card points to is never read."""
    _, data, _, _ = corpus
    decoy = make_image_folder(tmp_path / "decoy" / "brain-tumor-mri", per_class_train=4, per_class_test=1, size=32)
    card = card_v2(provenance={"recipe": "x", "data_group": "brain_tumor", "data_settings": {
        "root": str(decoy), "clean_split": str(tmp_path / "decoy" / "clean_split.json"), "folder": "brain-tumor-mri",
        "cache": "memory", "val_fraction": 0.25}})
    ckpt = write_checkpoint(tmp_path / "pointing.safetensors", card, tiny_state)
    monkeypatch.setenv("MEDZOO_DATA", str(data.parent))
    code, err = run_cli(["eval", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 0, err[-2000:]
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert sum(map(sum, test["confusion_matrix"])) == 8  # the corpus's 2 per class, not the decoy's 1

    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path / "empty"))
    code, err = run_cli(["eval", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'run2'}"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(tmp_path / "empty" / "brain-tumor-mri") in lines[0], err[-2000:]


@pytest.mark.parametrize("folder", ["../../etc", "/etc", "a/b", "..", "C:evil"])
def test_a_card_data_folder_that_is_not_one_plain_name_is_refused(corpus, tiny_state, tmp_path, capsys, folder):
    _, data, _, _ = corpus
    card = card_v2(provenance={"recipe": "x", "data_group": "brain_tumor",
                               "data_settings": {"folder": folder, "cache": "memory",
                                                                 "val_fraction": 0.25}})
    ckpt = write_checkpoint(tmp_path / "folder.safetensors", card, tiny_state)
    code, err = run_cli(["eval", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "data.folder" in lines[0] and "plain name" in lines[0], err[-2000:]


def test_the_places_a_multi_source_card_names_are_dropped_in_every_source():
    from medzoo.engine.checkpoint_metrics import card_location_free

    kept = card_location_free({"root": "/x", "path": "builtin:breastmnist", "clean_split": "auto", "test_path": "/t",
                               "file": "a.npz", "sources": {"a": {"root": "/y", "folder": "a", "clean_split": "/c"},
                                                            "b": {"root": None, "test_fraction": 0.2}}}, "ckpt")
    assert kept == {"path": "builtin:breastmnist", "clean_split": "auto", "file": "a.npz",
                    "sources": {"a": {"folder": "a"}, "b": {"root": None, "test_fraction": 0.2}}}
