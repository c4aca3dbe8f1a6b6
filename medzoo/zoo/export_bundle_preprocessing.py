"""A MONAI bundle's preprocessing: the card's steps as MONAI transform configs, with the bundle's own module
(scripts/medzoo_steps.py) for the steps MONAI has no exact equivalent for; a step that cannot be reproduced
exactly is refused, never approximated."""

from __future__ import annotations

from typing import Any

import numpy as np

from medzoo.errors import DataError
from medzoo.zoo.card import ModelCard

# The bundle's own Python module (scripts/medzoo_steps.py): the preprocessing steps MONAI has no exact
# equivalent for, written in numpy/OpenCV/Pillow, and the inference loop (MONAI's evaluator needs ignite).
# MONAI's bundle runner puts the bundle root on sys.path before `run`; `_target_: scripts.medzoo_steps.X` finds it.
BUNDLE_STEPS = '''"""Steps of a medzoo checkpoint's preprocessing that MONAI has no exact equivalent for, and the inference loop.

Written by `medzoo export format=monai-bundle`. configs/inference.json composes these with MONAI's own
LoadImaged, EnsureChannelFirstd, NormalizeIntensityd and EnsureTyped; docs/README.md says which step of the
checkpoint's card each one reproduces. Needs numpy, OpenCV, Pillow, torch and MONAI; not medzoo.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from monai.transforms import MapTransform
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_OPENCV_CHANNELS = 4


def list_images(path):
    """The image files to predict: `path` itself, or every image below the folder `path`, sorted."""
    if path is None:
        raise FileNotFoundError("no input: run with --input FILE_OR_FOLDER")
    root = Path(str(path)).expanduser()
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise FileNotFoundError(f"input not found: {root}; run with --input FILE_OR_FOLDER")
    found = [str(p) for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}; run with --input FILE_OR_FOLDER")
    return found


def to_8bit(image):
    """PILReader's converter: a PIL image as medzoo decodes it (8-bit gray and RGB as stored, 16/32-bit gray
    scaled to 0..255 by its maximum, any other mode converted to RGB)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) or 1.0
        array *= 255.0 / top
        return Image.fromarray(np.rint(array, out=array).astype(np.uint8))
    return image.convert("RGB")


def _numpy(image):
    return image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)


class ToChannelsd(MapTransform):
    """(C, H, W) uint8 -> exactly `channels` channels, as medzoo's reader does: an RGB image whose three channels
    are equal is gray; one channel is repeated; RGB to one channel is the rounded luminance."""

    def __init__(self, keys, channels: int):
        super().__init__(keys)
        self.channels = channels

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            image = _numpy(out[key])
            if image.shape[0] == 3 and np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2]):
                image = image[:1]
            have = image.shape[0]
            if have == 1 and self.channels != 1:
                image = np.repeat(image, self.channels, axis=0)
            elif have == 3 and self.channels == 1:
                weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
                pixels = np.ascontiguousarray(np.moveaxis(image, 0, -1)).astype(np.float32)
                image = np.round(pixels @ weights).astype(np.uint8)[None]
            elif have != self.channels:
                raise ValueError(f"cannot give a {have}-channel image the model's {self.channels} channels")
            out[key] = image
        return out


class CropForegroundSquared(MapTransform):
    """Crop to the pixels brighter than `threshold` x the image maximum, plus `margin` x the box's extent on each
    side, then pad with zeros to a centred square (medzoo.transforms.intensity.CropForeground)."""

    def __init__(self, keys, threshold: float = 0.1, margin: float = 0.02, square: bool = True):
        super().__init__(keys)
        self.threshold, self.margin, self.square = threshold, margin, square

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            image = _numpy(out[key])
            plane = image.max(axis=0)
            mask = plane > self.threshold * float(plane.max() or 1)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            height, width = plane.shape
            if rows.size == 0 or cols.size == 0:
                top, bottom, left, right = 0, height, 0, width
            else:
                pad_r = int(self.margin * (rows[-1] - rows[0] + 1))
                pad_c = int(self.margin * (cols[-1] - cols[0] + 1))
                top, bottom = max(rows[0] - pad_r, 0), min(rows[-1] + 1 + pad_r, height)
                left, right = max(cols[0] - pad_c, 0), min(cols[-1] + 1 + pad_c, width)
            crop = image[:, top:bottom, left:right]
            if self.square:
                side = max(crop.shape[1:])
                square = np.zeros((crop.shape[0], side, side), dtype=crop.dtype)
                y0, x0 = (side - crop.shape[1]) // 2, (side - crop.shape[2]) // 2
                square[:, y0:y0 + crop.shape[1], x0:x0 + crop.shape[2]] = crop
                crop = square
            out[key] = np.ascontiguousarray(crop)
        return out


class Resized(MapTransform):
    """OpenCV's resize to (height, width) with a cv2 interpolation code, on the stored dtype (uint8 stays
    uint8, rounded by OpenCV), as albumentations.Resize does; MONAI's Resize interpolates otherwise."""

    def __init__(self, keys, height: int, width: int, interpolation: int = cv2.INTER_LINEAR):
        super().__init__(keys)
        self.height, self.width, self.interpolation = height, width, interpolation

    def _resize(self, pixels):
        resized = cv2.resize(pixels, (self.width, self.height), interpolation=self.interpolation)
        return resized[..., None] if resized.ndim == 2 else resized

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            image = _numpy(out[key])
            if image.shape[1:] == (self.height, self.width):
                continue
            pixels = np.ascontiguousarray(np.moveaxis(image, 0, -1))
            if pixels.shape[-1] <= MAX_OPENCV_CHANNELS:
                resized = self._resize(pixels)
            else:  # OpenCV takes at most 4 channels at once: 4 at a time, a last pair one by one (as albucore)
                chunks = []
                for start in range(0, pixels.shape[-1], 4):
                    if pixels.shape[-1] - start == 2:
                        chunks += [self._resize(np.ascontiguousarray(pixels[..., i:i + 1])) for i in (start, start + 1)]
                    else:
                        chunks.append(self._resize(np.ascontiguousarray(pixels[..., start:start + 4])))
                resized = np.dstack(chunks)
            out[key] = np.ascontiguousarray(np.moveaxis(resized, -1, 0))
        return out


class NormalizeImaged(MapTransform):
    """albumentations' Normalize(normalization="image") on uint8: (x - mean) / (std + 1e-4) over the whole image,
    clipped to [-20, 20], computed through the same 256-entry table, float32 out."""

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            image = _numpy(out[key])
            if image.dtype != np.uint8:
                raise ValueError(f"NormalizeImaged expects uint8 pixels, got {image.dtype}")
            mean, std = image.mean(), image.std() + 1e-4
            table = (np.arange(0, 256, dtype=np.float32) - mean) / std
            out[key] = table[image].clip(-20, 20).astype(np.float32)
        return out


class Predictor:
    """Run `network` over `dataloader` and write predictions.csv and predictions.json into `output_dir`: one row
    per image with its class probabilities, as `medzoo predict` writes them."""

    def __init__(self, network, dataloader, inferer, postprocessing, classes, output_dir, device):
        self.network, self.dataloader, self.inferer = network, dataloader, inferer
        self.postprocessing, self.classes = postprocessing, list(classes)
        self.output_dir, self.device = Path(str(output_dir)), device

    def run(self):
        self.network.eval()
        rows = []
        with torch.no_grad():
            for batch in self.dataloader:
                logits = self.inferer(batch["image"].to(self.device), self.network)
                for path, item in zip(batch["path"], logits):
                    probabilities = [float(p) for p in self.postprocessing(item.float().cpu())]
                    rows.append({"path": path, "prediction": self.classes[int(np.argmax(probabilities))],
                                 "probabilities": dict(zip(self.classes, probabilities))})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "predictions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "prediction", *self.classes])
            writer.writerows([r["path"], r["prediction"], *(repr(r["probabilities"][c]) for c in self.classes)]
                             for r in rows)
        (self.output_dir / "predictions.json").write_text(
            json.dumps({"classes": self.classes, "predictions": rows}, indent=2) + "\\n")
        print(f"{len(rows)} prediction(s) -> {self.output_dir / 'predictions.csv'}")
        return rows
'''

STEPS_MODULE = "scripts.medzoo_steps"
_CROP = "medzoo.transforms.intensity.CropForeground"
_RESIZE = "albumentations.Resize"
_NORMALIZE = "albumentations.Normalize"
_STEP_PARAMS = {_CROP: {"threshold", "margin", "square", "p"},
                _RESIZE: {"height", "width", "interpolation", "mask_interpolation", "area_for_downscale", "p"},
                _NORMALIZE: {"mean", "std", "max_pixel_value", "normalization", "p"}}
# cv2 interpolation codes that albumentations.Resize accepts (nearest, linear, cubic, area, lanczos4,
# linear exact, nearest exact).
_CV2_INTERPOLATIONS = {0, 1, 2, 3, 4, 5, 6}


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: parameter {name}={value!r} is not a number; the bundle cannot express it.")
    return value


def _no_equivalent(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what} has no MONAI bundle equivalent that reproduces medzoo's preprocessing; "
                     "export format=onnx (the preprocessing travels in its metadata) or format=torchscript instead.")


def bundle_transforms(card: ModelCard, source: str = "checkpoint") -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The bundle's preprocessing (MONAI transform configs) and a table (card step, bundle transform, how exact)
    for its README; a DataError for any step that has no exact equivalent, rather than a wrong bundle."""
    if card.spatial_dims != 2 or card.input.layout != "image" or card.preprocessing.backend != "albumentations":
        raise _no_equivalent(source, f"a {card.spatial_dims}D '{card.input.layout}' input with the "
                                     f"'{card.preprocessing.backend}' preprocessing backend")
    keys = "image"
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": keys, "reader": "PILReader", "reverse_indexing": False,
         "converter": {"_target_": f"{STEPS_MODULE}.to_8bit", "_mode_": "callable"}, "dtype": "$np.uint8",
         "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": keys},
        {"_target_": f"{STEPS_MODULE}.ToChannelsd", "keys": keys, "channels": card.in_chans},
    ]
    table = [["decode (medzoo.datasets.images.decode_image)",
              "MONAI `LoadImaged` (PILReader, rows first, uint8) + `EnsureChannelFirstd`", "exact"],
             [f"channels -> {card.in_chans} (medzoo.datasets.images.to_channels)", "`medzoo_steps.ToChannelsd`",
              "exact (same luminance formula and rounding)"]]
    normalized = False
    steps = [("pre", i, s) for i, s in enumerate(card.preprocessing.pre)] + \
            [("eval", i, s) for i, s in enumerate(card.preprocessing.eval)]
    for stage, index, step in steps:
        name, params = step["name"], dict(step.get("params") or {})
        where = f"{source}: preprocessing.{stage}[{index}] ({name})"
        if name not in _STEP_PARAMS:
            raise _no_equivalent(where, f"this checkpoint's preprocessing step {name}")
        unknown = sorted(set(params) - _STEP_PARAMS[name])
        if unknown:
            raise _no_equivalent(where, f"{name} with parameter(s) {', '.join(unknown)}")
        if _number(params.pop("p", 1.0), "p", where) != 1.0:
            raise _no_equivalent(where, f"{name} applied with probability p < 1")
        if normalized:
            raise _no_equivalent(where, f"{name} after Normalize (on float pixels)")
        if name == _CROP:
            square = params.get("square", True)
            if not isinstance(square, bool):
                raise _no_equivalent(where, f"{name} with square={square!r}")
            transforms.append({"_target_": f"{STEPS_MODULE}.CropForegroundSquared", "keys": keys,
                               "threshold": _number(params.get("threshold", 0.1), "threshold", where),
                               "margin": _number(params.get("margin", 0.02), "margin", where), "square": square})
            table.append([f"`{name}`", "`medzoo_steps.CropForegroundSquared` (MONAI's CropForeground takes its "
                          "margin in pixels, not as a fraction of the box, and does not pad to a square)",
                          "exact (same numpy code)"])
        elif name == _RESIZE:
            interpolation = params.get("interpolation", 1)
            if params.get("area_for_downscale") is not None or interpolation not in _CV2_INTERPOLATIONS:
                raise _no_equivalent(where, f"{name} with interpolation={interpolation!r}, area_for_downscale="
                                            f"{params.get('area_for_downscale')!r}")
            size = {k: int(_number(params[k], k, where)) for k in ("height", "width") if k in params}
            if len(size) != 2:
                raise _no_equivalent(where, f"{name} without height and width")
            transforms.append({"_target_": f"{STEPS_MODULE}.Resized", "keys": keys, **size,
                               "interpolation": int(interpolation)})
            table.append([f"`{name}` {size['height']}x{size['width']}, cv2 interpolation {interpolation}",
                          "`medzoo_steps.Resized` (cv2.resize; MONAI's Resize interpolates with torch, which "
                          "differs from OpenCV's and does not round to uint8)", "exact (same OpenCV call)"])
        else:
            normalization = params.get("normalization", "standard")
            normalized = True
            if normalization == "image":
                transforms.append({"_target_": f"{STEPS_MODULE}.NormalizeImaged", "keys": keys})
                table.append([f"`{name}` normalization=image", "`medzoo_steps.NormalizeImaged` (MONAI's "
                              "NormalizeIntensity has no epsilon and no clipping)", "exact (same lookup table)"])
            elif normalization == "standard":
                transforms.append(_standard_normalize(params, card.in_chans, where, keys))
                table.append([f"`{name}` mean/std", "MONAI `NormalizeIntensityd` (channel-wise subtrahend and "
                              "divisor = mean and std x max_pixel_value)",
                              "equal up to float32 rounding (divides where albumentations multiplies by 1/std)"])
            else:
                raise _no_equivalent(where, f"{name} with normalization={normalization!r}")
    transforms.append({"_target_": "EnsureTyped", "keys": keys, "data_type": "tensor", "dtype": "$torch.float32",
                       "track_meta": False})
    table.append(["float32 model input", "MONAI `EnsureTyped`", "exact"])
    return transforms, table


def _standard_normalize(params: dict[str, Any], channels: int, where: str, keys: str) -> dict[str, Any]:
    values = {}
    for key, default in (("mean", (0.485, 0.456, 0.406)), ("std", (0.229, 0.224, 0.225))):
        value = params.get(key, default)
        value = [value] if not isinstance(value, (list, tuple)) else list(value)
        if len(value) == 1:
            value = value * channels
        if len(value) != channels:
            raise _no_equivalent(where, f"Normalize with {len(value)} {key} value(s) for {channels} channel(s)")
        values[key] = [_number(v, key, where) for v in value]
    scale = params.get("max_pixel_value", 255.0)
    scale = 255.0 if scale is None else _number(scale, "max_pixel_value", where)
    return {"_target_": "NormalizeIntensityd", "keys": keys, "channel_wise": True,
            "subtrahend": [float(np.float32(m) * np.float32(scale)) for m in values["mean"]],
            "divisor": [float(np.float32(s) * np.float32(scale)) for s in values["std"]]}
