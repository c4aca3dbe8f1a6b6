"""`pretrained=hf-hub:OWNER/REPO[@REVISION]`: timm's Hub ids resolved through medzoo's hub against a Hub-like server
on 127.0.0.1: verified against the sha256 the Hub declares, bounded by the download cap, cached by commit."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from medzoo.download import MAX_DOWNLOAD_ENV
from medzoo.errors import DataError
from medzoo.zoo import create_model, hub
from tests.loopback import RangeHandler, RangeServer, running

COMMIT = "c0ffee" * 6 + "c0fe"
TIMM_ID = "hf-hub:timm/resnet18.a1_in1k"


class HubHandler(RangeHandler):
    """The loopback server, plus what a Hub also does: 404 with X-Error-Code EntryNotFound for a file the repository
    lacks, and (for the hash test) an ETag that does not match the body."""

    def do_GET(self, head: bool = False) -> None:
        srv = self.server
        if self.path.rsplit("/", 1)[-1] in srv.missing:
            srv.calls.append((self.command, self.path))
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET(head)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword == "ETag" and self.server.etag is not None:
            value = f'"{self.server.etag}"'
        super().send_header(keyword, value)


@contextmanager
def hub_server(payload: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[RangeServer]:
    constants = pytest.importorskip("huggingface_hub.constants")
    srv = RangeServer(("127.0.0.1", 0), HubHandler)
    srv.requests, srv.calls, srv.payload, srv.hf_commit = [], [], payload, COMMIT
    srv.missing, srv.etag = set(), None
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "MEDZOO_OFFLINE",
                "HF_HUB_OFFLINE", MAX_DOWNLOAD_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", base)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", base + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with running(srv):
        yield srv


def timm_layout_weights() -> dict[str, torch.Tensor]:
    """A quarter-width ResNet-18 in timm's names (those of medzoo's ResNet, tests/test_external_weights.py)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in create_model("resnet18", width=0.25).eval().state_dict().items()}


def _gets(srv: RangeServer, filename: str) -> int:
    return sum(1 for method, path in srv.calls if method == "GET" and path.endswith(f"/{filename}"))


def test_a_timm_hub_id_downloads_verified_into_the_cache_by_commit(monkeypatch, tmp_path: Path) -> None:
    state = timm_layout_weights()
    payload = save(state)
    with hub_server(payload, monkeypatch, tmp_path) as srv:
        path = hub.resolve(TIMM_ID)
        assert path == hub.cache_dir() / "hf-hub" / "timm--resnet18.a1_in1k" / COMMIT / "model.safetensors"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
        # The model: width and stem from the tensors, channels adapted, a new head.
        model = create_model("resnet18", pretrained=TIMM_ID, in_chans=1, num_classes=2)
        assert (model.width, model.stem, model.in_chans) == (0.25, "imagenet", 1)
        assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
        # A second use asks the Hub which commit the id names now, and reads the verified file from the cache.
        assert hub.resolve(TIMM_ID) == path and _gets(srv, "model.safetensors") == 1
        # A revision goes to the Hub as asked.
        hub.resolve(TIMM_ID + "@v2")
        assert any(path_.endswith("/resolve/v2/model.safetensors") for _, path_ in srv.calls)


def test_a_repository_with_only_pytorch_model_bin_is_read_with_weights_only(monkeypatch, tmp_path: Path) -> None:
    state = timm_layout_weights()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with hub_server(buffer.getvalue(), monkeypatch, tmp_path) as srv:
        srv.missing = {"model.safetensors"}
        path = hub.resolve(TIMM_ID)
        assert path.name == "pytorch_model.bin"
        model = create_model("resnet18", pretrained=TIMM_ID)
        assert torch.equal(model.fc.weight, state["fc.weight"])
        srv.missing = {"model.safetensors", "pytorch_model.bin"}
        with pytest.raises(DataError, match="holds neither model.safetensors nor pytorch_model.bin"):
            hub.resolve("hf-hub:timm/other")


def test_a_body_that_is_not_the_declared_sha256_is_deleted(monkeypatch, tmp_path: Path) -> None:
    with hub_server(save(timm_layout_weights()), monkeypatch, tmp_path) as srv:
        srv.etag = "0" * 64
        with pytest.raises(DataError, match=r"sha256 .* does not match the Hub.s declared sha256 0000000000"):
            hub.resolve(TIMM_ID)
        srv.etag = "not-a-sha256"  # a file kept in git, not LFS: nothing to verify it against
        with pytest.raises(DataError, match="declares no sha256"):
            hub.resolve(TIMM_ID)
    folder = hub.cache_dir() / "hf-hub"
    assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def test_a_file_over_the_download_cap_is_refused_before_its_body(monkeypatch, tmp_path: Path) -> None:
    payload = save(timm_layout_weights())
    with hub_server(payload, monkeypatch, tmp_path) as srv:
        monkeypatch.setenv(MAX_DOWNLOAD_ENV, str(len(payload) - 1))
        with pytest.raises(DataError, match=rf"declares {len(payload):,} bytes, more than its bound"):
            hub.resolve(TIMM_ID)
        assert _gets(srv, "model.safetensors") == 0


def test_offline_and_malformed_ids_are_data_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDZOO_OFFLINE", "1")
    with pytest.raises(DataError, match=r"MEDZOO_OFFLINE is set: download model.safetensors from "
                                        r"https://huggingface.co/timm/resnet18.a1_in1k"):
        create_model("resnet18", pretrained=TIMM_ID)
    for bad in ("hf-hub:resnet18", "hf-hub:timm/../x", "hf-hub:a/b/c", "hf-hub:timm/x@a/b"):
        with pytest.raises(DataError, match="not a Hugging Face Hub model id"):
            hub.resolve(bad)


def test_no_hub_at_all_is_a_data_error(monkeypatch, tmp_path: Path) -> None:
    with hub_server(b"", monkeypatch, tmp_path) as srv:
        srv.fail_with = 503
        with pytest.raises(DataError, match="the Hugging Face Hub gave no model.safetensors for timm/resnet18"):
            hub.resolve(TIMM_ID)
