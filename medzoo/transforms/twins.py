"""The per-batch twin of each per-sample step, so that a recipe states its augmentation once (`train`).

When a split is augmented on the device (loader.device_cache, loader.device_augment), each step of `train` is
replaced by its twin from `medzoo.transforms.batch`: the same operation with the same parameters, vectorised
over a (B, C, H, W) batch. A medzoo multichannel step's twin is the batch class of the same name. An
albumentations step's twin is listed below with how its parameters translate; a setting the twin has no
counterpart for must keep the value the twin assumes, otherwise there is no twin and the step is named in
a ConfigError. tests/test_transform_twins.py holds every twin to its per-sample step on the same parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medzoo.errors import ConfigError
from medzoo.transforms.registry import BATCH_PREFIX, is_step, split_step, step_class, step_names

MULTICHANNEL_PREFIX = "medzoo.transforms.multichannel."
_INTERPOLATIONS = {0: "nearest", 1: "bilinear"}  # cv2.INTER_NEAREST, cv2.INTER_LINEAR
_BORDERS = {0: "constant", 1: "replicate", 2: "reflect"}  # cv2.BORDER_CONSTANT, _REPLICATE, _REFLECT


def _shift(value: Any) -> Any:
    """albumentations' translate_percent: None is no shift; per-axis mappings have no twin."""
    if isinstance(value, Mapping):
        raise ConfigError(f"translate_percent={value!r} per axis (the batch twin takes one range for both)")
    return 0.0 if value is None else value


def _code(table: dict[int, str], setting: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in table:
            raise ConfigError(f"{setting}={value!r} (the batch twin takes {sorted(table)})")
        return table[value]
    return convert


@dataclass(frozen=True)
class Twin:
    """How an albumentations step becomes its batch twin.

    Attributes:
        batch: the twin's class name in medzoo.transforms.batch.
        convert: parameter -> function giving the twin's value (parameters not listed pass unchanged).
        rename: albumentations parameter -> the twin's name for it.
        assumed: settings the twin has no counterpart for, with the one value it implements.
        ignored: settings that do not touch the image (masks, boxes), dropped.
        fixed: values the twin is given whatever the step says (albumentations' sampling rules).
    """

    batch: str
    convert: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    assumed: Mapping[str, Any] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = field(default_factory=dict)


_GEOMETRY_IGNORED = frozenset({"mask_interpolation", "fill_mask", "rotate_method"})

ALBUMENTATIONS_TWINS: dict[str, Twin] = {
    "albumentations.HorizontalFlip": Twin("HorizontalFlip"),
    "albumentations.VerticalFlip": Twin("VerticalFlip"),
    "albumentations.RandomRotate90": Twin("RandomRotate90"),
    "albumentations.Affine": Twin(
        "Affine", convert={"interpolation": _code(_INTERPOLATIONS, "interpolation"),
                           "border_mode": _code(_BORDERS, "border_mode"), "fill": float,
                           "translate_percent": _shift},
        assumed={"translate_px": None, "shear": (0.0, 0.0), "fit_output": False, "balanced_scale": False},
        ignored=_GEOMETRY_IGNORED, fixed={"whole_pixels": True}),
    "albumentations.RandomResizedCrop": Twin(
        "RandomResizedCrop", convert={"interpolation": _code(_INTERPOLATIONS, "interpolation")},
        assumed={"area_for_downscale": None}, ignored=_GEOMETRY_IGNORED),
    "albumentations.Downscale": Twin(
        "Downscale", assumed={"interpolation_pair": {"upscale": 0, "downscale": 0}}),
    "albumentations.ImageCompression": Twin("ImageCompression"),
    "albumentations.GaussianBlur": Twin("GaussianBlur"),
    "albumentations.RandomBrightnessContrast": Twin("BrightnessContrast", assumed={"ensure_safe_range": False}),
    "albumentations.RandomGamma": Twin("Gamma"),
    "albumentations.Normalize": Twin("Normalize"),
}


def _same(value: Any, assumed: Any) -> bool:
    if isinstance(value, Mapping) and isinstance(assumed, Mapping):
        return set(value) == set(assumed) and all(_same(value[k], assumed[k]) for k in value)
    if isinstance(value, (list, tuple)) and isinstance(assumed, (list, tuple)):
        return len(value) == len(assumed) and all(_same(a, b) for a, b in zip(value, assumed))
    return value == assumed


def _parameters(cls: type) -> dict[str, Any]:
    """A class's constructor parameters with their defaults (inspect.Parameter.empty when required), from
    the first class in its MRO that names them; a batch step's are its per-sample twin's, which it builds."""
    cls = getattr(cls, "sample_twin", None) or cls
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        named = {name: p.default for name, p in inspect.signature(klass.__init__).parameters.items()
                 if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if named:
            return named
    return {}


def _albumentations_twin(name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    twin = ALBUMENTATIONS_TWINS[name]
    target = BATCH_PREFIX + twin.batch
    accepted = _parameters(step_class(target))
    settings = {k: v for k, v in _parameters(step_class(name)).items() if v is not inspect.Parameter.empty}
    settings.update(params)  # the step's defaults are albumentations', not the twin's: carry them all
    out: dict[str, Any] = dict(twin.fixed)
    for key, value in settings.items():
        if key in twin.ignored:
            continue
        if key in twin.assumed:
            if not _same(value, twin.assumed[key]):
                raise ConfigError(f"{where}: {name} with {key}={value!r} has no per-batch twin (the twin "
                                  f"implements {key}={twin.assumed[key]!r}); keep that value or run the "
                                  "augmentation on the CPU (loader.device_cache=false, loader.device_augment=false).")
            continue
        twin_key = twin.rename.get(key, key)
        if twin_key not in accepted:
            raise ConfigError(f"{where}: {name}.{key} has no counterpart in its per-batch twin {target}.")
        try:
            out[twin_key] = twin.convert[key](value) if key in twin.convert else value
        except ValueError as exc:
            raise ConfigError(f"{where}: {name} with {exc} has no per-batch twin.") from exc
    return {"_target_": target, **out}


def batch_twin(step: Any, where: str = "transforms.train") -> dict[str, Any]:
    """The per-batch step (`{_target_: medzoo.transforms.batch.NAME, ...}`) that does what `step` does."""
    name, params = split_step(step, where)
    if name.startswith(BATCH_PREFIX):
        return {"_target_": name, **params}
    if name.startswith(MULTICHANNEL_PREFIX) and is_step(BATCH_PREFIX + name[len(MULTICHANNEL_PREFIX):]):
        return {"_target_": BATCH_PREFIX + name[len(MULTICHANNEL_PREFIX):], **params}
    if name in ALBUMENTATIONS_TWINS:
        return _albumentations_twin(name, params, where)
    raise ConfigError(f"{where}: '{name}' has no per-batch twin, so it cannot run on the device; remove it, "
                      "use a step that has one (medzoo.transforms.twins.twin_names()), or augment on the CPU "
                      "(loader.device_cache=false, loader.device_augment=false).")


def batch_twins(steps: list[Any], where: str = "transforms.train") -> list[dict[str, Any]]:
    return [batch_twin(step, f"{where}[{index}]") for index, step in enumerate(steps)]


def twin_names() -> set[str]:
    """The per-sample step names that have a batch twin."""
    return {*ALBUMENTATIONS_TWINS, *(n for n in step_names() if n.startswith(MULTICHANNEL_PREFIX)
                                     and is_step(BATCH_PREFIX + n[len(MULTICHANNEL_PREFIX):]))}
