"""Fuzzing of the readers on a fixed set of seeded cases: damaged files end in a valid array or a DataError
naming the file.

Cases are generated from seeds: valid JPEG, PNG, TIFF, NIfTI (.nii, .nii.gz), DICOM, .npy and .npz files are
truncated at several points or get random bytes flipped, and random bytes are put behind every extension.
Each case must end in a successful read of a valid array or a medzoo DataError whose message names the
file: no other exception type, and no hang. The cases are the same on every machine: FUZZ_ROUNDS rounds per
format (MEDZOO_FUZZ_ROUNDS to search longer, e.g. 5000), whatever the machine's speed; a case still running
after HANG_SECONDS (far beyond the ~3 ms a case takes) is interrupted and reported as a hang.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medzoo.datasets.image_folder import ImageFolderSource
from medzoo.datasets.images import decode_image
from medzoo.datasets.readers import read_volume
from medzoo.errors import DataError
from medzoo.transforms.spec import TransformSpec
from tests.dicom_builders import write_dicom_series, write_dicom_slice
from tests.helpers import make_image_folder

# Rounds of seeded damage per format and original file (4 cases each): 13,310 cases in all, ~10 s on a 2-core
# machine (the time budget this replaced spent 20 s).
FUZZ_ROUNDS = int(os.environ.get("MEDZOO_FUZZ_ROUNDS", "300"))
# A case that runs this long is interrupted (where Python code runs) and reported as a hang. Generous on
# purpose: no wall-clock limit that a loaded 2-core machine could trip; only a real hang takes this long.
HANG_SECONDS = 60
CUT_FRACTIONS = (0.0, 0.05, 0.3, 0.6, 0.9, 0.99)
FLIP_COUNTS = (1, 4, 32)
RANDOM_SIZES = (1, 64, 700, 5000)
SUFFIXES = (".jpg", ".png", ".tif", ".nii", ".nii.gz", ".dcm", ".npy", ".npz")


# ----------------------------------------------------------------------------- valid files

def _image_bytes(fmt: str, rgb: bool) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (6, 8, 3) if rgb else (6, 8), dtype=np.uint8)
    image = Image.fromarray(small).resize((40, 30), Image.BICUBIC)  # smooth, so JPEG has real structure
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _file_bytes(folder: Path, name: str, write: Callable[[Path], None]) -> bytes:
    path = folder / name
    write(path)
    return path.read_bytes()


def valid_files(folder: Path) -> dict[str, list[bytes]]:
    """Suffix -> the bytes of small valid files of that format (the fuzzing starts from these)."""
    import tifffile

    rng = np.random.default_rng(0)
    volume = rng.integers(-500, 2000, (5, 9, 7)).astype(np.int16)
    nifti = nib.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.9, 0.8, 2.0, 1.0]))
    pages = rng.integers(0, 4000, (3, 12, 10)).astype(np.uint16)
    return {
        ".jpg": [_image_bytes("JPEG", rgb=False), _image_bytes("JPEG", rgb=True)],
        ".png": [_image_bytes("PNG", rgb=False), _image_bytes("PNG", rgb=True)],
        ".tif": [_file_bytes(folder, "a.tif", lambda p: tifffile.imwrite(p, pages, photometric="minisblack")),
                 _file_bytes(folder, "z.tif", lambda p: tifffile.imwrite(
                     p, pages, photometric="minisblack", compression="zlib"))],
        ".nii": [_file_bytes(folder, "a.nii", lambda p: nib.save(nifti, p))],
        ".nii.gz": [_file_bytes(folder, "a.nii.gz", lambda p: nib.save(nifti, p))],
        ".dcm": [_file_bytes(folder, "a.dcm", lambda p: write_dicom_slice(
            p, volume[0], series_uid="1.2.3.4", position=(0, 0, 0), orientation=(1, 0, 0, 0, 1, 0), instance=1))],
        ".npy": [_file_bytes(folder, "a.npy", lambda p: np.save(p, volume))],
        ".npz": [_file_bytes(folder, "a.npz", lambda p: np.savez_compressed(p, image=volume))],
    }


# ----------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    """One damaged file: its suffix, how it was made, and its bytes."""

    suffix: str
    how: str
    data: bytes

    def file_name(self, index: int) -> str:
        return f"case {index:04d} ({self.how}){self.suffix}"


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: max(1, int(len(data) * fraction))]


def flipped(data: bytes, rng: np.random.Generator, count: int) -> bytes:
    """`count` random bytes of `data` replaced by random values (the header included)."""
    out = bytearray(data)
    for position in rng.integers(0, len(out), count):
        out[position] = int(rng.integers(0, 256))
    return bytes(out)


def cases_for(suffix: str, originals: list[bytes], seed: int, rounds: int) -> Iterator[Case]:
    """The seeded damaged files of one format: truncations and random files, then `rounds` rounds of flips."""
    rng = np.random.default_rng(seed)
    for round_ in range(rounds):
        for original_index, data in enumerate(originals):
            tag = f"v{original_index}"
            if round_ == 0:
                for fraction in CUT_FRACTIONS:
                    yield Case(suffix, f"{tag} cut at {fraction:.0%}", truncated(data, fraction))
                for size in RANDOM_SIZES:
                    yield Case(suffix, f"random {size} bytes", rng.bytes(size))
            for count in FLIP_COUNTS:
                yield Case(suffix, f"{tag} round {round_} {count} flipped", flipped(data, rng, count))
            cut = truncated(flipped(data, rng, 2), float(rng.uniform(0.1, 1.0)))
            yield Case(suffix, f"{tag} round {round_} flipped and cut", cut)


def case_count(originals: int, rounds: int) -> int:
    """How many cases `cases_for` yields."""
    return originals * (len(CUT_FRACTIONS) + len(RANDOM_SIZES) + rounds * (len(FLIP_COUNTS) + 1))


def interleaved(streams: list[Iterator[Case]]) -> Iterator[Case]:
    """One case of each format in turn, until every stream is done."""
    for group in itertools.zip_longest(*streams):
        yield from (case for case in group if case is not None)


# ----------------------------------------------------------------------------- reading one case

def check_array(array: np.ndarray, ndims: tuple[int, ...], path: Path) -> None:
    assert isinstance(array, np.ndarray) and array.ndim in ndims and array.size > 0, (path, array.shape)
    assert all(n > 0 for n in array.shape), (path, array.shape)


def read_case(path: Path, suffix: str) -> None:
    """Read `path` with every reader that claims its suffix; a success must give a valid array."""
    if suffix in (".jpg", ".png", ".tif"):
        decoded = decode_image(path)
        check_array(decoded.pixels, (3,), path)
        assert decoded.pixels.dtype == np.uint8
    if suffix not in (".jpg", ".png"):
        volume = read_volume(path)
        check_array(volume.array, (3, 4), path)
        np.asarray(volume.array).sum()  # a memory-mapped result must be readable to its end


class CaseTimeout(Exception):
    """A case ran past HANG_SECONDS."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Interrupt the block after `seconds` (POSIX main thread only; elsewhere the timing check still runs)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def interrupt(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(path: Path, suffix: str) -> str | None:
    """None when the case ended well (a valid array or a DataError naming the file); else what went wrong."""
    try:
        with warnings.catch_warnings(), time_limit(HANG_SECONDS):
            warnings.simplefilter("ignore")  # pydicom and nibabel warn about odd values; not what is tested
            read_case(path, suffix)
    except DataError as exc:
        return None if path.name in str(exc) else f"DataError without the file name: {exc}"
    except Exception as exc:  # the point of the test: any other type is a finding
        return f"{type(exc).__name__}: {exc}"
    return None


# ----------------------------------------------------------------------------- tests

def test_damaged_and_random_files_end_in_an_array_or_a_data_error_naming_the_file(tmp_path):
    originals = valid_files(tmp_path)
    for suffix in SUFFIXES:  # the undamaged files must read, or the fuzzing proves nothing
        (tmp_path / f"valid{suffix}").write_bytes(originals[suffix][0])
        read_case(tmp_path / f"valid{suffix}", suffix)
    streams = [cases_for(suffix, originals[suffix], seed, FUZZ_ROUNDS) for seed, suffix in enumerate(SUFFIXES)]
    findings, counts = {}, dict.fromkeys(SUFFIXES, 0)
    for index, case in enumerate(interleaved(streams)):
        path = tmp_path / "cases" / case.file_name(index)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(case.data)
        problem = outcome(path, case.suffix)
        counts[case.suffix] += 1
        if problem:
            findings.setdefault((case.suffix, problem.split(":")[0]), []).append(f"{path.name}: {problem}")
        path.unlink()
        if problem and problem.startswith(CaseTimeout.__name__):
            break  # one hang is enough to know, and each costs HANG_SECONDS
    examples = [f"{len(found)} x {found[0]}" for found in findings.values()]  # one example per format and type
    assert not findings, f"{sum(map(len, findings.values()))} case(s) ended badly:\n" + "\n".join(examples)
    # Every case ran, the same ones on every machine.
    assert counts == {suffix: case_count(len(originals[suffix]), FUZZ_ROUNDS) for suffix in SUFFIXES}, counts


def test_zero_byte_files_are_a_data_error_naming_the_file(tmp_path):
    for suffix in SUFFIXES:
        path = tmp_path / f"empty{suffix}"
        path.write_bytes(b"")
        with pytest.raises(DataError, match=rf"empty{suffix.replace('.', '[.]')}: empty file \(0 bytes\)"):
            read_case(path, suffix)


def test_damaged_slice_of_a_dicom_series_is_named_never_dropped(tmp_path):
    volume = np.random.default_rng(1).integers(0, 1000, (4, 8, 8)).astype(np.int16)
    write_dicom_series(tmp_path / "series", volume)
    victim = tmp_path / "series" / "slice0003.dcm"  # the last slice: dropping it would leave no gap to notice
    valid, rng = victim.read_bytes(), np.random.default_rng(2)
    damaged = [truncated(valid, fraction) for fraction in CUT_FRACTIONS]
    damaged += [truncated(flipped(valid, rng, int(rng.choice(FLIP_COUNTS))), float(rng.uniform(0.3, 1.0)))
                for _ in range(40)]
    for index, data in enumerate(damaged):
        victim.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = read_volume(tmp_path / "series")
        except DataError as exc:
            assert victim.name in str(exc), (index, exc)
        else:  # the damage missed everything that matters: the volume must still be whole
            assert out.array.shape == (1, 4, 8, 8), (index, out.meta["skipped"])


def test_fuzzed_image_in_an_image_folder_is_counted_and_listed_when_skipped(tmp_path):
    make_image_folder(tmp_path, 4, 2, classes=("a", "b"))
    good = (tmp_path / "Training" / "a" / "img (0).jpg").read_bytes()
    rng = np.random.default_rng(7)
    damaged = None
    for count in itertools.cycle(FLIP_COUNTS):  # the first seeded damage that the decoder refuses
        candidate = truncated(flipped(good, rng, count), float(rng.uniform(0.02, 0.4)))
        probe = tmp_path / "probe.jpg"
        probe.write_bytes(candidate)
        if outcome(probe, ".jpg") is None and _refused(probe):
            damaged = candidate
            break
    (tmp_path / "Training" / "b" / "fuzzed (1).jpg").write_bytes(damaged)
    spec = TransformSpec(pre=[{"_target_": "albumentations.Resize", "height": 32, "width": 32}])
    settings = dict(name="fuzz", root=str(tmp_path), channels=1, val_fraction=0.25, cache="memory")
    with pytest.raises(DataError, match=r"fuzzed \(1\)\.jpg"):
        ImageFolderSource(**settings).load(spec.preprocess, spec.pre_spec)
    splits = ImageFolderSource(**settings, on_error="skip").load(spec.preprocess, spec.pre_spec)
    training = splits.report["training"]
    assert training["skipped"] == 1 and training["skipped_files"] == ["Training/b/fuzzed (1).jpg"]
    assert "fuzzed (1).jpg" in training["skip_reasons"]["Training/b/fuzzed (1).jpg"]
    assert splits.report["train_files"] - training["skipped"] == len(splits.train.labels) + len(splits.val.labels)


def _refused(path: Path) -> bool:
    try:
        decode_image(path)
    except DataError:
        return True
    return False
