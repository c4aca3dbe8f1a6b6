"""The transform steps medzoo allows: one explicit table of names -> classes, and the one builder of steps.

A step is a name from this table with plain parameters (numbers, strings, booleans, None, and lists or
string-keyed mappings of those). Recipes write it as `{_target_: NAME, **params}`, model cards as
`{"name": NAME, "params": {...}}`; both are built here, by calling the class with the parameters, and never
through `hydra.utils.instantiate`, OmegaConf interpolation, or an import path read from the input. A name is
looked up exactly: `albumentations.Resize` is in the table, `medzoo.transforms.intensity.np.savetxt` is not.

Add a step of your own with `register_step("mylab.MyStep", MyStep)` before building a recipe that names it; on
the command line, in a module that `imports=[mylab.steps]` names (medzoo.cli.import_user_modules).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError

_ALBUMENTATIONS = (
    "Affine", "CenterCrop", "CLAHE", "CoarseDropout", "Downscale", "ElasticTransform", "Equalize", "FromFloat",
    "GaussianBlur", "GaussNoise", "GridDistortion", "HorizontalFlip", "ImageCompression", "InvertImg",
    "LongestMaxSize", "MedianBlur", "MotionBlur", "Normalize", "PadIfNeeded", "Posterize", "RandomBrightnessContrast",
    "RandomCrop", "RandomGamma", "RandomResizedCrop", "RandomRotate90", "RandomScale", "Resize", "Rotate",
    "Sharpen", "ShiftScaleRotate", "SmallestMaxSize", "Solarize", "ToFloat", "ToGray", "Transpose",
    "VerticalFlip",
)
_ALBUMENTATIONS_CONTAINERS = ("OneOf", "SomeOf", "Sequential")
_MONAI = (
    "CenterSpatialCrop", "ClipIntensityPercentiles", "CropForeground", "EnsureType", "Flip", "GaussianSmooth",
    "NormalizeIntensity", "RandAdjustContrast", "RandAffine", "RandBiasField", "RandCoarseDropout", "RandFlip",
    "RandGaussianNoise", "RandGaussianSmooth", "RandGibbsNoise", "RandHistogramShift", "RandRotate",
    "RandRotate90", "RandScaleIntensity", "RandShiftIntensity", "RandSpatialCrop", "RandZoom", "Resize",
    "ResizeWithPadOrCrop", "Rotate", "Rotate90", "ScaleIntensity", "ScaleIntensityRange",
    "ScaleIntensityRangePercentiles", "SpatialPad", "ThresholdIntensity", "Zoom",
)
_MULTICHANNEL = (
    "Affine", "BrightnessContrast", "CoarseDropout", "Gamma", "GaussianBlur", "GaussianNoise", "HorizontalFlip",
    "Normalize", "RandomIntensityNetwork", "RandomResizedCrop", "RandomRotate90", "Resize", "VerticalFlip",
)
_BATCH = _MULTICHANNEL + ("Downscale", "ImageCompression")  # the last two: twins of albumentations steps

# name -> (module, attribute), imported on first use; containers take a list of steps as `transforms`
_TABLE: dict[str, tuple[str, str]] = {
    **{f"albumentations.{n}": ("albumentations", n) for n in _ALBUMENTATIONS + _ALBUMENTATIONS_CONTAINERS},
    **{f"monai.transforms.{n}": ("monai.transforms", n) for n in _MONAI},
    **{f"medzoo.transforms.multichannel.{n}": ("medzoo.transforms.multichannel", n) for n in _MULTICHANNEL},
    **{f"medzoo.transforms.batch.{n}": ("medzoo.transforms.batch", n) for n in _BATCH},
    "medzoo.transforms.intensity.CropForeground": ("medzoo.transforms.foreground", "CropForeground"),  # its first name
    "medzoo.transforms.albumentations_steps.RandomIntensityNetwork":
        ("medzoo.transforms.albumentations_steps", "RandomIntensityNetwork"),
}
_CONTAINERS = {f"albumentations.{n}" for n in _ALBUMENTATIONS_CONTAINERS}
_REGISTERED: dict[str, type] = {}

BATCH_PREFIX = "medzoo.transforms.batch."
MAX_DEPTH = 8
MAX_ITEMS = 4096
MAX_STRING = 1024
# The largest image a step may resize, crop or pad to: a card's step allocates its output before anything else
# can check it (2**28 float32 values are 1 GiB per channel).
MAX_SIDE = 16384
MAX_PIXELS = 2**28
_SIZE_PARAMS = (("height", "width"), ("min_height", "min_width"), ("size",), ("spatial_size",), ("roi_size",),
                ("max_size", "max_size"))
# Factors by which a step may scale an image (Affine/ShiftScaleRotate with fit_output, RandomScale, Zoom and
# RandZoom with keep_size=False): bounded, so a card cannot turn a small image into a huge one.
MAX_FACTOR = 8.0
_FACTOR_PARAMS = ("scale", "scale_limit", "scale_range", "zoom", "min_zoom", "max_zoom")
# Keys that mean something to Hydra's instantiate; a step is never instantiated, so they are refused outright.
_RESERVED_PREFIX = "_"


def register_step(name: str, cls: type, *, container: bool = False) -> type:
    """Allow `name` as a transform step built by calling `cls(**params)`; returns `cls`.

    Args:
        container: the step takes a list of steps as its `transforms` parameter (like albumentations.OneOf).
    """
    if name in _TABLE or (name in _REGISTERED and _REGISTERED[name] is not cls):
        raise ConfigError(f"transform step '{name}' is already registered; choose another name.")
    _REGISTERED[name] = cls
    if container:
        _CONTAINERS.add(name)
    return cls


def step_names() -> list[str]:
    """Every allowed step name."""
    return sorted({*_TABLE, *_REGISTERED})


def is_step(name: str) -> bool:
    return name in _TABLE or name in _REGISTERED


def step_class(name: str, where: str = "transforms") -> type:
    """The class behind the allowed step `name`; an unknown name lists the closest ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _TABLE:
        error = unknown_name("transform step", name, step_names())
        raise type(error)(f"{where}: {error} Register your own with medzoo.transforms.registry.register_step.")
    module, attribute = _TABLE[name]
    return getattr(importlib.import_module(module), attribute)


def check_plain(value: Any, where: str, depth: int = 0, error: type[Exception] = ConfigError) -> None:
    """Refuse anything but plain parameter values: no objects, no reserved keys, no interpolation syntax."""
    if depth > MAX_DEPTH:
        raise error(f"{where}: parameters nested deeper than {MAX_DEPTH} levels.")
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise error(f"{where}: a string of {len(value)} characters (at most {MAX_STRING}).")
        if "${" in value:
            raise error(f"{where}: interpolation syntax in {value[:60]!r} is not allowed; give the plain value.")
        return
    if isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            raise error(f"{where}: {len(value)} entries (at most {MAX_ITEMS}).")
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(f"{where}: parameter names must be strings, got {key!r}.")
            if key.startswith(_RESERVED_PREFIX):
                raise error(f"{where}: '{key}' is not allowed (names starting with '{_RESERVED_PREFIX}' are "
                            "reserved; nothing is instantiated from parameters or settings).")
            check_plain(item, f"{where}.{key}", depth + 1, error)
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            raise error(f"{where}: a list of {len(value)} items (at most {MAX_ITEMS}).")
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]", depth + 1, error)
        return
    raise error(f"{where}: {type(value).__name__} values are not allowed; use numbers, strings and lists.")


def split_step(step: Any, where: str, error: type[Exception] = ConfigError) -> tuple[str, dict[str, Any]]:
    """(name, params) of a step written as `{_target_: NAME, **params}` or `{"name": NAME, "params": {...}}`."""
    if not isinstance(step, Mapping):
        raise error(f"{where}: a transform step must be a mapping with a step name; got {step!r}"[:300])
    if "_target_" in step:
        name, params = step["_target_"], {k: v for k, v in step.items() if k != "_target_"}
    elif set(step) <= {"name", "params"} and "name" in step:
        name, params = step["name"], step.get("params") or {}
    else:
        raise error(f"{where}: a transform step needs `_target_` (recipes) or `name` (cards); got keys "
                    f"{sorted(map(str, step))}"[:300])
    if not isinstance(name, str) or not isinstance(params, Mapping):
        raise error(f"{where}: a step's name must be a string and its params a mapping.")
    return name, dict(params)


def check_step(step: Any, where: str, error: type[Exception] = ConfigError) -> tuple[str, dict[str, Any]]:
    """Validate a step without building it: a registered name and plain parameters (containers: nested
    steps, each checked the same way)."""
    name, params = split_step(step, where, error)
    if not is_step(name):
        raise error(f"{where}: transform step '{name}' is not allowed: it is not in medzoo's step registry "
                    "(medzoo.transforms.registry.step_names()). A step of your own: register_step in a module "
                    "that the command imports (imports=[MODULE]).")
    for key, value in params.items():
        if key.startswith(_RESERVED_PREFIX):
            raise error(f"{where}: '{key}' is not allowed in a step's parameters (steps are built by name from "
                        "medzoo's step registry, never instantiated).")
        if name in _CONTAINERS and key == "transforms":
            if not isinstance(value, (list, tuple)):
                raise error(f"{where}.transforms: a list of steps expected.")
            for index, inner in enumerate(value):
                check_step(inner, f"{where}.transforms[{index}]", error)
        else:
            check_plain(value, f"{where}.{key}", error=error)
    _check_sizes(name, params, where, error)
    _check_factors(name, params, where, error)
    return name, params


def _check_sizes(name: str, params: Mapping[str, Any], where: str, error: type[Exception]) -> None:
    for keys in _SIZE_PARAMS:
        sides = [side for key in keys for side in (params.get(key) if isinstance(params.get(key), list)
                                                   else [params.get(key)])]
        if not all(isinstance(side, int) and not isinstance(side, bool) for side in sides):
            continue  # absent, or a type the step's constructor refuses
        pixels = 1
        for side in sides:
            pixels *= max(side, 1)
        if max(sides) > MAX_SIDE or pixels > MAX_PIXELS:
            asked = ", ".join(f"{key}={params[key]}" for key in dict.fromkeys(keys))
            raise error(f"{where}: '{name}' asks for {asked}, beyond the {MAX_SIDE} pixels per side and "
                        f"{MAX_PIXELS:,} pixels in all that a step may produce. Use a smaller size.")


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [number for item in value for number in _numbers(item)]
    return []


def _check_factors(name: str, params: Mapping[str, Any], where: str, error: type[Exception]) -> None:
    for key in _FACTOR_PARAMS:
        numbers = _numbers(params.get(key))
        if any(not abs(number) <= MAX_FACTOR for number in numbers):  # `not <=` also catches NaN
            raise error(f"{where}: '{name}' asks for {key}={params[key]}, beyond the factor of {MAX_FACTOR:g} by "
                        "which a step may scale an image. Use a smaller factor.")


def build_step(step: Any, where: str = "transforms", error: type[Exception] = ConfigError) -> Any:
    """The transform object for one step (an already built transform passes through)."""
    if not isinstance(step, Mapping) and callable(step):
        return step
    name, params = check_step(step, where, error)
    if name in _CONTAINERS and "transforms" in params:
        params["transforms"] = [build_step(inner, f"{where}.transforms[{index}]", error)
                                for index, inner in enumerate(params["transforms"])]
    cls = step_class(name, where)
    try:
        return cls(**params)
    except Exception as exc:  # each library raises its own types for parameters it cannot take
        raise error(f"{where}: cannot build '{name}' from {params}: {' '.join(str(exc).split())}"[:600]) from exc


def build_steps(steps: Iterable[Any] | None, where: str = "transforms",
                error: type[Exception] = ConfigError) -> list[Any]:
    """Every step of a list, in order."""
    return [build_step(step, f"{where}[{index}]", error) for index, step in enumerate(steps or ())]


def as_recipe_steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Card-form steps (`name`, `params`) in recipe form (`_target_`), nested containers included."""
    out = []
    for step in steps:
        name, params = split_step(step, "steps")
        if name in _CONTAINERS and isinstance(params.get("transforms"), list):
            params["transforms"] = as_recipe_steps(params["transforms"])
        out.append({"_target_": name, **params})
    return out


def as_card_steps(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Recipe-form steps in card form: `{"name": NAME, "params": {...}}`, nested containers included."""
    out = []
    for step in steps:
        name, params = split_step(step, "steps")
        if name in _CONTAINERS and isinstance(params.get("transforms"), list):
            params["transforms"] = as_card_steps(params["transforms"])
        out.append({"name": name, "params": params})
    return out

