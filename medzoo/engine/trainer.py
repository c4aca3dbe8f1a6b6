"""The training loop: train_one_epoch, evaluate, fit — with AMP, accumulation, clipping, early stopping
and exact resume."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from medzoo.engine.distributed import SINGLE_PROCESS, DistInfo, gather_predictions, sum_across
from medzoo.engine.metrics import classification_metrics
from medzoo.engine.mixing import build_mixer
from medzoo.engine.precision import Precision
from medzoo.engine.settings import TrainerSettings
from medzoo.engine.state import (
    check_resume_state,
    load_part,
    load_state,
    resume_record,
    rng_state,
    save_state,
    set_rng_state,
    stamp,
)
from medzoo.engine.uncertainty import bootstrap_ci, calibration
from medzoo.errors import MedzooError
from medzoo.progress import progress as show_progress

log = logging.getLogger(__name__)


class TrainingError(MedzooError):
    """Training cannot go on (a non-finite loss, say); the message says which setting to change."""


@dataclass
class Progress:
    """Where a run stands; saved with every resume state."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    stale_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision,
                  channels_last: bool = False, dist: DistInfo = SINGLE_PROCESS, *, progress: bool = False,
                  desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels over a whole split, in dataset order (gathered from every rank).

    `progress` shows the main process's images as they are done, as `desc` (per-epoch validation shows none)."""
    model.eval()
    probs, labels = [], []
    batches = show_progress(loader, len(loader.sampler), desc, "images", progress and dist.is_main,
                            size=lambda batch: len(batch[1]))
    for images, targets in batches:
        images = _to_device(images, device, channels_last)
        with precision.autocast():
            logits = model(images)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(targets)
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    return gather_predictions(np.asarray(loader.sampler.indices()), probs, labels, dist)


def evaluate(model: torch.nn.Module, loader: DataLoader, classes: list[str], device: torch.device,
             precision: Precision, channels_last: bool = False, detailed: bool = False,
             dist: DistInfo = SINGLE_PROCESS) -> dict[str, Any]:
    """Classification metrics of `model` over `loader`; `detailed` adds 95 % bootstrap intervals and calibration."""
    probs, labels = predict_probs(model, loader, device, precision, channels_last, dist)
    return detailed_metrics(probs, labels, classes) if detailed else classification_metrics(probs, labels, classes)


def detailed_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Classification metrics plus 95 % bootstrap intervals (`ci95`) and calibration (`ece`, `calibration`)."""
    metrics = classification_metrics(probs, labels, classes)
    reliability = calibration(probs, labels)
    metrics.update(ci95=bootstrap_ci(probs, labels), ece=reliability["ece"], calibration=reliability["bins"])
    return metrics


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


class Trainer:
    """Runs epochs of training and validation, keeps the best model by a validation metric, and writes
    a resume state after every epoch (recording the model, classes and `recipe` it belongs to)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: torch.nn.Module, *,
                 device: torch.device, precision: Precision, settings: TrainerSettings, channels_last: bool, classes: list[str],
                 run_dir: Path, on_best: Callable[[torch.nn.Module, dict], None], loggers: list[Any] = (),
                 dist: DistInfo = SINGLE_PROCESS, recipe: str | None = None):
        self.model, self.optimizer, self.scheduler, self.criterion = model, optimizer, scheduler, criterion
        self.device, self.precision, self.classes = device, precision, classes
        self.settings = settings = TrainerSettings.from_config(settings)
        self.run_dir, self.on_best, self.loggers = run_dir, on_best, list(loggers)
        self.channels_last = channels_last
        self.scaler = precision.grad_scaler()
        self.progress = Progress()
        self.skipped_steps = 0
        self.dist = dist
        step_model = model
        if dist.enabled:
            device_ids = [device.index] if device.type == "cuda" else None
            step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        self.step_model = torch.compile(step_model, mode=settings.compile_mode) if settings.compile else step_model
        self.state_path = run_dir / "checkpoints" / "last.pt"
        self.record = resume_record(model, classes, recipe)  # what the resume states say they belong to
        self.mixer = build_mixer(settings.mix)

    # --- one epoch ----------------------------------------------------------------------------------
    def train_one_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        """One pass over `loader`; returns mean loss, accuracy and the learning rate at the end."""
        self.model.train()
        accumulate, clip = int(self.settings.accumulate_grad_batches), self.settings.grad_clip_norm
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, last_index = 0, len(loader) - 1
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{self.settings.max_epochs}", leave=False,
                   disable=not (self.settings.progress and self.dist.is_main))
        self.optimizer.zero_grad(set_to_none=True)
        skip_nonfinite = self.settings.on_nonfinite == "skip"
        for index, (images, targets) in enumerate(bar):
            images = _to_device(images, self.device, self.channels_last)
            targets = targets.to(self.device, non_blocking=True)
            loss_targets = targets
            if self.mixer is not None:  # soft targets; train accuracy stays against each image's own label
                images, loss_targets = self.mixer(images, targets, len(self.classes))
            with self.precision.autocast():
                logits = self.step_model(images)
                loss = self.criterion(logits, loss_targets)
            if skip_nonfinite and not torch.isfinite(loss):  # a per-step sync, paid only in this mode
                self.skipped_steps += 1
                log.warning("non-finite loss at epoch %d step %d: batch skipped (%d so far; "
                            "trainer.on_nonfinite=skip)", epoch + 1, index + 1, self.skipped_steps)
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.scaler.scale(loss / accumulate).backward()
            if (index + 1) % accumulate == 0 or index == last_index:
                if clip:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.progress.global_step += 1
            loss_sum += loss.detach() * len(targets)
            correct += (logits.detach().argmax(1) == targets).sum()
            seen += len(targets)
            if index % self.settings.log_every_n_steps == 0 or index == last_index:
                self._check_finite(loss_sum, epoch, index)  # one sync per log interval, not per step
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
        totals = sum_across(torch.stack([loss_sum.float(), correct.float(),
                                         torch.tensor(float(seen), device=self.device)]), self.dist)
        loss_total, correct_total, seen_total = totals.tolist()
        return {"train/loss": loss_total / max(seen_total, 1), "train/accuracy": correct_total / max(seen_total, 1),
                "lr": self.optimizer.param_groups[0]["lr"], "skipped_steps": self.skipped_steps}

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, index: int) -> None:
        if not torch.isfinite(loss_sum):
            raise TrainingError(
                f"non-finite loss in epoch {epoch + 1}, step {index + 1}; training stopped and the last good "
                f"checkpoint kept at {self.state_path}. Lower optim.lr, set trainer.grad_clip_norm=1.0, or "
                "use trainer.precision=fp32 to rule out overflow.")

    # --- the whole run -------------------------------------------------------------------------------
    def fit(self, train_loader: DataLoader, val_loader: DataLoader) -> Progress:
        """Train for `max_epochs` (or until early stopping), validating after every epoch."""
        monitor, patience = self.settings.monitor, self.settings.early_stopping_patience
        for epoch in range(self.progress.epoch, int(self.settings.max_epochs)):
            train_loader.sampler.set_epoch(epoch)
            row = {"epoch": epoch + 1, **self._guarded_epoch(train_loader, epoch)}
            val = evaluate(self.model, val_loader, self.classes, self.device, self.precision, self.channels_last,
                           dist=self.dist)
            row.update({f"val/{k}": v for k, v in val.items() if isinstance(v, (int, float)) and v is not None})
            score = float(val[monitor])
            improved = score > self.progress.best_score
            if improved:  # every rank sees the same gathered metrics, so every rank decides alike
                self.progress.best_score, self.progress.best_epoch, self.progress.stale_epochs = score, epoch + 1, 0
                if self.dist.is_main:
                    self.on_best(self.model, {"epoch": epoch + 1, "val": val})
            else:
                self.progress.stale_epochs += 1
            self.progress.epoch = epoch + 1
            self.progress.history.append(row)
            if self.dist.is_main:  # log first: a kill between the two must not lose this epoch's row
                for logger in self.loggers:
                    logger.log_epoch(row)
                self.save_resume_state()
            log.info("epoch %d/%d  loss %.4f  train acc %.4f  val %s %.4f%s", epoch + 1, self.settings.max_epochs,
                     row["train/loss"], row["train/accuracy"], monitor, score, "  (best)" if improved else "")
            if patience and self.progress.stale_epochs >= int(patience):
                log.info("early stopping: val %s has not improved for %d epochs", monitor, patience)
                break
        return self.progress

    def _guarded_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        try:
            return self.train_one_epoch(loader, epoch)
        except torch.OutOfMemoryError as exc:
            raise TrainingError(
                f"out of memory in epoch {epoch + 1} with loader.batch_size={loader.batch_size} on {self.device}. "
                "Lower loader.batch_size (and raise trainer.accumulate_grad_batches to keep the effective batch), "
                "lower transforms.image_size, or use trainer.precision=bf16. The last complete epoch is saved "
                f"at {self.state_path}; resume with trainer.resume=auto.") from exc

    # --- resume ----------------------------------------------------------------------------------------
    def save_resume_state(self) -> None:
        save_state(self.state_path, stamp({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress), "rng": rng_state()}, self.record))

    def discard_resume_state(self) -> None:
        """Delete the resume state of a finished run (trainer.keep_resume_state=false): model, optimiser state
        (Adam: two tensors per weight) and RNG, about three times the model's size, needed by no finished run."""
        if self.state_path.exists():
            log.info("resume state %s deleted: the run is complete (trainer.keep_resume_state=true keeps it)",
                     self.state_path)
        self.state_path.unlink(missing_ok=True)

    def resume(self, path: Path) -> None:
        """Restore everything `save_resume_state` wrote; the next epoch is the one after it.

        The state is untrusted: its record (model, classes, recipe) and its parts are checked before anything
        is loaded, and a part that does not fit is a one-line DataError naming the file (engine.state).
        """
        state = load_state(path)
        check_resume_state(path, state, self.record, asdict(Progress()))
        load_part(path, "model", self.model.load_state_dict, state["model"])
        load_part(path, "optimizer", self.optimizer.load_state_dict, state["optimizer"])
        load_part(path, "scheduler", self.scheduler.load_state_dict, state["scheduler"],
                  keys=self.scheduler.state_dict())
        load_part(path, "scaler", self.scaler.load_state_dict, state["scaler"])
        self.progress = Progress(**state["progress"])
        load_part(path, "rng", set_rng_state, state["rng"])
        log.info("resumed from %s after epoch %d (best val %s %.4f at epoch %d)", path, self.progress.epoch,
                 self.settings.monitor, self.progress.best_score, self.progress.best_epoch)
