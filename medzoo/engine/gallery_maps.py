"""Grad-CAM for a report's gallery: a few of its samples, each explained for the class the model gave it, drawn
beside the input with a colour bar (`explain_overlay`) and kept in the run dir as `gallery_maps/*.png`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from medzoo.engine.explain import choose_layer, class_activation_maps
from medzoo.engine.explain_overlay import overlay_name, save_overlay
from medzoo.errors import MedzooError

log = logging.getLogger(__name__)
FOLDER = "gallery_maps"
PER_GALLERY = 4  # maps per row of thumbnails: each costs one forward and backward pass


class GalleryMaps:
    """`maps(image, predicted, title, name)` -> the PNG of one sample's Grad-CAM overlay, or None.

    Args:
        model: the trained model (its mode is restored after each map).
        pipeline: the `eval` steps that make a stored sample the model's input.
        classes: class names; `predicted` is one of them.
        run_dir: where `gallery_maps/` goes.
        method, layer: as `explain=` and `explain.layer` (auto: the deepest map of at least 8 cells a side).
    """

    def __init__(self, model: torch.nn.Module, pipeline: Callable[[np.ndarray], np.ndarray], classes: Sequence[str],
                 run_dir: Path, method: str = "gradcam", layer: str = "auto"):
        self.model, self.pipeline, self.classes = model, pipeline, list(classes)
        self.folder, self.method, self.layer = run_dir / FOLDER, method, layer
        self.device = next(model.parameters()).device
        self.chosen: str | None = None

    def __call__(self, image: np.ndarray, predicted: str, title: str, name: str) -> Path | None:
        try:
            batch = torch.from_numpy(np.ascontiguousarray(self.pipeline(np.asarray(image))))[None].to(self.device)
            if self.chosen is None:
                self.chosen = choose_layer(self.model, batch, self.layer).name
            maps = class_activation_maps(self.model, batch, self.chosen, self.method,
                                         [self.classes.index(predicted)], [name])
            self.folder.mkdir(exist_ok=True)
            return save_overlay(batch[0].cpu(), maps.heat[0], title, self.folder / overlay_name(name),
                                label=self.method.replace("gradcam", "Grad-CAM"))
        except (MedzooError, RuntimeError, ValueError) as exc:  # a report without one map, not a failed run
            log.warning("no %s map for %s in the report: %s", self.method, name, exc)
            return None
