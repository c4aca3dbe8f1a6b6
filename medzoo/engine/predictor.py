"""A checkpoint ready to answer: its model, card, preprocessing, precision and OOD scorer in one object, shared by
`medzoo predict` and the Python API (`medzoo.load`), so that both give the same probabilities."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medzoo.engine.explain import check_layer_name, choose_layer, class_activation_maps
from medzoo.engine.inference import Preprocessor, check_held, list_inputs, probabilities, tensor_bytes
from medzoo.engine.ood import OODScorer
from medzoo.engine.precision import Precision
from medzoo.engine.runtime import resolve_device
from medzoo.errors import DataError
from medzoo.progress import progress as show_progress
from medzoo.zoo import hub
from medzoo.zoo.factory import model_from_checkpoint

Item = tuple[str, torch.Tensor]  # (name, the model's input for one sample)
IMAGE_CHANNELS = (1, 3, 4)        # an H x W x C array with this many channels last is an image


@dataclass
class Answered:
    """One batch the model answered: the inputs' names, the batch, softmax probabilities and OOD (score, flag)."""

    names: tuple[str, ...]
    batch: torch.Tensor
    probs: np.ndarray
    scores: list[tuple[float | None, bool | None]]


class Predictor:
    """A checkpoint with its card and preprocessing: `predict` gives one dict per input, `explain` a Grad-CAM map.

    Made by `medzoo.load(name_or_path)`; `medzoo predict` uses the same object, so both give the same numbers.
    """

    def __init__(self, ref: str | os.PathLike, device: str | torch.device = "auto", precision: str | None = None):
        self.path = hub.resolve(ref)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.model, self.card = model_from_checkpoint(self.path, self.device)
        self.channels_last = self.card.channels_last  # as the model was trained and `medzoo eval` runs it
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scorer = OODScorer(self.model, self.card, str(self.path))  # says so once when the card has none
        self.preprocess = Preprocessor(self.card, str(self.path))
        self.precision = Precision.resolve(precision or self.card.precision, self.device)

    def __repr__(self) -> str:
        card = self.card
        return (f"Predictor({card.arch}, {card.in_chans} channel(s) in, classes {list(card.classes)}, "
                f"{self.precision.name} on {self.device}, from {self.path})")

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return list(self.card.classes)

    def items(self, inputs: Any) -> list[Item]:
        """Inputs -> (name, model input) pairs: a path (file, DICOM folder, or a folder of them), a list of paths,
        or arrays. An array is an H x W or H x W x C image (C = 1, 3 or 4; uint8 as read from a file) or a
        channel-first stack as the model's cache holds it (C x H x W, or C x D x H x W / D x H x W for a 3D
        model); arrays are named `array[i]`."""
        if isinstance(inputs, (np.ndarray, torch.Tensor)):
            return [self._array_item(inputs, "array[0]")]
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        found: list[Item] = []
        held = 0  # every input is held until it is answered: bounded like an array a reader would allocate
        for index, entry in enumerate(inputs):
            arrays = isinstance(entry, (np.ndarray, torch.Tensor))
            for made in ([[self._array_item(entry, f"array[{index}]")]] if arrays else
                         (self.preprocess.items(path) for path in list_inputs(str(entry)))):
                found += made
                held = check_held(held + sum(tensor_bytes(tensor) for _, tensor in made), found[-1][0])
        return found

    def _array_item(self, array: np.ndarray | torch.Tensor, name: str) -> Item:
        array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        in_chans, volume = self.card.in_chans, self.card.spatial_dims == 3
        if array.ndim == 2 and not volume:
            return name, self.preprocess.image(array[..., None])
        if array.ndim == 3 and not volume and array.shape[-1] in IMAGE_CHANNELS and array.shape[0] != in_chans:
            return name, self.preprocess.image(array)
        if array.ndim == 3 and volume:
            array = array[None]
        expected = 4 if volume else 3
        if array.ndim != expected or array.shape[0] != in_chans:
            raise DataError(f"{name}: an array of shape {array.shape} does not fit this model ({in_chans} channel(s), "
                            f"{self.card.spatial_dims}D); give an H x W (x C) image or a "
                            f"{'C x D x H x W' if volume else 'C x H x W'} stack with C = {in_chans}.")
        return name, self.preprocess.array(array)

    def answer(self, items: Sequence[Item], batch_size: int = 32, progress: bool = False) -> Iterator[Answered]:
        """The model's answers, batch by batch, in the order of `items`; `progress` shows the inputs answered."""
        starts = show_progress(range(0, len(items), batch_size), len(items), "predict", "images", progress,
                               size=lambda start: min(batch_size, len(items) - start))
        for start in starts:
            names, tensors = zip(*items[start:start + batch_size])
            batch = torch.stack(tensors)
            laid_out = batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch
            with self.scorer.watch(len(names)):
                probs = probabilities(self.model, laid_out, self.precision.autocast)
            yield Answered(names, batch, probs, self.scorer.take())

    def row(self, name: str, probs: np.ndarray, score: tuple[float | None, bool | None]) -> dict[str, Any]:
        """One input's answer as `medzoo predict` writes it into predictions.json."""
        return {"path": name, "prediction": self.classes[int(probs.argmax())],
                "probabilities": {c: float(v) for c, v in zip(self.classes, probs)},
                "ood_score": score[0], "ood": score[1]}

    def predict(self, inputs: Any, batch_size: int = 32, progress: bool = False) -> list[dict[str, Any]]:
        """Class probabilities: one dict per input `{"path", "prediction", "probabilities": {class: p}, "ood_score",
        "ood"}`, equal to the rows `medzoo predict` writes (a 2D model given a volume answers per slice,
        `PATH#sliceNNN`). `inputs`: a path, a list of paths, or arrays (see `items`); `progress=True` shows the
        inputs answered (a bar on a terminal, else log lines)."""
        return [self.row(name, probs, score) for answered in self.answer(self.items(inputs), batch_size, progress)
                for name, probs, score in zip(answered.names, answered.probs, answered.scores)]

    def explain(self, input: Any, method: str = "gradcam", layer: str = "auto",
                target: int | str | None = None) -> np.ndarray:
        """The class-activation map of one input (Grad-CAM, or `method="gradcam++"`), scaled to the input's size
        and to 0..1 (H x W, or D x H x W for a 3D model), for the predicted class or `target` (an index or a
        class name). `layer="auto"` picks the deepest layer whose map is at least 8 cells a side."""
        check_layer_name(self.model, layer)
        items = self.items(input)
        if len(items) != 1:
            raise DataError(f"explain takes one input, not {len(items)} (a 2D model splits a volume into slices; "
                            "give one slice as an array).")
        batch = items[0][1][None].to(self.device)
        if isinstance(target, str):
            if target not in self.classes:
                raise DataError(f"explain: no class '{target}'; the classes are {self.classes}.")
            target = self.classes.index(target)
        chosen = choose_layer(self.model, batch, layer)
        maps = class_activation_maps(self.model, batch, chosen.name, method,
                                     None if target is None else [int(target)], [items[0][0]])
        return maps.heat[0]

