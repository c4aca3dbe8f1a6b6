"""Export a checkpoint to ONNX (checked with onnxruntime), TorchScript, or a MONAI bundle that MONAI's own
runner executes, preprocessing included (`python -m monai.bundle run --config_file configs/inference.json`)."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medzoo.errors import ConfigError, DataError
from medzoo.zoo.card import ModelCard

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-4
EXPORT_EXTRA = "pip install 'medzoo[export]'"


def safe_name(name: str) -> str:
    """A file or folder name made from a card's name: letters, digits, '_', '-' and '.' only, never '..' or a
    path, so whatever the card says, an export stays inside its run directory."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:64]
    return cleaned or "model"


def _reference(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(inputs).float().numpy()


def _require_onnx() -> None:
    """onnx, onnxscript (the exporter) and onnxruntime (the check), or a ConfigError naming the extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"format=onnx needs onnx, onnxscript and onnxruntime, and {exc.name or exc} is not "
                          f"installed: {EXPORT_EXTRA}") from exc


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    """What a user of the .onnx file needs beside the graph: the preprocessing, classes and input spec."""
    data = card.to_dict()
    return {"medzoo_card_preprocessing": json.dumps(data["preprocessing"]),
            "medzoo_classes": json.dumps(data["classes"]), "medzoo_input": json.dumps(data["input"]),
            "medzoo_arch": card.arch, "medzoo_in_chans": str(card.in_chans),
            "medzoo_output": "logits (apply softmax over axis 1 for class probabilities)",
            "medzoo_card_schema": str(card.schema_version), "medzoo_license": card.provenance.license,
            "medzoo_intended_use": card.provenance.intended_use}


def export_onnx(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """ONNX with a dynamic batch axis and the card's preprocessing in its metadata; the max
    |onnxruntime - PyTorch| on `inputs` must be <= 1e-4 (fp32)."""
    _require_onnx()
    import onnxruntime

    path = out / f"{safe_name(card.arch)}.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (inputs,), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: batch},), verbose=False)
    program.model.metadata_props.update(onnx_metadata(card))
    program.save(str(path))  # one file; weights go to a .data file beside it only above ONNX's 2 GB limit
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    difference = float(np.abs(session.run(None, {"image": inputs.numpy()})[0] - _reference(model, inputs)).max())
    if difference > ONNX_TOLERANCE:
        raise DataError(f"{path}: onnxruntime differs from PyTorch by {difference:.2e} (> {ONNX_TOLERANCE}); "
                        "the export is not faithful and should not be used.")
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def export_torchscript(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A traced TorchScript module, reloaded and compared on `inputs`."""
    path = out / f"{safe_name(card.arch)}.torchscript.pt"
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs[:1])
    traced.save(str(path))
    reloaded = torch.jit.load(str(path))
    with torch.no_grad():
        difference = float((reloaded(inputs) - model(inputs)).abs().max())
    return {"path": str(path), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def network_def(card: ModelCard) -> dict[str, Any]:
    """The network as a MONAI bundle config: plain MONAI ResNet for batch-norm models (no medzoo needed)."""
    kwargs = card.model_kwargs
    blocks = {"resnet10": ("basic", [1, 1, 1, 1]), "resnet18": ("basic", [2, 2, 2, 2]),
              "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3])}
    if card.arch in blocks and kwargs.get("norm", "batch") == "batch":
        block, layers = blocks[card.arch]
        imagenet = kwargs.get("stem") == "imagenet"
        return {"_target_": "monai.networks.nets.ResNet", "block": block, "layers": layers,
                "block_inplanes": [64, 128, 256, 512], "widen_factor": kwargs.get("width", 1.0),
                "spatial_dims": card.spatial_dims,
                "n_input_channels": card.in_chans, "conv1_t_size": 7 if imagenet else 3,
                "conv1_t_stride": 2 if imagenet else 1, "no_max_pool": not imagenet, "shortcut_type": "B",
                "bias_downsample": False, "num_classes": card.num_classes}
    return {"_target_": "medzoo.zoo.create_model", "name": card.arch, "in_chans": card.in_chans,
            "num_classes": card.num_classes, "spatial_dims": card.spatial_dims, **kwargs}


# --- MONAI bundle ------------------------------------------------------------------------------------------
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


def _inert(value: Any) -> Any:
    """Card text made inert for a MONAI config, where a string starting with '$', '@' or '%' is code, a
    reference or a macro: a card is data, and no part of it may run when the bundle does."""
    if isinstance(value, str):
        return " " + value if value.startswith(("$", "@", "%")) else value
    if isinstance(value, dict):
        return {_inert(str(k)): _inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_inert(v) for v in value]
    return value


def _check_bundle_network(definition: dict[str, Any], weights: Path, model: torch.nn.Module,
                          inputs: torch.Tensor) -> float:
    """Max |bundle network - model| on `inputs`, the bundle network built from its config by MONAI and loaded
    (strictly) from the saved weights, as the runner will."""
    from monai.bundle import ConfigParser

    network = ConfigParser({"network_def": definition}).get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    network.eval()
    with torch.no_grad():
        return float((network(inputs).float() - model(inputs).float()).abs().max())


def export_monai_bundle(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor, out: Path) -> dict[str, Any]:
    """A MONAI bundle folder that MONAI's runner executes end to end, preprocessing included:
    configs/inference.json, configs/metadata.json, models/model.pt, scripts/medzoo_steps.py, docs/README.md."""
    transforms, table = bundle_transforms(card)  # refuse before writing anything
    root = out / f"{safe_name(card.recipe or card.arch)}_bundle"
    if root.exists():
        raise DataError(f"{root} already exists; export never replaces a folder it did not create. Choose another "
                        "run directory (hydra.run.dir=DIR).")
    for sub in ("configs", "models", "docs", "scripts"):
        (root / sub).mkdir(parents=True)
    torch.save(model.state_dict(), root / "models" / "model.pt")
    definition = network_def(card)
    difference = _check_bundle_network(definition, root / "models" / "model.pt", model, inputs)
    if difference > ONNX_TOLERANCE:
        raise DataError(f"{root}: the bundle's network differs from the checkpoint's by {difference:.2e} "
                        f"(> {ONNX_TOLERANCE}); the bundle is not faithful and should not be used.")
    (root / "scripts" / "__init__.py").write_text("")
    (root / "scripts" / "medzoo_steps.py").write_text(BUNDLE_STEPS)
    inference = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "input": None,
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "classes": _inert(list(card.classes)),
        "network_def": definition,
        "network": "$@network_def.to(@device)",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "image_files": {"_target_": f"{STEPS_MODULE}.list_images", "path": "@input"},
        "datalist": "$[{'image': path, 'path': path} for path in @image_files]",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Activations", "softmax": True},
        "evaluator": {"_target_": f"{STEPS_MODULE}.Predictor", "network": "@network", "dataloader": "@dataloader",
                      "inferer": "@inferer", "postprocessing": "@postprocessing", "classes": "@classes",
                      "output_dir": "@output_dir", "device": "@device"},
        "run": ["$@load_weights", "$@evaluator.run()"],
    }
    size = card.input_size or []
    metadata = _inert({
        "version": "0.1.0",
        "monai_version": _version("monai"), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"opencv-python-headless": _version("opencv-python-headless"),
                                      "pillow": _version("pillow")},
        "task": f"classification: {', '.join(card.classes)}",
        "description": f"{card.arch} trained by medzoo recipe {card.recipe}",
        "authors": "medzoo", "copyright": "see license", "license": card.provenance.license,
        "intended_use": card.provenance.intended_use,
        "changelog": {"0.1.0": "exported by medzoo"},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": card.in_chans,
                                 "spatial_shape": size, "dtype": "float32", "value_range": [],
                                 "is_patch_data": False, "channel_def": {}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classes", "num_channels": card.num_classes,
                                 "spatial_shape": [1], "dtype": "float32", "value_range": [0, 1],
                                 "is_onehot": False, "channel_def": dict(enumerate(card.classes))}},
        },
        "medzoo_preprocessing": card.to_dict()["preprocessing"],
        "medzoo_metrics": card.metrics.get("test", {}),
    })
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2, default=str) + "\n")
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    (root / "docs" / "README.md").write_text(_bundle_readme(card, table))
    return {"path": str(root), "max_abs_difference": difference, "checked_on": int(inputs.shape[0])}


def _bundle_readme(card: ModelCard, table: list[list[str]]) -> str:
    rows = "\n".join(f"| {' | '.join(cells)} |" for cells in table)
    return (f"# {card.arch} ({card.recipe})\n\nClasses: {', '.join(card.classes)}. Input: {card.in_chans} "
            f"channel(s), {card.input_size or 'any size'}.\n\n"
            "## Run\n\nFrom this folder, with MONAI, torch, numpy, Pillow and OpenCV installed (not medzoo):\n\n"
            "```\npython -m monai.bundle run --config_file configs/inference.json --input IMAGE_OR_FOLDER "
            "[--output_dir DIR]\n```\n\n"
            "It writes `predictions.csv` and `predictions.json` (class probabilities per image, as "
            "`medzoo predict` does) into `eval/` or DIR.\n\n"
            "## Preprocessing\n\nThe checkpoint's preprocessing (`medzoo_preprocessing` in configs/metadata.json), "
            "step by step:\n\n| medzoo step | bundle transform | equivalence |\n|---|---|---|\n"
            f"{rows}\n\n`medzoo_steps` is scripts/medzoo_steps.py in this bundle.\n\n"
            f"Intended use: {card.provenance.intended_use}.\n")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


EXPORTERS: dict[str, Callable[..., dict[str, Any]]] = {
    "onnx": export_onnx, "torchscript": export_torchscript, "monai-bundle": export_monai_bundle,
}


def export(model: torch.nn.Module, card: ModelCard, fmt: str, inputs: torch.Tensor, out: Path,
           source: str = "checkpoint") -> dict[str, Any]:
    """Export a copy of `model` (fp32, eval mode, on the CPU; `model` itself is left as it is) in format `fmt`
    into folder `out`. `source` names the checkpoint in messages."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"unknown export format '{fmt}': use format={'|'.join(EXPORTERS)}")
    if fmt == "onnx":
        _require_onnx()
    if fmt == "monai-bundle":
        bundle_transforms(card, source)  # a step the bundle cannot express fails here, naming the file
    out.mkdir(parents=True, exist_ok=True)
    result = EXPORTERS[fmt](copy.deepcopy(model).float().cpu().eval(), card, inputs.float().cpu(), out)
    log.info("exported %s -> %s", fmt, result["path"])
    return result
