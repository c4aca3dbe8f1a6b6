"""Builders of small synthetic datasets that tests can learn from quickly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def class_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A grayscale 'head' on black with a bright blob whose quadrant encodes the label."""
    image = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.42 * size) ** 2] = 80
    cy, cx = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7)][label % 4]
    image[(yy - cy * size) ** 2 + (xx - cx * size) ** 2 < (0.12 * size) ** 2] = 220
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(root: Path, per_class_train: int = 12, per_class_test: int = 4,
                      classes: tuple[str, ...] = CLASSES, seed: int = 0, size: int = 48) -> Path:
    """`root/Training/<class>/*.jpg` and `root/Testing/<class>/*.jpg`: grayscale stored as RGB, names with
    spaces and parentheses, sizes that vary (as in the real set)."""
    rng = np.random.default_rng(seed)
    for split, count in (("Training", per_class_train), ("Testing", per_class_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                side = size + int(rng.integers(0, 3)) * 8
                gray = np.array(Image.fromarray(class_image(label, rng, size)).resize((side, side)))
                Image.fromarray(np.stack([gray] * 3, -1)).save(folder / f"img ({i}).jpg", quality=95)
    return root


def prepared_dataset(root, *, verify: str = "size", transform=None):
    """A prepared store served as training serves it: `PreparedStore(root).split()` through the one
    `ArrayDataset` (without a transform a sample keeps its stored dtype); `.store` is the opened store."""
    from medzoo.datasets.dataset import ArrayDataset
    from medzoo.datasets.prepared_store import PreparedStore

    store = PreparedStore(root, verify=verify)
    dataset = ArrayDataset(store.split(), transform, keep_dtype=True)
    dataset.store = store
    return dataset
