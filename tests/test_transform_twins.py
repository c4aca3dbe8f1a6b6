"""A recipe's augmentation is the same on the CPU and on the device: every step of every shipped transforms
config's `train` list, run per sample, equals its batch twin (medzoo.transforms.twins) run on a batch with
the same parameters.

albumentations steps draw their parameters from Python's `random`, the twins from a torch generator, so the
parameters are made the same by pinning every range to one value (p = 1); medzoo's own steps draw the same
parameters from a seed (`sample_params`) and are compared on them. Tolerances, in grey levels of 0..255:
0 for flips, the downscale gather and JPEG; under 1 where albumentations' uint8 lookup tables truncate
(gamma, brightness/contrast, blur) and the twin keeps floats; under 2 for warps, where OpenCV quantises
bilinear weights to 1/32 pixel. 3D volume steps (MONAI) have no twin: they run on the CPU, and asking for
device augmentation names them.
"""

from __future__ import annotations

import re
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import medzoo
from medzoo.errors import ConfigError
from medzoo.transforms import batch as bt
from medzoo.transforms import multichannel as mc
from medzoo.transforms.multichannel import affine_matrix
from medzoo.transforms.registry import build_step, split_step, step_class
from medzoo.transforms.spec import TransformSpec
from medzoo.transforms.twins import _parameters, batch_twin

CONFIGS = sorted((Path(medzoo.__file__).parent / "conf" / "transforms").glob("*.yaml"))
SIZE = 48
# grey levels (of 0..255) the twin may differ from albumentations on the same parameters
TOLERANCE = {"Affine": 2.0, "HorizontalFlip": 0.0, "VerticalFlip": 0.0, "RandomRotate90": 0.0, "Downscale": 0.0,
             "ImageCompression": 0.0}
TRUNCATION = 1.0  # albumentations' uint8 lookup tables truncate to whole grey levels, the twin keeps floats


def train_steps(path: Path) -> list[dict]:
    config = OmegaConf.load(path)
    if "image_size" in config:
        config.image_size = SIZE
    return OmegaConf.to_container(OmegaConf.create({"transforms": config}), resolve=True)["transforms"]["train"]


def shipped_steps(twinned: bool = True) -> list[tuple[str, dict]]:
    """(config[index], step) of every shipped `train` step; the 2D ones have twins, the 3D (MONAI) none."""
    return [(f"{path.stem}[{index}]", step) for path in CONFIGS for index, step in enumerate(train_steps(path))
            if split_step(step, path.stem)[0].startswith("monai.") != twinned]


def images(channels: int, count: int = 4) -> np.ndarray:
    """Smooth uint8 (B, C, H, W) images with an edge, so that warps and blurs have something to move."""
    rng = np.random.default_rng(channels)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    out = []
    for _ in range(count):
        f = rng.uniform(2, 6, size=(channels, 2, 1, 1))
        wave = 0.5 + 0.35 * np.sin(f[:, 0] * yy + f[:, 1] * xx + rng.uniform(0, 6, (channels, 1, 1)))
        wave[:, SIZE // 3: 2 * SIZE // 3, SIZE // 4: SIZE // 2] += 0.1
        out.append(np.clip(wave * 255, 0, 255).round().astype(np.uint8))
    return np.stack(out)


def pinned(name: str, params: dict) -> dict:
    """The step with every random range narrowed to one value and p = 1: nothing is left to chance."""
    settings = {**{k: v for k, v in _parameters(step_class(name)).items() if isinstance(v, (tuple, list))},
                **params, "p": 1.0}
    for key, value in settings.items():
        if key == "size":
            continue
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            settings[key] = [value[0], value[0]]
        elif key in ("brightness_limit", "contrast_limit") and isinstance(value, (int, float)):
            settings[key] = [value, value]
    if name.endswith("RandomResizedCrop"):  # the whole image: the crop's place is drawn, not pinned
        settings.update(scale=[1.0, 1.0], ratio=[1.0, 1.0])
    return settings


def per_sample(name: str, step, sample: np.ndarray) -> np.ndarray:
    if name.startswith("albumentations."):
        out = A.Compose([step], seed=0)(image=np.ascontiguousarray(sample.transpose(1, 2, 0)))["image"]
        return (out if out.ndim == 3 else out[..., None]).transpose(2, 0, 1).astype(np.float32)
    return step(sample, max_value=255.0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("where", "step"), shipped_steps(), ids=[w for w, _ in shipped_steps()])
def test_every_shipped_step_equals_its_batch_twin(where, step, channels):
    name, params = split_step(step, where)
    x = images(channels)
    if name.startswith("albumentations."):
        step = {"_target_": name, **pinned(name, params)}
        twin = build_step(batch_twin(step, where))
        expected = np.stack([per_sample(name, build_step(step), sample) for sample in x])
        got = bt.Compose([twin])(torch.from_numpy(x)).numpy()
    else:  # medzoo's own steps: the same parameters drawn from one seed on both sides
        cpu = build_step({**step, "p": 1.0})
        twin = build_step(batch_twin({**step, "p": 1.0}, where))
        rng = np.random.default_rng(7)
        drawn = [cpu.sample_params(rng, x.shape[1:]) for _ in x]
        if isinstance(cpu, mc.GaussianNoise):  # numpy and torch draw different numbers: replay the same noise
            for p in drawn:
                p["noise"] = rng.standard_normal(cpu.noise_shape(x.shape[1:])).astype(np.float32)
        xf = x.astype(np.float32)
        expected = np.stack([cpu.apply(sample, p, max_value=255.0) for sample, p in zip(xf, drawn, strict=True)])
        got = twin.apply(torch.from_numpy(xf), bt.stack_params(drawn), max_value=255.0).numpy()
    assert got.shape == expected.shape, where
    scale = 1.0 if expected.max() > 20 else 255.0  # normalised outputs: compare in grey levels as well
    tolerance = TOLERANCE.get(name.rsplit(".", 1)[-1], TRUNCATION)
    if name.endswith("Normalize"):  # z-scores of a float and of a rounded image
        tolerance = 1e-3 * scale
    worst = float(np.abs(got - expected).max())
    assert worst <= tolerance, f"{where} ({name}): twin differs by {worst:.4f} (tolerance {tolerance})"


@pytest.mark.parametrize(("where", "step"), shipped_steps(twinned=False),
                         ids=[w for w, _ in shipped_steps(twinned=False)])
def test_volume_steps_have_no_twin_and_are_named(where, step):
    name = split_step(step, where)[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(where)}.*{re.escape(name)}.*has no per-batch twin"):
        batch_twin(step, where)


def test_the_brain_tumour_recipe_states_its_augmentation_once():
    path = Path(medzoo.__file__).parent / "conf" / "transforms" / "brain_tumor_2d.yaml"
    assert "batch_train" not in OmegaConf.load(path)
    config = OmegaConf.create({"transforms": OmegaConf.load(path)})
    config.transforms.image_size = SIZE
    spec = TransformSpec.from_config(config.transforms)
    twins = spec.batch_pipeline().transforms
    assert [type(t).__name__ for t in twins] == ["RandomResizedCrop", "HorizontalFlip", "Affine", "Downscale",
                                                 "GaussianBlur", "ImageCompression", "BrightnessContrast", "Gamma",
                                                 "Normalize"]
    # albumentations' own settings carried over: independent x/y zoom, whole-pixel shifts, its blur sigma
    affine, blur = twins[2], twins[4]
    assert affine.keep_ratio is False and affine.whole_pixels is True
    assert blur.blur_limit == (3, 5) and blur.sigma_limit == (0.5, 3.0)


def test_a_step_without_a_twin_is_named():
    with pytest.raises(ConfigError, match="ElasticTransform.*has no per-batch twin"):
        batch_twin({"_target_": "albumentations.ElasticTransform"}, "transforms.train[3]")
    with pytest.raises(ConfigError, match=r"train\[0\].*shear"):
        batch_twin({"_target_": "albumentations.Affine", "shear": [5, 10]}, "transforms.train[0]")
    with pytest.raises(ConfigError, match="interpolation"):
        batch_twin({"_target_": "albumentations.Affine", "interpolation": 3}, "transforms.train[0]")
    spec = TransformSpec(train=[{"_target_": "monai.transforms.RandFlip", "prob": 0.5}], backend="channel_first")
    with pytest.raises(ConfigError, match="RandFlip.*has no per-batch twin"):
        spec.batch_pipeline()


def test_batch_train_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="batch_train is no longer read"):
        TransformSpec.from_config({"train": [], "batch_train": [{"_target_": "medzoo.transforms.batch.Normalize"}]})


@pytest.mark.parametrize(("scale", "scale_y", "angle"), [(0.9, 1.1, 15.0), (1.2, 0.8, -40.0)])
def test_independent_zoom_per_axis_follows_albumentations_matrix(scale, scale_y, angle):
    from albumentations.augmentations.geometric import functional as fg

    height, width = 30, 50
    theirs = fg.create_affine_transformation_matrix({"x": 3, "y": -2}, {"x": 0.0, "y": 0.0},
                                                    {"x": scale, "y": scale_y}, angle, fg.center((height, width)))
    ours = affine_matrix(angle, scale, 3, -2, height, width, scale_y)
    np.testing.assert_allclose(ours, theirs[:2], atol=1e-12)


def test_downscale_and_jpeg_twins_equal_albumentations_exactly():
    x = images(1, count=6)
    scales = torch.tensor([0.35, 0.5, 0.61, 0.77, 0.9, 0.43])
    down = bt.Downscale((0.35, 0.9), p=1).apply(torch.from_numpy(x), {"scale": scales, "apply": torch.ones(6, dtype=bool)})
    jpeg = bt.ImageCompression("jpeg", (40, 95), p=1).apply(
        torch.from_numpy(x), {"quality": torch.tensor([40, 50, 60, 70, 80, 95]), "apply": torch.ones(6, dtype=bool)},
        max_value=255.0)
    for index, (scale, quality) in enumerate(zip(scales.tolist(), [40, 50, 60, 70, 80, 95], strict=True)):
        np.testing.assert_array_equal(down[index, 0].numpy(),
                                      A.Downscale(scale_range=(scale, scale), p=1)(image=x[index, 0])["image"])
        np.testing.assert_array_equal(jpeg[index, 0].numpy(),
                                      A.ImageCompression(quality_range=(quality, quality), p=1)(image=x[index, 0])["image"])
