"""What a valid model card may hold, and the checks that enforce it on a card's JSON.

The limits and allowed values of every card field, the plain-JSON check run on a whole card before it is
read, and `_Fields`, the typed access through which `medzoo.zoo.card` parses each field; every miss is a
`DataError` that names the file and the field. Imports no other zoo module.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from medzoo.errors import DataError
from medzoo.transforms.registry import check_plain

SCHEMA_VERSION = 2
MAX_CARD_BYTES = 8 * 2**20
MAX_CLASSES = 100_000
MAX_CHANNELS = 65_536
MAX_SIDE = 1 << 16
MAX_WIDTH = 8.0
LAYOUTS = ("image", "slices", "volume")
MEMORY_FORMATS = ("contiguous", "channels_last")
PRECISIONS = ("bf16", "fp16", "fp32")
BACKENDS = ("albumentations", "channel_first")
# Architecture options a card may set (the model families' constructor keywords), with their allowed values.
MODEL_OPTIONS: dict[str, tuple[type, ...]] = {"stem": (str,), "norm": (str,), "width": (int, float), "conv": (str,),
                                              "shortcut": (str,)}
STEMS = ("imagenet", "small", "auto")
NORMS = ("batch", "group", "instance")
CONVS = ("standard", "acs")
SHORTCUTS = ("projection", "zero_pad")
# The out-of-distribution summary (medzoo.engine.ood): its method, and bounds checked before any list is read.
OOD_METHODS = ("mahalanobis_layers", "mahalanobis_pca")  # mahalanobis_pca: one layer, written before the ensemble
MAX_OOD_LAYERS = 16
MAX_OOD_DIMS = 1024  # k, the projected dimensions
MAX_FEATURE_DIM = 65_536
MAX_OOD_VALUES = 1 << 22  # numbers in the centre, projection, class means and Cholesky factor together
MAX_OOD_MAGNITUDE = 1e15
# A class name becomes a CSV column, a JSON key and an HTML cell: letters, digits and a few separators.
_CLASS_NAME = re.compile(r"\w[\w .,+()\-]{0,127}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


MAX_DEPTH = 32


def _check_json(value: Any, source: str, where: str, depth: int) -> None:
    """Plain JSON values only, no interpolation syntax anywhere (a card is never resolved by OmegaConf)."""
    if depth > MAX_DEPTH:
        raise DataError(f"{source}: card field '{where}' nests deeper than {MAX_DEPTH} levels; refused.")
    if isinstance(value, str):
        if "${" in value:
            raise DataError(f"{source}: card field '{where}' holds interpolation syntax ({value[:60]!r}); "
                            "a card is data and is never interpolated. Refused.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, source, where, depth + 1)
            _check_json(item, source, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, source, f"{where}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise DataError(f"{source}: card field '{where}' holds a {type(value).__name__}; refused.")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- validation -----------------------------------------------------------------------------------------
class _Fields:
    """Typed access to a card's JSON object; each miss or wrong type is a DataError naming the field."""

    def __init__(self, data: Any, where: str, source: str, known: set[str] | None = None):
        if not isinstance(data, dict):
            raise DataError(f"{source}: card field '{where}' must be an object.")
        self.data, self.where, self.source = data, where, source
        known = _KNOWN.get(where) if known is None else known
        if known is not None:
            unknown = sorted(set(data) - known)
            if unknown:
                raise DataError(f"{source}: unknown card field(s) {', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}"
                                "; this medzoo does not read them. Upgrade medzoo or re-export the checkpoint.")

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}".lstrip(".")

    def fail(self, key: str, what: str) -> DataError:
        return DataError(f"{self.source}: card field '{self._name(key)}' {what}; the checkpoint is damaged or "
                         "was edited by hand. Use the file as medzoo wrote it.")

    def get(self, key: str, types: tuple[type, ...], default: Any = ..., optional: bool = False) -> Any:
        if key not in self.data or (self.data[key] is None and optional):
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in types:
            raise self.fail(key, f"must be {'/'.join(t.__name__ for t in types)}, not a boolean")
        if not isinstance(value, types):
            raise self.fail(key, f"must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")
        return value

    def integer(self, key: str, low: int, high: int, default: Any = ..., optional: bool = False) -> int | None:
        value = self.get(key, (int,), default, optional)
        if value is not None and value is not default and not low <= value <= high:
            raise self.fail(key, f"is {value}, outside {low}..{high}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ..., optional: bool = False) -> str | None:
        value = self.get(key, (str,), default, optional)
        if value is not None and value not in choices:
            raise self.fail(key, f"is {value[:40]!r}, not one of {', '.join(choices)}")
        return value

    def text(self, key: str, default: Any = None, pattern: re.Pattern[str] | None = None) -> str | None:
        value = self.get(key, (str,), default, optional=True)
        if value is not None and pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{value[:40]!r} is not a plain name (letters, digits, '_', '-', '.')")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        return dict(self.get(key, (dict,), {}, optional=True))

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key, (dict,), {}, optional=True), self._name(key), self.source)


_KNOWN: dict[str, set[str]] = {
    "": {"schema_version", "arch", "in_chans", "num_classes", "classes", "spatial_dims", "model_kwargs", "input",
         "preprocessing", "precision", "provenance", "metrics", "ood"},
    "input": {"size", "layout", "channels", "depth_mode", "spacing", "value_range", "memory_format", "reader",
              "reader_options"},
    "preprocessing": {"backend", "pre", "eval"},
    "provenance": {"recipe", "data_name", "data_group", "data_settings", "fingerprint", "num_train", "num_val",
                   "num_test", "epoch", "config", "versions", "created", "license", "intended_use", "published"},
    "ood": {"method", "percentile", "threshold", "num_fit", "num_val", "layers"},
}
_OOD_LAYER = {"feature_layer", "k", "feature_dim", "center", "projection", "class_means", "precision_cholesky",
              "residual_variance"}  # an ensemble's layer carries a `scale` too; a mahalanobis_pca card has them at the top


def _numbers(fields: _Fields, key: str, count: int | None, low: float, high: float, integer: bool) -> tuple | None:
    value = fields.get(key, (list,), None, optional=True)
    if value is None:
        return None
    if count is not None and len(value) != count:
        raise fields.fail(key, f"has {len(value)} values, {count} expected")
    kind = (int,) if integer else (int, float)
    for item in value:
        if isinstance(item, bool) or not isinstance(item, kind) or not math.isfinite(item) or not low <= item <= high:
            raise fields.fail(key, f"holds {item!r}; {'integers' if integer else 'numbers'} in {low}..{high} expected")
    return tuple(value)


def _plain(settings: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """Settings that are plain values only: no reserved (`_target_`-like) keys, no interpolation."""
    check_plain(settings, f"{source}: card field '{where}'", error=DataError)
    return settings


def _real(fields: _Fields, key: str, low: float, high: float, open_low: bool = False) -> float:
    value = fields.get(key, (int, float))
    if not math.isfinite(value) or not (low < value if open_low else low <= value) or value > high:
        raise fields.fail(key, f"is {value!r}; a finite number in {'(' if open_low else '['}{low:g}, {high:g}] expected")
    return float(value)


def _matrix(fields: _Fields, key: str, rows: int | None, cols: int) -> np.ndarray:
    """A list of `cols` numbers (rows None) or `rows` lists of `cols` numbers: shapes checked before any value."""
    value = fields.get(key, (list,))
    outer = value if rows is not None else [value]
    if rows is not None and len(value) != rows:
        raise fields.fail(key, f"has {len(value)} rows, {rows} expected")
    for index, row in enumerate(outer):
        if not isinstance(row, list) or len(row) != cols:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise fields.fail(key if rows is None else f"{key}[{index}]", f"has {size} values, {cols} expected")
        if not all(type(item) in (int, float) for item in row):  # type(): a boolean is not a number here
            raise fields.fail(key if rows is None else f"{key}[{index}]", "holds a value that is not a number")
    array = np.asarray(outer if rows is not None else value, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.abs(array).max(initial=0.0) > MAX_OOD_MAGNITUDE:
        raise fields.fail(key, f"holds a value that is not finite or beyond {MAX_OOD_MAGNITUDE:g}")
    return array


def check_ood(data: Any, num_classes: int, source: str) -> dict[str, Any] | None:
    """The card's `ood` field (medzoo.engine.ood), checked: types, each layer's shapes consistent with its k, its
    feature size and the class count (all bounded before any list is read), finite numbers, orthonormal
    projection rows and a Cholesky factor of a positive-definite precision matrix. None when the card has none."""
    if data is None:
        return None
    method = _Fields(data, "ood", source, known=None if not isinstance(data, dict) else set(data)).choice(
        "method", OOD_METHODS)
    single = method == "mahalanobis_pca"
    ood = _Fields(data, "ood", source, known=(_KNOWN["ood"] - {"layers"}) | _OOD_LAYER if single else None)
    _real(ood, "percentile", 0.0, 100.0, open_low=True)
    _real(ood, "threshold", -MAX_OOD_MAGNITUDE, MAX_OOD_MAGNITUDE)
    for key in ("num_fit", "num_val"):
        ood.integer(key, 0, 10**12, None, optional=True)
    if single:
        layers = [ood]
    else:
        entries = ood.get("layers", (list,))
        if not 1 <= len(entries) <= MAX_OOD_LAYERS:
            raise ood.fail("layers", f"holds {len(entries)} layers, 1..{MAX_OOD_LAYERS} expected")
        layers = [_Fields(entry, f"ood.layers[{index}]", source, known=_OOD_LAYER | {"scale"})
                  for index, entry in enumerate(entries)]
    sizes = [_ood_layer_size(layer, num_classes) for layer in layers]  # every size, before any list is read
    if sum(sizes) > MAX_OOD_VALUES:
        raise ood.fail("layers", f"needs {sum(sizes)} numbers, more than {MAX_OOD_VALUES}")
    names = [_check_ood_layer(layer, num_classes, single) for layer in layers]
    if len(set(names)) != len(names):
        raise ood.fail("layers", "names a layer twice")
    return dict(data)


def _ood_layer_size(layer: _Fields, num_classes: int) -> int:
    k = layer.integer("k", 1, MAX_OOD_DIMS)
    dim = layer.integer("feature_dim", 1, MAX_FEATURE_DIM)
    if k > dim:
        raise layer.fail("k", f"is {k}, more than feature_dim {dim}")
    size = dim + k * dim + num_classes * k + k * k
    if size > MAX_OOD_VALUES:
        raise layer.fail("k", f"with feature_dim {dim} and {num_classes} classes needs more than {MAX_OOD_VALUES} numbers")
    return size


def _check_ood_layer(layer: _Fields, num_classes: int, single: bool) -> str:
    """One layer's summary, its sizes already bounded; its name."""
    k, dim = layer.data["k"], layer.data["feature_dim"]
    name = layer.text("feature_layer", None, _NAME)
    if name is None:
        raise layer.fail("feature_layer", "is missing")
    _real(layer, "residual_variance", 0.0, MAX_OOD_MAGNITUDE, open_low=True)
    if not single:
        _real(layer, "scale", 0.0, MAX_OOD_MAGNITUDE, open_low=True)
    _matrix(layer, "center", None, dim)
    _matrix(layer, "class_means", num_classes, k)
    projection = _matrix(layer, "projection", k, dim)
    if np.abs(projection @ projection.T - np.eye(k)).max() > 1e-3:
        raise layer.fail("projection", "does not hold orthonormal rows")
    factor = _matrix(layer, "precision_cholesky", k, k)
    if np.any(np.triu(factor, 1) != 0) or np.any(np.diag(factor) <= 0):
        raise layer.fail("precision_cholesky", "is not lower-triangular with a positive diagonal")
    return name
