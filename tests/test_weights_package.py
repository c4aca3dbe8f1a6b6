"""The published checkpoints live in a distribution of their own (weights/, medzoo-weights): medzoo's wheel stays
small, the weights wheel stays under the package index's per-file limit, and the hub finds checkpoints through
the `medzoo.weights` entry point after the cache, checked against the manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from medzoo.errors import DataError
from medzoo.zoo import hub

REPO = Path(__file__).parents[1]
INDEX_FILE_LIMIT = 100 * 10**6  # the package index's default per-file limit


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Both wheels, built from a copy of the sources (a checkout's build/ folder can hold files of an older tree)."""
    base = tmp_path_factory.mktemp("wheels")
    skip = shutil.ignore_patterns(".git", ".venv", "build", "dist", "site", "runs", "*.egg-info", "__pycache__",
                                  ".ruff_cache", ".pytest_cache")
    shutil.copytree(REPO, base / "src", ignore=skip)
    return {"medzoo": build_wheel(base / "src", base / "medzoo"),
            "weights": build_wheel(base / "src" / "weights", base / "weights")}


def test_medzoo_wheel_carries_code_and_the_demo_set_but_no_checkpoint(wheels):
    names = zipfile.ZipFile(wheels["medzoo"]).namelist()
    assert not [name for name in names if name.endswith((".safetensors", ".pt", ".pth"))]
    assert "medzoo/datasets/builtin/breastmnist.npz" in names and "medzoo/zoo/published.json" in names
    assert wheels["medzoo"].stat().st_size < 5 * 10**6


def test_weights_wheel_holds_every_shipped_checkpoint_under_the_index_limit(wheels):
    archive = zipfile.ZipFile(wheels["weights"])
    names = set(archive.namelist())
    shipped = [entry for entry in hub.manifest().values() if entry.shipped]
    assert shipped and {f"medzoo_weights/{entry.file}" for entry in shipped} <= names
    for entry in shipped:
        assert hashlib.sha256(archive.read(f"medzoo_weights/{entry.file}")).hexdigest() == entry.sha256, entry.name
    points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert f"[{hub.WEIGHTS_GROUP}]" in points and "medzoo_weights" in points
    assert wheels["weights"].stat().st_size < INDEX_FILE_LIMIT


def fake_weights(tmp_path: Path, monkeypatch, payload: bytes) -> tuple[Path, hub.Published]:
    """An installed weights distribution `fakeweights` holding `demo.safetensors`, and its manifest entry."""
    package = tmp_path / "site" / "fakeweights"
    package.mkdir(parents=True)
    monkeypatch.delitem(sys.modules, "fakeweights", raising=False)  # another test's copy
    (package / "__init__.py").write_text("")
    (package / "demo.safetensors").write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    point = metadata.EntryPoint(name="fakeweights", value="fakeweights", group=hub.WEIGHTS_GROUP)
    monkeypatch.setattr(hub.metadata, "entry_points", lambda group: [point] if group == hub.WEIGHTS_GROUP else [])
    entry = hub.Published(name="demo", sha256=hashlib.sha256(payload).hexdigest(), task="test", file="demo.safetensors",
                          size=len(payload))
    monkeypatch.setattr(hub, "manifest", lambda path=None: {"demo": entry})
    monkeypatch.setenv("MEDZOO_HOME", str(tmp_path / "home"))
    return package, entry


def test_the_hub_finds_a_checkpoint_in_an_installed_weights_distribution(tmp_path, monkeypatch):
    package, _ = fake_weights(tmp_path, monkeypatch, b"weights v1")
    assert hub.weights_folders() == [package]
    assert hub.resolve("demo") == package / "demo.safetensors"


def test_a_verified_cached_copy_comes_before_the_weights_distribution(tmp_path, monkeypatch):
    package, _ = fake_weights(tmp_path, monkeypatch, b"weights v1")
    cached = tmp_path / "home" / "checkpoints" / "demo.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights v1")
    assert hub.resolve("demo") == cached
    cached.write_bytes(b"weights v2")  # not what the manifest says: the distribution's copy serves instead
    assert hub.resolve("demo") == package / "demo.safetensors"


def test_a_damaged_weights_file_is_refused_and_a_missing_one_names_the_install(tmp_path, monkeypatch):
    package, _ = fake_weights(tmp_path, monkeypatch, b"weights v1")
    (package / "demo.safetensors").write_bytes(b"weights v2")
    with pytest.raises(DataError, match="sha256 does not match.*Reinstall medzoo-weights"):
        hub.resolve("demo")
    (package / "demo.safetensors").unlink()
    with pytest.raises(DataError, match=r"pip install -e \./weights"):
        hub.resolve("demo")


def test_publish_ship_writes_into_the_weights_distribution(tmp_path, monkeypatch):
    from medzoo.commands.zoo import shipped_folder
    from medzoo.errors import ConfigError

    package, _ = fake_weights(tmp_path, monkeypatch, b"weights v1")
    assert shipped_folder() == package
    # A second distribution takes what the first has no room for; with none left, the checkpoint is refused.
    second = tmp_path / "site" / "fakeweights_2"
    second.mkdir()
    (second / "__init__.py").write_text("")
    points = [metadata.EntryPoint(name=name, value=name, group=hub.WEIGHTS_GROUP)
              for name in ("fakeweights", "fakeweights_2")]
    monkeypatch.setattr(hub.metadata, "entry_points", lambda group: points if group == hub.WEIGHTS_GROUP else [])
    monkeypatch.setattr(hub, "MAX_WEIGHTS_WHEEL_BYTES", 40)
    new = tmp_path / "new.safetensors"
    new.write_bytes(b"x" * 30)  # 10 bytes held + 30 fits the first
    assert shipped_folder(new) == package
    new.write_bytes(b"x" * 31)
    assert shipped_folder(new) == second
    (package / "new.safetensors").write_bytes(b"y" * 25)  # a checkpoint published again replaces its own bytes
    new.write_bytes(b"x" * 30)
    assert shipped_folder(new) == package
    (package / "new.safetensors").unlink()
    (second / "new.safetensors").write_bytes(b"y" * 5)  # published into the second before: it stays there
    assert shipped_folder(new) == second
    (second / "other.safetensors").write_bytes(b"z" * 11)  # the second has no room left for 30; the first has
    new.write_bytes(b"x" * 30)
    assert shipped_folder(new) == package
    assert not (second / "new.safetensors").exists(), "the older copy is removed, not left to fill its wheel"
    new.write_bytes(b"x" * 41)
    with pytest.raises(ConfigError, match=r"no installed weights distribution has room.*pip install -e \./weights-2"):
        shipped_folder(new)
    assert not new.exists(), "the staged checkpoint of a refused publish is removed"
    monkeypatch.setattr(hub.metadata, "entry_points", lambda group: [])
    with pytest.raises(ConfigError, match=r"none is installed: pip install -e \./weights"):
        shipped_folder()


def test_the_shipped_manifest_names_files_the_installed_weights_hold():
    folders = hub.weights_folders()
    assert folders, "medzoo-weights is not installed: pip install -e ./weights (the README's test command does)"
    entries = json.loads((REPO / "medzoo" / "zoo" / "published.json").read_text())
    for entry in entries:
        if entry.get("file"):
            assert any((folder / entry["file"]).is_file() for folder in folders), entry["name"]
