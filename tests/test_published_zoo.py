"""The published checkpoints as a user gets them: listed offline on a fresh machine, and each one's official
test accuracy reproduced exactly by `medzoo eval` from the checkpoint's own card and the real data."""

from __future__ import annotations

import json

import pytest

from medzoo.zoo import hub
from medzoo.zoo.checkpoint import read_card
from tests.conftest import BRAIN_TUMOR, SHARED_DATA
from tests.test_cli import medzoo

# The four: brain-tumour 2D, AdrenalMNIST3D 2.5D and 3D, BreastMNIST.
FOUR = ("brain_tumor_resnet18_cpu", "adrenalmnist3d_resnet18_2d5", "adrenalmnist3d_resnet18_3d",
        "breastmnist_resnet18")
SHIPPED = sorted(name for name, entry in hub.manifest().items() if entry.shipped)


def test_an_offline_fresh_machine_lists_the_four_checkpoints_inside_the_package():
    lines = {line.split()[0]: line for line in medzoo("zoo", "list").stdout.splitlines() if line.strip()}
    for name in FOUR:
        assert lines[name].rstrip().endswith("packaged"), lines[name]


def data_on_disk(card) -> str:
    """What the checkpoint's data needs under ../shared/data, or a skip that names it."""
    data = card.provenance.data_settings
    if str(data.get("path") or "").startswith("builtin:"):  # shipped inside medzoo (BreastMNIST)
        return str(SHARED_DATA)
    needed = BRAIN_TUMOR / "Training" if data["name"] == "brain_tumor" else SHARED_DATA / "medmnist" / data["file"]
    if not needed.exists():
        pytest.skip(f"real data for {data['name']} not found at {needed} (set MEDZOO_TEST_DATA to shared/data)")
    return str(SHARED_DATA)


@pytest.mark.parametrize("name", SHIPPED)
def test_eval_reproduces_the_cards_test_accuracy_from_the_packaged_file(name, tmp_path):
    card = read_card(hub.resolve(name))
    data = data_on_disk(card)
    root = [f"data.root={BRAIN_TUMOR}"] if card.provenance.data_name == "brain_tumor" else []  # as the issue
    medzoo("eval", f"ckpt={name}", *root, "split=test", f"hydra.run.dir={tmp_path}", env={"MEDZOO_DATA": data})
    measured = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert measured["accuracy"] == card.metrics["test"]["accuracy"]
    assert measured["confusion_matrix"] == card.metrics["test"]["confusion_matrix"]
