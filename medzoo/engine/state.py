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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import DataError
from medzoo.zoo.checkpoint import torch_archive_problem

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
    """Refuse a file from which torch.load could claim more memory than the file's size (`torch_archive_problem`)."""
    problem = torch_archive_problem(path)
    if problem:
        raise DataError(f"{path}: cannot read resume state: {problem}. {FIX}")


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
    owner = getattr(load, "__self__", None)
    if isinstance(owner, torch.optim.Optimizer) and isinstance(value, dict):
        _check_optimizer_state(path, part, owner, value)
    try:
        return load(value)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError(f"{path}: the resume state's {part} does not fit this run ({type(exc).__name__}: "
                        f"{_quote(exc)}). {FIX}") from exc


def _check_optimizer_state(path: Path, part: str, optimizer: torch.optim.Optimizer, value: dict[str, Any]) -> None:
    """Raise a DataError unless `value` can drive `optimizer`: `load_state_dict` takes any per-parameter tensors
    and hyperparameters, and a wrong one surfaces only at the first step, as a shape or type error."""
    groups, state = value.get("param_groups"), value.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or len(groups) != len(optimizer.param_groups):
        return  # load_state_dict names these itself
    params: dict[Any, torch.Tensor] = {}
    for index, (group, current) in enumerate(zip(groups, optimizer.param_groups)):
        if not isinstance(group, dict) or not all(isinstance(i, int) for i in group.get("params") or [None]):
            return
        params.update(zip(group["params"], current["params"]))
        for key, expected in current.items():
            if key != "params" and key in group and not _same_kind(group[key], expected):
                raise DataError(f"{path}: the resume state's {part} sets {key}={_quote(group[key])} in parameter "
                                f"group {index}, where this run's optimiser takes {_quote(expected)}. {FIX}")
    for key, entries in state.items():
        param = params.get(key)
        for name, tensor in (entries.items() if isinstance(entries, dict) and param is not None else ()):
            # SGD's and Adam's buffers are shaped like their parameter; `step` and the like are scalars.
            if isinstance(tensor, torch.Tensor) and tensor.ndim and tensor.shape != param.shape:
                raise DataError(f"{path}: the resume state's {part} holds {_quote(name)} of shape "
                                f"{tuple(tensor.shape)} for a parameter of shape {tuple(param.shape)}. {FIX}")


def _same_kind(value: Any, expected: Any) -> bool:
    """A hyperparameter read from a state has the kind of this run's: a number, a flag, a tuple of numbers."""
    if expected is None or isinstance(expected, bool):
        return value is None or isinstance(value, bool)
    if isinstance(expected, int | float | torch.Tensor):
        number = value.numel() == 1 if isinstance(value, torch.Tensor) else isinstance(value, int | float)
        return number and not isinstance(value, bool)
    if isinstance(expected, list | tuple):
        return (isinstance(value, list | tuple) and len(value) == len(expected)
                and all(_same_kind(item, want) for item, want in zip(value, expected)))
    return isinstance(value, type(expected))
