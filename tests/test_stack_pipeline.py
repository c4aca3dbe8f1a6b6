"""The whole many-channel path: a 1000-slice stack -> prepared cache -> multichannel augmentation -> loader ->
one training step of a 2D ResNet with in_chans=1000; and the MONAI volume transforms config."""

from __future__ import annotations

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from medzoo.datasets.prepared_store import prepare
from medzoo.engine.optim import build_optimizer, build_scheduler
from medzoo.engine.precision import Precision
from medzoo.engine.trainer import Trainer
from medzoo.loading.loader import make_loader
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import create_model
from tests.helpers import prepared_dataset

STACK_TRANSFORMS = {"backend": "channel_first", "train": [
    {"_target_": "medzoo.transforms.multichannel.HorizontalFlip", "p": 0.5},
    {"_target_": "medzoo.transforms.multichannel.RandomRotate90", "p": 0.5},
    {"_target_": "medzoo.transforms.multichannel.GaussianNoise", "p": 0.5},
    {"_target_": "medzoo.transforms.multichannel.Normalize", "normalization": "image"}]}


def test_one_training_step_from_1000_slice_stacks(tmp_path):
    rng = np.random.default_rng(0)
    sources = []
    for index in range(4):
        path = tmp_path / "raw" / f"stack{index}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, rng.integers(0, 3000, (1000, 32, 32)).astype(np.int16))
        sources.append((path, index % 2))
    prepare(sources, tmp_path / "cache", classes=["a", "b"], layout="image", in_chans=1000, progress=False)
    spec = TransformSpec.from_config(STACK_TRANSFORMS)
    dataset = prepared_dataset(tmp_path / "cache", verify="full", transform=spec.pipeline("train"))
    assert dataset.store.in_chans == 1000
    loader = make_loader(dataset, 2, shuffle=True, seed=0, num_workers=0, drop_last=True)
    images, labels = next(iter(loader))
    assert images.shape == (2, 1000, 32, 32) and images.dtype == torch.float32
    assert abs(float(images.mean())) < 0.1  # per-image z-score reached the batch

    model = create_model("resnet10", in_chans=1000, num_classes=2, input_size=32)
    before = model.conv1.weight.detach().clone()
    optimizer = build_optimizer(OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3,
                                                  "weight_decay": 0.0}), model)
    settings = OmegaConf.create({"max_epochs": 1, "accumulate_grad_batches": 1, "grad_clip_norm": None,
                                 "compile": False, "compile_mode": "default", "log_every_n_steps": 1,
                                 "progress": False, "monitor": "accuracy", "on_nonfinite": "stop"})
    trainer = Trainer(model, optimizer, build_scheduler(OmegaConf.create({"name": "constant"}), optimizer, 2, 1),
                      torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
                      precision=Precision.resolve("auto", torch.device("cpu")), settings=settings,
                      channels_last=True, classes=["a", "b"], run_dir=tmp_path, on_best=lambda *a: None)
    row = trainer.train_one_epoch(loader, 0)
    assert np.isfinite(row["train/loss"]) and not torch.equal(model.conv1.weight, before)


def test_volume_transforms_config_runs_on_a_volume():
    GlobalHydra.instance().clear()
    with initialize_config_module("medzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=["transforms=volume_3d", "transforms.image_size=16"])
    spec = TransformSpec.from_config(cfg.transforms)
    volume = np.random.default_rng(0).integers(0, 255, (1, 20, 12, 18)).astype(np.uint8)
    fixed = spec.preprocess(volume)
    assert fixed.shape == (1, 16, 16, 16) and fixed.dtype == np.uint8
    train = spec.pipeline("train")
    train.set_seed(3)
    first = train(fixed)
    train.set_seed(3)
    assert first.shape == (1, 16, 16, 16) and first.dtype == np.float32 and np.array_equal(first, train(fixed))
    evaluated = spec.pipeline("eval")(fixed)
    assert abs(float(evaluated.mean())) < 1e-3  # NormalizeIntensity
