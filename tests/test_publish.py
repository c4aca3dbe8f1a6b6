"""Publishing a checkpoint: fp16 weights, metrics measured after conversion that `medzoo eval` reproduces exactly,
a manifest entry with the file's sha256, and a model card."""

from __future__ import annotations

import hashlib
import json

import pytest
from omegaconf import OmegaConf

from medzoo.commands import zoo as zoo_command
from medzoo.errors import ConfigError
from medzoo.zoo import hub
from medzoo.zoo.checkpoint import read_card
from tests.test_cli import medzoo


def test_publish_then_eval_reproduces_the_card_exactly(tmp_path):
    run = tmp_path / "run"
    medzoo("train", "recipe=demo", "model=resnet10", "trainer.max_epochs=1", "trainer.progress=false",
           "logger.plots=false", f"hydra.run.dir={run}")
    manifest = tmp_path / "published.json"
    manifest.write_text("[]")
    medzoo("zoo", "publish", f"ckpt={run / 'checkpoints' / 'best.safetensors'}", "name=demo_test", "task='demo task'",
           "command='medzoo train recipe=demo'", "hardware='2-core CPU'", f"weights_dir={tmp_path / 'w'}",
           f"manifest={manifest}", f"docs_dir={tmp_path / 'docs'}")
    published = tmp_path / "w" / "demo_test.safetensors"
    entry = json.loads(manifest.read_text())[0]
    assert entry["sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()
    assert entry["size"] == published.stat().st_size, "the manifest bounds the download at the file's size"
    card = read_card(published)
    assert card.provenance.published["weights_dtype"] == "float16"
    from safetensors import safe_open

    with safe_open(str(published), framework="pt") as handle:
        assert handle.get_tensor("conv1.weight").dtype.is_floating_point
        assert str(handle.get_tensor("conv1.weight").dtype) == "torch.float16"
    medzoo("eval", f"ckpt={published}", "split=test", f"hydra.run.dir={tmp_path / 'eval'}")
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert evaluated["accuracy"] == card.metrics["test"]["accuracy"] == entry["summary"]["test"]["accuracy"]
    assert evaluated["auc"] == card.metrics["test"]["auc"]
    text = (tmp_path / "docs" / "demo_test.md").read_text()
    assert "official test split" in text and "medzoo train recipe=demo" in text
    # Too large for the package: refused unless published with ship=false, which keeps the card in the manifest.
    cfg = OmegaConf.create({"name": "too_big", "ckpt": str(published), "ship": True, "urls": [], "task": "",
                            "weights_dir": str(tmp_path / "big"), "trainer": {"device": "cpu"}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub, "MAX_PACKAGED_BYTES", 1024)
        with pytest.raises(ConfigError, match="ship=false"):
            zoo_command.publish(cfg)
    assert not (tmp_path / "big" / "too_big.safetensors").exists()
    medzoo("zoo", "publish", f"ckpt={published}", "name=demo_big", "task='demo task'", "ship=false",
           "urls=[https://example.org/demo_big.safetensors]", f"weights_dir={tmp_path / 'cache'}",
           f"manifest={manifest}", f"docs_dir={tmp_path / 'docs'}")
    entries = hub.manifest(manifest)
    big = entries["demo_big"]
    assert not big.shipped and big.urls == ("https://example.org/demo_big.safetensors",)
    assert big.card["metrics"]["test"]["accuracy"] == big.summary["test"]["accuracy"] == evaluated["accuracy"]
    assert big.sha256 == hashlib.sha256((tmp_path / "cache" / "demo_big.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "two words", "x\\y"])
def test_a_published_name_that_is_not_a_plain_file_name_is_refused_before_any_work(tmp_path, name):
    cfg = OmegaConf.create({"name": name, "ckpt": str(tmp_path / "missing.safetensors"), "ship": True,
                            "weights_dir": str(tmp_path / "w"), "trainer": {"device": "cpu"}})
    with pytest.raises(ConfigError, match="a published name is a file name too"):
        zoo_command.publish(cfg)
    assert not (tmp_path / "w").exists()
