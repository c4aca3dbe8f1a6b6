"""The model card: one typed, versioned description of a checkpoint, stored as JSON inside the file.

A card is data read from an untrusted file. `ModelCard.from_json` parses and validates every field (types,
ranges, plain values only, no interpolation syntax, names without path separators or markup) and migrates
cards written before schema 2; anything else is a `DataError` that names the file and the field. Nothing
in a card is ever instantiated or executed: its preprocessing steps are names from medzoo's step registry
with plain parameters (medzoo.transforms.registry), checked here and built only by that registry.
"""

from __future__ import annotations

import json
import math
import platform
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from medzoo.errors import DataError
from medzoo.transforms.registry import check_plain, check_step

SCHEMA_VERSION = 2
LICENSE_NOTE = "research and teaching only; not a medical device and not for diagnosis"
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
VERSIONED = ("medzoo", "torch", "monai", "albumentations", "numpy")
# A class name becomes a CSV column, a JSON key and an HTML cell: letters, digits and a few separators.
_CLASS_NAME = re.compile(r"\w[\w .,+()\-]{0,127}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class InputSpec:
    """How an input reaches the model: its layout, channels, spatial size and value range."""

    size: tuple[int, ...] | None = None  # spatial size after `pre` (H, W) or (D, H, W)
    layout: str = "image"  # image (2D file), slices (a volume's depth as channels, 2.5D), volume (3D)
    channels: int | None = None  # channels the reader/layout produces before the model (None: in_chans)
    depth_mode: str | None = None  # how a slice stack reaches `channels` (resample, crop...), layout=slices
    spacing: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    memory_format: str = "contiguous"  # channels_last when the model trained so (inference matches it)
    reader: str = "auto"  # volume reader name (medzoo.datasets.readers.READERS) or auto (by suffix)
    reader_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic `pre` steps (once per file) and the `eval` steps, as registered step names."""

    backend: str = "albumentations"
    pre: tuple[dict[str, Any], ...] = ()
    eval: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_steps(cls, backend: str, pre: list[dict[str, Any]], eval: list[dict[str, Any]]) -> Preprocessing:
        """From `TransformSpec.card()`: card-form steps (name, params)."""
        return cls(backend=backend, pre=tuple(pre), eval=tuple(eval))


@dataclass(frozen=True)
class Provenance:
    """Where the checkpoint comes from. Values for the record; `data_settings` are checked against the
    named data config before eval uses them, and `config` is never read back into a run."""

    recipe: str | None = None
    data_name: str | None = None
    data_group: str | None = None  # the Hydra data config the run used (conf/data/NAME.yaml)
    data_settings: dict[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    num_train: int | None = None
    num_val: int | None = None
    num_test: int | None = None
    epoch: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    license: str = "weights: Apache-2.0; check the training data's own license"
    intended_use: str = LICENSE_NOTE
    published: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """A checkpoint's card: the architecture and its options, input and output, preprocessing, provenance."""

    arch: str
    in_chans: int
    num_classes: int
    classes: tuple[str, ...]
    spatial_dims: int = 2
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    precision: str = "fp32"
    provenance: Provenance = field(default_factory=Provenance)
    metrics: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # --- what readers of a card ask -------------------------------------------------------------------
    @property
    def recipe(self) -> str | None:
        return self.provenance.recipe

    @property
    def input_size(self) -> list[int] | None:
        return list(self.input.size) if self.input.size is not None else None

    @property
    def kernel_dims(self) -> int:
        """Spatial dimensions of the conv kernels in the file: 2 for an ACS model, whose 2D kernels run on volumes."""
        return 2 if self.model_kwargs.get("conv") == "acs" else self.spatial_dims

    @property
    def channels_last(self) -> bool:
        """Whether inference runs the model in channels_last, as it trained (bit-identical evaluation)."""
        return self.input.memory_format == "channels_last" and self.spatial_dims == 2

    def with_metrics(self, metrics: dict[str, Any], **provenance: Any) -> ModelCard:
        """This card with other metrics (and provenance fields, e.g. `published`)."""
        return replace(self, metrics=metrics, provenance=replace(self.provenance, **provenance))

    # --- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_json(cls, text: str | None, source: str) -> ModelCard:
        """Parse and validate the card text of checkpoint `source`."""
        if text is None:
            raise DataError(f"{source}: no model card in the file; it is not a medzoo checkpoint.")
        if len(text) > MAX_CARD_BYTES:
            raise DataError(f"{source}: a model card of {len(text)} bytes (at most {MAX_CARD_BYTES}); refused.")
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{source}: the model card is not valid JSON ({str(exc)[:120]}); the file is damaged "
                            "or was edited by hand. Re-export it with medzoo.") from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str = "model card") -> ModelCard:
        """A card from its JSON form (schema 2, or an older card migrated on read), fully validated."""
        if not isinstance(data, dict):
            raise DataError(f"{source}: the model card must be a JSON object, got {type(data).__name__}.")
        _check_json(data, source, "card", 0)
        version = data.get("schema_version", 1)
        if version == 1:
            data = _migrate_v1(data, source)
        elif version != SCHEMA_VERSION:
            raise DataError(f"{source}: model card schema {version!r} is not known to this medzoo (it reads "
                            f"{SCHEMA_VERSION}); upgrade medzoo or re-export the checkpoint.")
        return _parse(data, source)


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

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise DataError(f"{source}: card field '{where}' must be an object.")
        self.data, self.where, self.source = data, where, source
        known = _KNOWN.get(where)
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
         "preprocessing", "precision", "provenance", "metrics"},
    "input": {"size", "layout", "channels", "depth_mode", "spacing", "value_range", "memory_format", "reader",
              "reader_options"},
    "preprocessing": {"backend", "pre", "eval"},
    "provenance": {"recipe", "data_name", "data_group", "data_settings", "fingerprint", "num_train", "num_val",
                   "num_test", "epoch", "config", "versions", "created", "license", "intended_use", "published"},
}


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


def _parse(data: dict[str, Any], source: str) -> ModelCard:
    top = _Fields(data, "", source)
    arch = top.text("arch", ..., _NAME)
    in_chans = top.integer("in_chans", 1, MAX_CHANNELS)
    num_classes = top.integer("num_classes", 0, MAX_CLASSES)
    spatial_dims = top.integer("spatial_dims", 2, 3, 2)
    classes = top.get("classes", (list,))
    if len(classes) != num_classes:
        raise top.fail("classes", f"names {len(classes)} classes but num_classes is {num_classes}")
    for name in classes:
        if not isinstance(name, str) or not _CLASS_NAME.fullmatch(name) or ".." in name:
            raise top.fail("classes", f"holds {str(name)[:40]!r}: class names are letters, digits, spaces and "
                                      "_ . , + ( ) - (no path separators, no markup); rename the class folder")
    if len(set(classes)) != len(classes):
        raise top.fail("classes", "repeats a name")
    model_kwargs = top.mapping("model_kwargs")
    for key, value in model_kwargs.items():
        if key not in MODEL_OPTIONS or isinstance(value, bool) or not isinstance(value, MODEL_OPTIONS[key]):
            raise top.fail(f"model_kwargs.{key}", f"is not an architecture option medzoo knows "
                                                  f"({', '.join(MODEL_OPTIONS)}) with a value of the right type")
    kwargs = _Fields(model_kwargs, "model_kwargs", source)
    kwargs.choice("stem", STEMS, None, optional=True)
    kwargs.choice("norm", NORMS, None, optional=True)
    kwargs.choice("conv", CONVS, None, optional=True)
    kwargs.choice("shortcut", SHORTCUTS, None, optional=True)
    if model_kwargs.get("conv") == "acs" and spatial_dims != 3:
        raise top.fail("model_kwargs.conv", "is 'acs', which runs 2D kernels on volumes, but spatial_dims is not 3")
    width = kwargs.get("width", (int, float), None, optional=True)
    if width is not None and not (math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise top.fail("model_kwargs.width", f"is {width}, outside (0, {MAX_WIDTH}]")

    spec = top.sub("input")
    input_spec = InputSpec(
        size=_numbers(spec, "size", spatial_dims, 1, MAX_SIDE, integer=True),
        layout=spec.choice("layout", LAYOUTS, "image"),
        channels=spec.integer("channels", 1, MAX_CHANNELS, None, optional=True),
        depth_mode=spec.text("depth_mode", None, _NAME),
        spacing=_numbers(spec, "spacing", None, 0, 1e6, integer=False),
        value_range=_numbers(spec, "value_range", 2, -1e12, 1e12, integer=False),
        memory_format=spec.choice("memory_format", MEMORY_FORMATS, "contiguous"),
        reader=spec.text("reader", "auto", _NAME),
        reader_options=spec.mapping("reader_options"))
    for key, value in input_spec.reader_options.items():
        if not _NAME.fullmatch(key) or isinstance(value, (dict, list)):
            raise spec.fail(f"reader_options.{key}", "must be a plain option name with a number or string")

    pre = top.sub("preprocessing")
    steps = {}
    for stage in ("pre", "eval"):
        listed = pre.get(stage, (list,), [], optional=True)
        for index, step in enumerate(listed):
            where = f"{source}: preprocessing.{stage}[{index}]"
            if not isinstance(step, dict) or "_target_" in step:
                raise DataError(f"{where}: a card step is {{\"name\": ..., \"params\": {{...}}}} with a registered "
                                "step name; `_target_` is never read from a card.")
            check_step(step, where, DataError)
        steps[stage] = tuple(listed)
    preprocessing = Preprocessing(backend=pre.choice("backend", BACKENDS, "albumentations"), **steps)

    prov = top.sub("provenance")
    provenance = Provenance(
        recipe=prov.text("recipe", None, _NAME), data_name=prov.text("data_name", None, _NAME),
        data_group=prov.text("data_group", None, _NAME), data_settings=_plain(prov.mapping("data_settings"), source, "provenance.data_settings"),
        fingerprint=prov.text("fingerprint"),
        **{key: prov.integer(key, 0, 10**12, None, optional=True)
           for key in ("num_train", "num_val", "num_test", "epoch")},
        config=prov.mapping("config"), versions=prov.mapping("versions"), created=prov.text("created"),
        license=prov.text("license", Provenance.license), intended_use=prov.text("intended_use", LICENSE_NOTE),
        published=prov.mapping("published"))
    return ModelCard(arch=arch, in_chans=in_chans, num_classes=num_classes, classes=tuple(classes),
                     spatial_dims=spatial_dims, model_kwargs=model_kwargs, input=input_spec,
                     preprocessing=preprocessing, precision=top.choice("precision", PRECISIONS, "fp32"),
                     provenance=provenance, metrics=top.mapping("metrics"))


def _plain(settings: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    """Settings that are plain values only: no reserved (`_target_`-like) keys, no interpolation."""
    check_plain(settings, f"{source}: card field '{where}'", error=DataError)
    return settings


# --- cards written before schema 2 ----------------------------------------------------------------------
def _migrate_v1(old: dict[str, Any], source: str) -> dict[str, Any]:
    """A schema-1 card (flat keys, `_target_` steps, the whole training config) in schema 2's shape. Its
    `_target_` steps become step names here; they are then checked against the registry like any other. Its
    data config's `_target_` is never used, but one outside medzoo's datasets marks an edited card: refused."""
    config = old.get("config") if isinstance(old.get("config"), dict) else {}
    data_config = config.get("data") if isinstance(config.get("data"), dict) else {}
    target = data_config.get("_target_")
    if target is not None and not (isinstance(target, str) and re.fullmatch(r"medzoo\.datasets\.[\w.]+", target)):
        raise DataError(f"{source}: card field 'config.data._target_' names {str(target)[:80]!r}, which is not a "
                        "medzoo data source; the card was edited. Refused.")
    data = old.get("data") if isinstance(old.get("data"), dict) else {}
    prepared = data.get("prepared") if isinstance(data.get("prepared"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    layout_source = {**prepared, **{k: v for k, v in data_config.items() if v is not None}}
    spatial_dims = old.get("spatial_dims", 2)
    layout = layout_source.get("layout")
    preprocessing = old.get("preprocessing") if isinstance(old.get("preprocessing"), dict) else {}
    num_classes = old.get("num_classes")
    classes = old.get("classes")
    if classes is None and isinstance(num_classes, int) and 0 <= num_classes <= MAX_CLASSES:
        classes = [f"class_{index}" for index in range(num_classes)]
    return {
        "schema_version": SCHEMA_VERSION,
        "arch": old.get("arch"), "in_chans": old.get("in_chans"), "num_classes": num_classes,
        "classes": classes, "spatial_dims": spatial_dims, "model_kwargs": old.get("model_kwargs") or {},
        "input": {
            "size": old.get("input_size"),
            "layout": "slices" if layout == "slices" else ("volume" if spatial_dims == 3 else "image"),
            "channels": layout_source.get("channels") if isinstance(layout_source.get("channels"), int) else None,
            "depth_mode": layout_source.get("depth_mode"),
            "memory_format": "channels_last" if trainer.get("channels_last") else "contiguous",
            "reader": layout_source.get("reader") or "auto",
            "reader_options": layout_source.get("reader_kwargs") or {},
        },
        "preprocessing": {"backend": preprocessing.get("backend", "albumentations"),
                          "pre": _v1_steps(preprocessing.get("pre")), "eval": _v1_steps(preprocessing.get("eval"))},
        "precision": old.get("precision") or "fp32",
        "provenance": {
            "recipe": old.get("recipe"), "data_name": data.get("name"), "data_group": _v1_group(data, data_config),
            "data_settings": {k: v for k, v in data_config.items() if k != "_target_"},
            "fingerprint": data.get("fingerprint"), "num_train": data.get("num_train"),
            "num_val": data.get("num_val"), "num_test": data.get("num_test"), "epoch": old.get("epoch"),
            "config": config, "versions": old.get("versions") or {}, "created": old.get("created"),
            "license": old.get("license"), "intended_use": old.get("intended_use"),
            "published": old.get("published") or {},
        },
        "metrics": old.get("metrics") or {},
    }


def _v1_steps(steps: Any) -> Any:
    if not isinstance(steps, list):
        return steps if steps is not None else []
    out = []
    for step in steps:
        if isinstance(step, dict) and "_target_" in step:
            params = {k: v for k, v in step.items() if k != "_target_"}
            if isinstance(params.get("transforms"), list):
                params["transforms"] = _v1_steps(params["transforms"])
            out.append({"name": step["_target_"], "params": params})
        else:
            out.append(step)
    return out


# Schema-1 cards named their data source by class; these are the data configs that used each one.
_V1_GROUPS = {"medzoo.datasets.prepared_source.PreparedSource": "prepared"}


def _v1_group(data: dict[str, Any], data_config: dict[str, Any]) -> str | None:
    target = data_config.get("_target_")
    if target in _V1_GROUPS:
        return _V1_GROUPS[target]
    name = data.get("name") or data_config.get("name")
    return name if isinstance(name, str) else None


# --- building a card --------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of the packages that shape a checkpoint."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
