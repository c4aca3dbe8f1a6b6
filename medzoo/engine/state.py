"""Resume state (model, optimiser, scheduler, scaler, epoch, RNG): written atomically, read without unpickling code.

A resume state is untrusted input: it is read with `weights_only=True` from a PyTorch zip archive whose records
are checked first (stored, no larger than the file), and it carries a record of what it belongs to (the model's
arch and constructor options, the class names, the recipe) that is compared with this run before anything is
loaded. States written before the record existed (`STATE_VERSION` 1) still resume, with a warning, when their
tensors fit. Every problem is one `DataError` line naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import DataError

log = logging.getLogger(__name__)

STATE_FORMAT = "medzoo-resume"
# 1: no record (before resume states said what they belong to); 2: `record` compared on resume.
STATE_VERSION = 2
# Every state `Trainer.save_resume_state` writes has these parts.
STATE_PARTS = ("model", "optimizer", "scheduler", "scaler", "progress", "rng")
# How a state that is not this run's can be dealt with, quoted in every error.
FIX = ("Delete it to start fresh, point trainer.resume at this run's own last.pt, or start a new run dir "
       "(hydra.run.dir=NEW_DIR).")
# Longest quote of a value read from the file in an error message.
QUOTE = 160


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: a temporary file, fsync, then rename over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    """Read a resume state with `weights_only=True` (tensors and plain containers only), after checking that it
    is a PyTorch zip archive whose records claim no more bytes than the file holds."""
    _check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: its message suggests unsafe loading
        raise DataError(f"{path}: not a medzoo resume state: it holds Python objects other than tensors and "
                        f"plain containers, which are never loaded (loading them could run code). {FIX}") from exc
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise DataError(f"{path}: cannot read resume state ({type(exc).__name__}: {_quote(exc)}). {FIX}") from exc
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a medzoo resume state: it holds a {type(state).__name__}, not a dict. {FIX}")
    return state


def _check_archive(path: Path) -> None:
    """A zip whose records are all stored (as `torch.save` writes them) and fit in the file: nothing read from
    it can then claim more memory than the file's size. A legacy (non-zip) torch file is refused: its
    storages are allocated at the sizes the file claims before they are read."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable resume state (not a complete PyTorch zip archive: truncated, "
                        f"or another kind of file; {_quote(exc)}). {FIX}") from exc
    claimed = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED or record.file_size != record.compress_size:
            raise DataError(f"{path}: record {_quote(record.filename)} is compressed; torch.save never "
                            f"compresses, so this is not a resume state medzoo wrote. {FIX}")
        claimed += record.file_size
    if claimed > size:
        raise DataError(f"{path}: its records claim {claimed} bytes, more than the file's {size}: a damaged or "
                        f"forged archive. {FIX}")


def _quote(value: Any) -> str:
    """`value` on one line, shortened: what an error may show of something read from an untrusted file."""
    text = " ".join(str(value).split()) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= QUOTE else text[:QUOTE - 3] + "..."


def resume_record(model: torch.nn.Module, classes: list[str], recipe: str | None = None) -> dict[str, Any]:
    """What a resume state belongs to: the model's arch and constructor options, the classes, the recipe.

    Models outside the zoo (no `arch` attribute) are recorded by their class name; options they lack are None.
    """
    options = {name: getattr(model, name, None) for name in ("stem", "norm", "width")}
    return {"arch": getattr(model, "arch", type(model).__name__),
            "in_chans": getattr(model, "in_chans", None), "num_classes": getattr(model, "num_classes", None),
            "spatial_dims": getattr(model, "spatial_dims", None),
            "model_kwargs": {k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
                             for k, v in options.items()},
            "classes": [str(c) for c in classes], "recipe": recipe}


def stamp(state: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """`state` with the format, version and record `check_resume_state` compares on resume."""
    return {**state, "format": STATE_FORMAT, "format_version": STATE_VERSION, "record": record}


def check_resume_state(path: Path, state: dict[str, Any], record: dict[str, Any], progress: dict[str, Any]) -> None:
    """Raise a one-line DataError unless `state` (read from `path`) is a resume state of this run: every part
    present and of the right type, and the state's record equal to `record`. `progress` is a fresh
    `Progress` as a dict: the state's copy must have its fields, with values of the same types.

    A state without a record (written before version 2) is accepted with a warning: whether it fits is then
    left to `load_part`, which turns a shape mismatch into a DataError too.
    """
    version = state.get("format_version", 1)
    if "format" in state and state["format"] != STATE_FORMAT:
        raise DataError(f"{path}: format {_quote(state['format'])}, not a {STATE_FORMAT} state. {FIX}")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= STATE_VERSION:
        raise DataError(f"{path}: resume state format version {_quote(version)}; this medzoo reads versions 1 "
                        f"to {STATE_VERSION} (a newer medzoo wrote it, or it is damaged). Upgrade medzoo, or: {FIX}")
    missing = [part for part in STATE_PARTS if part not in state]
    if missing:
        raise DataError(f"{path}: resume state without {', '.join(missing)} (it has "
                        f"{_quote(sorted(map(str, state)))}): not a state `medzoo train` wrote. {FIX}")
    for part in STATE_PARTS:
        if not isinstance(state[part], dict):
            raise DataError(f"{path}: resume state part '{part}' is a {type(state[part]).__name__}, not a dict. "
                            f"{FIX}")
    _check_progress(path, state["progress"], progress)
    if version == 1 and "record" not in state:
        log.warning("%s: a resume state from before medzoo recorded which model and classes a state belongs to; "
                    "resuming because its tensors fit this run's model (the next state written records it)", path)
        return
    found = state.get("record")
    if not isinstance(found, dict):
        raise DataError(f"{path}: resume state version {version} without its record (found "
                        f"{_quote(found)}): damaged, or not written by medzoo. {FIX}")
    found = _flat(found)
    differences = [f"{field}: this run has {_quote(expected)}, the state {_quote(found.get(field))}"
                   for field, expected in _flat(record).items() if found.get(field) != expected]
    if differences:
        raise DataError(f"{path}: resume state of another model or run ({'; '.join(differences)}). {FIX}")


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """`model_kwargs.stem`-style keys for the nested options, so an error names the exact field."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _check_progress(path: Path, found: dict[str, Any], fresh: dict[str, Any]) -> None:
    for field, default in fresh.items():
        value = found.get(field)
        kind = (int, float) if isinstance(default, float) else type(default)
        if field not in found or not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{path}: resume state progress '{field}' is {_quote(value)}, expected a "
                            f"{type(default).__name__}. {FIX}")
        if isinstance(value, int) and value < 0 and field != "best_epoch":
            raise DataError(f"{path}: resume state progress '{field}' is {value}, below 0. {FIX}")
    rows = found["history"]
    if not all(isinstance(row, dict) and all(isinstance(v, int | float) for v in row.values()) for row in rows):
        raise DataError(f"{path}: resume state progress 'history' holds rows that are not metric tables "
                        f"(name: number). {FIX}")
    extra = sorted(set(map(str, found)) - set(fresh))
    if extra:
        raise DataError(f"{path}: resume state progress has unknown fields {_quote(extra)}. {FIX}")


def load_part(path: Path, part: str, load: Callable[[Any], Any], value: Any, keys: Any = None) -> Any:
    """`load(value)` (e.g. a model's `load_state_dict`), its failure one DataError line naming `part`.

    `keys`: the keys `value` must have, for parts whose `load_state_dict` takes any dict as attributes (a
    learning-rate scheduler's does).
    """
    if keys is not None and set(value) != set(keys):
        odd = sorted(map(str, set(value) ^ set(keys)))
        raise DataError(f"{path}: the resume state's {part} has other settings than this run's (differing: "
                        f"{_quote(odd)}); another sched config wrote it. {FIX}")
    try:
        return load(value)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: the resume state's {part} does not fit this run ({type(exc).__name__}: "
                        f"{_quote(exc)}). {FIX}") from exc
