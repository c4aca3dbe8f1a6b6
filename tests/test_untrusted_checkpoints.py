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
