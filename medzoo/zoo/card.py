"""The model card: one typed, versioned description of a checkpoint, stored as JSON inside the file.

A card is data read from an untrusted file. `ModelCard.from_json` parses and validates every field (types,
ranges, plain values only, no interpolation syntax, names without path separators or markup) and migrates
cards written before schema 2; anything else is a `DataError` that names the file and the field. Nothing
in a card is ever instantiated or executed: its preprocessing steps are names from medzoo's step registry
with plain parameters (medzoo.transforms.registry), checked here and built only by that registry.

The field limits and checks live in `card_schema`, the reading of schema-1 cards in `card_v1`.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from medzoo.errors import DataError
from medzoo.transforms.registry import check_step
from medzoo.zoo.card_schema import (
    _CLASS_NAME,
    _NAME,
    BACKENDS,
    CONVS,
    LAYOUTS,
    MAX_CARD_BYTES,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_SIDE,
    MAX_WIDTH,
    MEMORY_FORMATS,
    MODEL_OPTIONS,
    NORMS,
    PRECISIONS,
    SCHEMA_VERSION,
    SHORTCUTS,
    STEMS,
    _check_json,
    _Fields,
    _no_constant,
    _numbers,
    _plain,
    check_ood,
)
from medzoo.zoo.card_v1 import _migrate_v1

LICENSE_NOTE = "research and teaching only; not a medical device and not for diagnosis"
VERSIONED = ("medzoo", "torch", "monai", "albumentations", "numpy")


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
    ood: dict[str, Any] | None = None  # out-of-distribution summary (medzoo.engine.ood); None: the card has none
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

    def with_ood(self, ood: dict[str, Any] | None) -> ModelCard:
        """This card with the out-of-distribution summary `ood` (its card form), checked as a reader checks it."""
        return replace(self, ood=check_ood(ood, self.num_classes, "the out-of-distribution summary"))

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
                     provenance=provenance, metrics=top.mapping("metrics"),
                     ood=check_ood(top.get("ood", (dict,), None, optional=True), num_classes, source))


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
