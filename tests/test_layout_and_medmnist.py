"""Channel-first layout for any channel count, the 2.5D slice view, and MedMNIST layouts."""

from __future__ import annotations

import numpy as np
import pytest

from medzoo.datasets.medmnist import MedMNISTSource
from medzoo.errors import DataError
from medzoo.transforms.layout import depth_to_channels, fit_depth, to_channel_first
from tests.conftest import SHARED_DATA


@pytest.mark.parametrize("channels", [1, 3, 64, 1000])
def test_to_channel_first_any_count_and_copies_only_when_needed(channels):
    hwc = np.arange(8 * 6 * channels, dtype=np.int16).reshape(8, 6, channels)
    chw = to_channel_first(hwc)
    last = channels - 1
    assert chw.shape == (channels, 8, 6) and np.array_equal(chw[last], hwc[..., last])
    assert chw.flags.c_contiguous and (channels == 1 or not np.shares_memory(chw, hwc))
    already = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    view = to_channel_first(np.moveaxis(already, 0, -1))  # a channel-last view of channel-first memory
    assert np.shares_memory(view, already)
    dhwc = np.zeros((4, 5, 6, channels), np.float32)
    assert to_channel_first(dhwc).shape == (channels, 4, 5, 6)


def test_depth_to_channels_keeps_slices_in_order():
    volume = np.arange(2 * 5 * 3 * 3).reshape(2, 5, 3, 3)
    stack = depth_to_channels(volume)
    assert stack.shape == (10, 3, 3) and np.array_equal(stack[7], volume[1, 2])


@pytest.mark.parametrize("mode", ["crop", "pad", "resample"])
def test_fit_depth_to_a_fixed_channel_count(mode):
    volume = np.random.default_rng(0).random((1, 28, 4, 4)).astype(np.float32)
    for depth in (16, 28, 64):
        out = fit_depth(volume, depth, mode)
        assert out.shape == (1, depth, 4, 4)
    assert np.array_equal(fit_depth(volume, 16, "crop")[0, 0], volume[0, 6])
    padded = fit_depth(volume, 32, "pad")
    assert not padded[0, :2].any() and np.array_equal(padded[0, 2], volume[0, 0])
    resampled = fit_depth(volume, 55, "resample")  # 28 -> 55: every other output slice is an input slice
    assert np.allclose(resampled[0, ::2], volume[0]) and np.allclose(resampled[0, 1], volume[0, :2].mean(0))
    with pytest.raises(ValueError, match="depth mode"):
        fit_depth(volume, 8, "stretch")


def _adrenal() -> str:
    path = SHARED_DATA / "medmnist" / "adrenalmnist3d.npz"
    if not path.is_file():
        pytest.skip(f"AdrenalMNIST3D not found at {path} (set MEDZOO_TEST_DATA to shared/data)")
    return str(path)


def test_adrenal_as_volume_and_as_slices():
    volume = MedMNISTSource("a", ["n", "h"], path=_adrenal(), layout="volume").load()
    slices = MedMNISTSource("a", ["n", "h"], path=_adrenal(), layout="slices").load()
    assert volume.train.images.shape == (1188, 1, 28, 28, 28) and volume.spatial_dims == 3
    assert slices.train.images.shape == (1188, 28, 28, 28) and slices.spatial_dims == 2
    assert np.array_equal(slices.test.images[3], volume.test.images[3, 0])
    fixed = MedMNISTSource("a", ["n", "h"], path=_adrenal(), layout="slices", channels=64).load()
    assert fixed.in_chans == 64 and len(fixed.val.labels) == 98


def test_medmnist_found_through_medzoo_data_or_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))
    with pytest.raises(DataError, match="data.path=.*MEDZOO_DATA"):
        MedMNISTSource("adrenalmnist3d", ["n", "h"], layout="volume").load()
    with pytest.raises(DataError, match="layout=image"):
        MedMNISTSource("b", ["m", "n"], path="builtin:breastmnist", layout="slices").load()
