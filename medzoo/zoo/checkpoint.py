"""The medzoo checkpoint file: safetensors weights with the model's card (JSON metadata) in the same file.

Loading never unpickles: safetensors holds only tensors and strings. Plain PyTorch state dicts are
imported with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from medzoo.errors import DataError
from medzoo.zoo.card import ModelCard

if TYPE_CHECKING:
    import torch

# torch is imported by the functions that handle tensors: reading a card (`medzoo zoo info`) needs none.

FORMAT = "medzoo-checkpoint/1"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
_WRAPPER_KEYS = ("state_dict", "model")  # how training scripts commonly nest a state dict
_DDP_PREFIX = "module."


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard | Mapping[str, Any],
                    dtype: torch.dtype | None = None) -> Path:
    """Write the model's weights (floating ones cast to `dtype` if given, e.g. fp16 for a smaller file; a tensor
    that `dtype` cannot hold, with a value beyond its range or a norm the cast changes by more than 0.1 %, stays
    as it is) and `card` to `path` atomically (a crash never leaves a partial file)."""
    path = Path(path)
    card = card if isinstance(card, ModelCard) else ModelCard.from_dict(dict(card), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: _narrowed(v, dtype) for k, v in tensors.items()}
    return _write(path, tensors, card)


def _narrowed(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `dtype` when the cast keeps it (no value beyond the range, and the tensor as a whole within 0.1 %:
    values far below its scale may round to zero), else as it is."""
    import torch

    if not tensor.is_floating_point() or tensor.dtype == dtype:
        return tensor
    cast = tensor.to(dtype)
    if bool((torch.isinf(cast) & torch.isfinite(tensor)).any()):
        return tensor
    reference = tensor.double()
    lost = (cast.double() - reference).norm()
    return tensor if lost > 1e-3 * reference.norm() else cast


def replace_card(path: str | Path, card: ModelCard) -> Path:
    """Store `card` in the medzoo checkpoint at `path` in place of its card, the tensors left as they are."""
    path = Path(path)
    with _open(path) as handle:
        _card(handle.metadata(), path)
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    return _write(path, tensors, card)


def _write(path: Path, tensors: dict[str, torch.Tensor], card: ModelCard) -> Path:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "card": card.to_json()})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; a checkpoint is meant to be shared
    os.replace(tmp, path)
    return path


def read_card(path: str | Path) -> ModelCard:
    """The card stored in a medzoo checkpoint, parsed and validated, without loading its tensors (or torch)."""
    with _open(path, framework="numpy") as handle:
        return _card(handle.metadata(), path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Weights and card of a medzoo checkpoint (`.safetensors`)."""
    with _open(path) as handle:
        card = _card(handle.metadata(), path)
        return _no_empty_axis({name: handle.get_tensor(name) for name in handle.keys()}, path), card


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard | None]:
    """Weights and card (None for a card-less file) of a .safetensors checkpoint or a plain PyTorch state
    dict (.pt/.pth/.bin, read with weights_only=True), never unpickling anything else."""
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path), None
    if suffix not in SAFETENSORS_SUFFIXES:
        raise DataError(f"{path}: unknown checkpoint type '{suffix}'. Use a medzoo .safetensors checkpoint or a "
                        f"plain state dict saved with torch.save ({', '.join(TORCH_SUFFIXES)}).")
    with _open(path) as handle:
        metadata = handle.metadata() or {}
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    # Card-less safetensors (e.g. from the Hugging Face Hub) are plain state dicts.
    return _no_empty_axis(state, path), (_card(metadata, path) if metadata.get("format") == FORMAT else None)


def _open(path: str | Path, framework: str = "pt"):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}. Pass ckpt=PATH to a .safetensors file written by medzoo.")
    try:
        return safe_open(str(path), framework=framework)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable safetensors checkpoint ({str(exc)[:160]}). The file may be "
                        "truncated or not a medzoo checkpoint; pickled .pt/.pth files are never loaded as "
                        "checkpoints.") from exc


def _card(metadata: dict[str, str] | None, path: str | Path) -> ModelCard:
    if not metadata or metadata.get("format") != FORMAT or "card" not in metadata:
        raise DataError(f"{path}: safetensors file without a medzoo card (format {FORMAT!r}); "
                        "it holds weights only, so the model it belongs to is unknown.")
    return ModelCard.from_json(metadata["card"], str(path))


def torch_archive_problem(path: str | Path) -> str | None:
    """Why `torch.load(path, weights_only=True)` could claim more memory than the file holds, or None.

    The file must be a zip whose records are all stored (as `torch.save` writes them) and together fit in the
    file: a deflated record inflates to any size, and a legacy (non-zip) torch file has its storages allocated at
    the sizes it claims before they are read.
    """
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:160]
        return (f"not a complete PyTorch zip archive (truncated, saved in torch's legacy format, or another kind "
                f"of file; {reason})")
    claimed = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED or record.file_size != record.compress_size:
            return f"record {record.filename[:160]!r} is compressed, which torch.save never does"
        claimed += record.file_size
    if claimed > size:
        return f"its records claim {claimed} bytes, more than the file's {size}: a damaged or forged archive"
    return None


def _no_empty_axis(state: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    # A zero-length axis costs no bytes in the file, so its other axes could claim any channel or class count
    # for the model built from them; no trained layer has one.
    for name, tensor in state.items():
        if 0 in tensor.shape:
            raise DataError(f"{path}: tensor {name[:160]!r} has shape {tuple(tensor.shape)}, with an empty axis, "
                            "which no trained layer has: the file is damaged or forged. Use the weights as the "
                            "training run saved them.")
    return state


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    import torch

    problem = torch_archive_problem(path)
    if problem:
        raise DataError(f"{path}: refused, {problem}; only a plain state dict as torch.save writes it by default is "
                        "read, with torch.load(weights_only=True): from a trusted environment, re-save it with "
                        "torch.save(model.state_dict(), path).")
    try:
        # weights_only: a pickle may run any code while it loads; this unpickler only rebuilds tensors.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = _unpickler_reason(exc)
        raise DataError(f"{path}: refused, not a plain state dict loadable with torch.load(weights_only=True) "
                        f"({reason}). Pickled objects are never unpickled: from a trusted environment, re-save "
                        "it with torch.save(model.state_dict(), path).") from exc
    return _as_state_dict(obj, path)


def _unpickler_reason(exc: BaseException) -> str:
    # torch's message starts with advice to retry with weights_only=False, the one thing medzoo never does;
    # the line worth showing names the object that was refused.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "WeightsUnpickler error" in line]
    reason = named[0] if named else (lines[0] if lines else type(exc).__name__)
    return reason.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        kind = type(obj).__name__
        raise DataError(f"{path}: holds a {kind}, not a state dict of named tensors; save it with "
                        "torch.save(model.state_dict(), path).")
    # DistributedDataParallel prefixes every name; the prefix is not part of the architecture.
    if all(name.startswith(_DDP_PREFIX) for name in obj):
        obj = {name[len(_DDP_PREFIX):]: tensor for name, tensor in obj.items()}
    return _no_empty_axis(dict(obj), path)
