"""Prepared cache: every source decoded once into a memory-mappable `.npy` per sample, plus `manifest.json`.

`prepare(sources, out_dir)` reads each `(path, label)` with `read_volume` (files or DICOM folders), brings
it to one canonical channel-first layout and writes `out_dir/samples/<key>-<hash>.npy` atomically (a temp
file, then `os.replace`). `manifest.json` is rewritten as the run goes (at most every CHECKPOINT_SECONDS,
and whenever the run stops, by error or Ctrl-C), so a rerun skips every sample that has both a manifest
entry and an intact file, and re-reads only the missing, damaged or changed ones.

One file per sample, not one big array per shape: a sample is the unit that is written atomically,
resumed, verified and repaired; shapes may differ between samples; and a 262 MB slice stack is large
enough that opening one file per read costs nothing measurable (bench/loader.py).

Checksum: CRC-32 of the whole `.npy` file (header and data). It guards against accidents (a torn write,
truncation, flipped bits), not tampering, and runs at about 4 GB/s on one core where sha256 runs at 0.4-1.7
GB/s depending on the CPU, which matters because `verify="full"` reads the whole cache. The sources get a
sha256 (provenance: which bytes the cache was made from).

`PreparedStore(out_dir)` checks the cache against its manifest and serves its samples from
`np.load(mmap_mode="r")` (`.split()`: one array-like for `ArrayDataset`): no decoding while training.

A cache is untrusted input (`read_manifest`): the manifest is size-bounded before it is parsed, and every entry
must have its keys with the right types, a file that resolves inside `samples/` (symbolic links followed), a
label within the class list, a shape whose bytes stay under the readers' cap, and a dtype from `DTYPES`.
Anything else is one DataError line naming the cache, the entry and the fix (prepare again). `samples/` itself
must be a folder, not a link: `prepare` writes and deletes there (`samples_folder`).

The parts: `sources` (what to prepare), `writer` (`prepare`), `sample_files` (the `.npy` files and their
CRC-32), `manifest`, and `arrays` (`PreparedStore`, `MappedSamples`); the layout step is
`medzoo.transforms.layout.canonical_layout`.
"""

from medzoo.datasets.prepared_store.arrays import MappedSamples, PreparedStore
from medzoo.datasets.prepared_store.manifest import MANIFEST, read_manifest, rerun_hint
from medzoo.datasets.prepared_store.sample_files import (
    FORMAT,
    FORMAT_VERSION,
    SAMPLES,
    VERIFY,
    check_samples,
    file_crc32,
    npy_header,
    source_sha256,
    source_signature,
    write_npy,
)
from medzoo.datasets.prepared_store.sources import Source, sources_from_csv, sources_from_folder
from medzoo.datasets.prepared_store.writer import LAYOUTS, prepare
from medzoo.transforms.layout import canonical_layout

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LAYOUTS", "MANIFEST", "SAMPLES", "VERIFY", "MappedSamples", "PreparedStore", "Source",
    "canonical_layout", "check_samples", "file_crc32", "npy_header", "prepare", "read_manifest", "rerun_hint",
    "source_sha256", "source_signature", "sources_from_csv", "sources_from_folder", "write_npy",
]
