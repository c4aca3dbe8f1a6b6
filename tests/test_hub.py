"""Published checkpoints served from 127.0.0.1: download, cache hit, resume, sha256 mismatch, offline mode."""

from __future__ import annotations

import hashlib

import pytest
import torch

from medzoo.errors import DataError, UnknownNameError
from medzoo.zoo import create_model, hub
from medzoo.zoo.checkpoint import save_checkpoint
from medzoo.zoo.factory import model_from_checkpoint
from tests.loopback import serve

CARD = {"arch": "resnet10", "model_kwargs": {"stem": "small"}, "in_chans": 1, "num_classes": 2, "spatial_dims": 2,
        "classes": ["a", "b"]}


@pytest.fixture
def checkpoint_bytes(tmp_path) -> bytes:
    torch.manual_seed(0)
    model = create_model("resnet10", in_chans=1, num_classes=2, stem="small")
    return save_checkpoint(tmp_path / "src.safetensors", model, CARD).read_bytes()


@pytest.fixture
def published(monkeypatch, checkpoint_bytes):
    """A manifest with one downloadable checkpoint, served over loopback."""
    with serve(checkpoint_bytes, "demo.safetensors") as server:
        entry = hub.Published(name="demo_resnet10", sha256=hashlib.sha256(checkpoint_bytes).hexdigest(),
                              task="test task", urls=(server.url,))
        monkeypatch.setattr(hub, "manifest", lambda path=None: {entry.name: entry})
        monkeypatch.delenv("MEDZOO_OFFLINE", raising=False)
        yield entry, server


def test_download_then_cache_hit(published):
    entry, server = published
    path = hub.resolve(entry.name)
    assert path == hub.cache_dir() / "demo_resnet10.safetensors"
    model, card = model_from_checkpoint(path)
    assert card.arch == "resnet10" and len(server.requests) == 1
    assert hub.resolve(entry.name) == path and len(server.requests) == 1  # no second request


def test_truncated_download_resumes_with_a_range_request(published, checkpoint_bytes):
    entry, server = published
    part = hub.cache_dir() / "demo_resnet10.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(checkpoint_bytes[:1000])
    path = hub.resolve(entry.name)
    assert server.requests == [("bytes=1000-", 206)]
    assert path.read_bytes() == checkpoint_bytes


def test_sha256_mismatch_is_an_error_and_leaves_nothing(published, monkeypatch):
    entry, server = published
    bad = hub.Published(name=entry.name, sha256="0" * 64, task="t", urls=entry.urls)
    monkeypatch.setattr(hub, "manifest", lambda path=None: {bad.name: bad})
    with pytest.raises(DataError, match="sha256 .* does not match"):
        hub.resolve(bad.name)
    assert not any(hub.cache_dir().iterdir())


def test_corrupted_cache_file_is_fetched_again(published, checkpoint_bytes):
    entry, server = published
    path = hub.resolve(entry.name)
    path.write_bytes(b"garbage")
    assert hub.resolve(entry.name).read_bytes() == checkpoint_bytes and len(server.requests) == 2


def test_offline_mode_never_touches_the_network_and_says_what_is_missing(published, monkeypatch):
    entry, server = published
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    with pytest.raises(DataError, match="MEDZOO_OFFLINE") as info:
        hub.resolve(entry.name)
    assert str(hub.cache_dir()) in str(info.value) and server.requests == []


def test_local_paths_pass_through_and_unknown_names_suggest(tmp_path, published):
    local = tmp_path / "mine.safetensors"
    local.write_bytes(b"x")
    assert hub.resolve(str(local)) == local
    with pytest.raises(UnknownNameError, match="demo_resnet10"):
        hub.resolve("demo_resnet01")
    with pytest.raises(DataError, match="checkpoint not found"):
        hub.resolve(str(tmp_path / "missing.safetensors"))
