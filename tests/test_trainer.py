"""The training loop in-process: learning, non-finite losses, out-of-memory, early stopping, accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import ArrayDataset
from medzoo.engine.optim import build_scheduler
from medzoo.engine.precision import Precision
from medzoo.engine.trainer import Trainer, TrainingError
from medzoo.loading.loader import make_loader

SETTINGS = {"max_epochs": 3, "accumulate_grad_batches": 1, "grad_clip_norm": None, "compile": False,
            "compile_mode": "default", "log_every_n_steps": 1, "progress": False, "monitor": "accuracy",
            "early_stopping_patience": None, "on_nonfinite": "stop"}


class Scaled(torch.nn.Module):
    """A linear classifier on 2x4x4 inputs; `poison` makes its output NaN or raises like an OOM."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(32, 2)
        self.poison: str | None = None

    def forward(self, x):
        if self.poison == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.poison == "nan" else out


class Standardise:
    """Maps uint8 to about [-2, 2]; the engine reseeds transforms per sample, so it has set_seed."""

    def set_seed(self, seed: int) -> None:
        pass

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return (image.astype(np.float32) / 255 - 0.5) * 4


def loader(n=64, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = (rng.integers(0, 60, (n, 2, 4, 4)) + labels[:, None, None, None] * 120).astype(np.uint8)
    split = SplitArrays(images, labels, [str(i) for i in range(n)])
    return make_loader(ArrayDataset(split, Standardise()), batch, shuffle=True, seed=seed, num_workers=0)


def make_trainer(tmp_path, **overrides):
    torch.manual_seed(0)
    model = Scaled()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    settings = OmegaConf.create({**SETTINGS, **overrides})
    scheduler = build_scheduler(OmegaConf.create({"name": "constant"}), optimizer, 8, settings.max_epochs)
    best = []
    trainer = Trainer(model, optimizer, scheduler, torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
                      precision=Precision.resolve("fp32", torch.device("cpu")), settings=settings,
                      channels_last=False, classes=["a", "b"], run_dir=tmp_path,
                      on_best=lambda m, info: best.append(info["epoch"]))
    return trainer, best


def test_fit_learns_saves_state_and_picks_best_on_validation(tmp_path):
    trainer, best = make_trainer(tmp_path)
    progress = trainer.fit(loader(), loader(seed=1))
    assert progress.epoch == 3 and progress.history[-1]["val/accuracy"] > 0.9
    assert best and best[-1] == progress.best_epoch
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_nonfinite_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tmp_path):
    trainer, _ = make_trainer(tmp_path)
    trainer.settings.max_epochs = 1
    trainer.fit(loader(), loader(seed=1))
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.settings.max_epochs = 2
    trainer.model.poison = "nan"
    with pytest.raises(TrainingError, match="non-finite loss.*optim.lr.*grad_clip_norm"):
        trainer.fit(loader(), loader(seed=1))
    from medzoo.engine.state import load_state

    saved = load_state(tmp_path / "checkpoints" / "last.pt")
    assert saved["progress"]["epoch"] == 1
    assert all(torch.equal(saved["model"][k], good[k]) for k in good)


def test_nonfinite_loss_can_skip_batches_instead(tmp_path):
    trainer, _ = make_trainer(tmp_path, on_nonfinite="skip", max_epochs=1)
    trainer.model.poison = "nan"
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    row = trainer.train_one_epoch(loader(), 0)
    assert row["skipped_steps"] == 8
    assert all(torch.equal(trainer.model.state_dict()[k], before[k]) for k in before)


def test_out_of_memory_names_the_batch_size_and_what_to_lower(tmp_path):
    trainer, _ = make_trainer(tmp_path)
    trainer.model.poison = "oom"
    with pytest.raises(TrainingError, match="loader.batch_size=8.*accumulate_grad_batches"):
        trainer.fit(loader(), loader(seed=1))


def test_early_stopping_ends_the_run(tmp_path):
    trainer, _ = make_trainer(tmp_path, early_stopping_patience=1, max_epochs=10)
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.0  # nothing changes, so validation never improves after epoch 1
    trainer.scheduler.base_lrs = [0.0]
    progress = trainer.fit(loader(), loader(seed=1))
    assert progress.epoch == 2 and progress.best_epoch == 1


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    small, _ = make_trainer(tmp_path / "a", accumulate_grad_batches=2, max_epochs=1)
    large, _ = make_trainer(tmp_path / "b", max_epochs=1)
    small.train_one_epoch(loader(n=16, batch=4), 0)
    large.train_one_epoch(loader(n=16, batch=8), 0)
    for key, value in large.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)
