"""Real file names on the command line (issue 16): `medzoo predict ckpt=NAME FILE ...` with spaces, parentheses,
quotes and commas; `inputs=[a,b]` lists; a Hydra grammar error is one line naming the argument and the quoting."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from medzoo.cli import check_grammar, hydra_quote, paths_to_override
from medzoo.errors import ConfigError
from tests.test_cli import medzoo

NAMES = ["image(1).jpg", "it's here.png", "a,b=c [x].png", "C:\\scans\\x.png", "tail\\", "q\\'x", "ünï cødé.png"]


@pytest.mark.parametrize("name", NAMES)
def test_a_quoted_name_reaches_the_config_unchanged(name):
    override = OverridesParser.create().parse_overrides([f"inputs=[{hydra_quote(name)}]"])[0]
    assert override.value() == [name]


def test_plain_arguments_become_one_list_and_hydra_flags_keep_their_values():
    argv = paths_to_override("predict", ["ckpt=x", "a (1).jpg", "--cfg", "job", "b's.png", "-m"])
    assert argv[:4] == ["ckpt=x", "--cfg", "job", "-m"]
    assert OverridesParser.create().parse_overrides([argv[4]])[0].value() == ["a (1).jpg", "b's.png"]
    assert paths_to_override("train", ["recipe=demo", "odd"]) == ["recipe=demo", "odd"]  # only file commands
    with pytest.raises(ConfigError, match="inputs= and plain file arguments"):
        paths_to_override("predict", ["inputs=a.jpg", "b.jpg"])


def test_a_grammar_error_names_the_argument_and_how_to_quote_it():
    with pytest.raises(ConfigError) as caught:
        check_grammar("predict", ["ckpt=x", "inputs=image(1).jpg"])
    message = str(caught.value)
    assert "argument 2 'inputs=image(1).jpg'" in message and "inputs=\"'image(1).jpg'\"" in message
    assert "plain arguments" in message and "\n" not in message
    check_grammar("predict", ["ckpt=x", "--cfg", "job", "inputs=['image(1).jpg']"])  # valid: no error


@pytest.fixture(scope="module")
def awkward_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("my scans (copy)")
    paths = []
    for index, name in enumerate(["image (1).png", "it's, here.png"]):
        path = folder / name
        Image.fromarray(np.full((28, 28), 40 * index, np.uint8)).save(path)
        paths.append(path)
    return paths


def _predicted_paths(run_dir) -> list[str]:
    with open(run_dir / "predictions.csv", newline="") as handle:
        return [row["path"] for row in csv.DictReader(handle)]


def test_predict_takes_awkward_file_names_as_plain_arguments(tmp_path, awkward_images):
    run_dir = tmp_path / "run"
    medzoo("predict", "ckpt=breastmnist_resnet18", *map(str, awkward_images), f"hydra.run.dir={run_dir}")
    assert sorted(_predicted_paths(run_dir)) == sorted(str(p) for p in awkward_images)


def test_predict_takes_a_list_of_inputs(tmp_path, awkward_images):
    run_dir = tmp_path / "run"
    listed = ",".join(hydra_quote(str(p)) for p in awkward_images)
    medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs=[{listed}]", f"hydra.run.dir={run_dir}")
    assert len(_predicted_paths(run_dir)) == 2


def test_an_unquoted_parenthesis_is_one_line_with_the_fix(tmp_path, awkward_images):
    result = medzoo("predict", "ckpt=breastmnist_resnet18", f"inputs={awkward_images[0]}",
                    f"hydra.run.dir={tmp_path / 'run'}", check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Quote the value" in lines[0], result.stderr[-2000:]
