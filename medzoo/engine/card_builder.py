"""The model card of a training run's checkpoints, built before training starts (so that what every reader
checks is checked first) and completed with metrics as the run goes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from medzoo.datasets.dataset import DataSplits
from medzoo.engine.recipe_settings import RecipeSettings
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import InputSpec, ModelCard, Preprocessing, Provenance, now, versions


def card_builder(settings: RecipeSettings, splits: DataSplits, model: torch.nn.Module, spec: TransformSpec,
                 precision: str, channels_last: bool) -> Callable[..., ModelCard]:
    """A function (metrics, epoch) -> the ModelCard of `model` trained with `settings` on `splits`."""
    data = settings.data
    prepared = splits.report.get("prepared_settings", {})  # how `medzoo prepare` laid the sources out
    laid_out = {**prepared, **{k: v for k, v in data.items() if v is not None}}
    layout = "volume" if splits.spatial_dims == 3 else ("slices" if laid_out.get("layout") == "slices" else "image")
    channels = laid_out.get("channels")
    input_spec = InputSpec(
        size=tuple(splits.input_size), layout=layout, channels=channels if isinstance(channels, int) else None,
        depth_mode=laid_out.get("depth_mode"), memory_format="channels_last" if channels_last else "contiguous",
        reader=laid_out.get("reader") or "auto", reader_options=dict(laid_out.get("reader_kwargs") or {}))
    provenance = Provenance(
        recipe=settings.recipe_name, data_name=data.get("name"), data_group=settings.data_group,
        data_settings={k: v for k, v in data.items() if k != "_target_"}, fingerprint=splits.fingerprint,
        num_train=len(splits.train.labels), num_val=len(splits.val.labels), num_test=len(splits.test.labels),
        config=settings.record, versions=versions(), created=now())
    card = ModelCard(
        arch=model.arch, in_chans=splits.in_chans, num_classes=len(splits.classes), classes=tuple(splits.classes),
        spatial_dims=splits.spatial_dims,
        model_kwargs={"stem": model.stem, "norm": getattr(model, "norm", "batch"), "width": getattr(model, "width", 1.0),
                      **{key: getattr(model, key) for key in ("conv", "shortcut")  # ResNet options (strings);
                         if isinstance(getattr(model, key, None), str)    # another model's `conv` may be a layer
                         and getattr(model, key) not in ("standard", "projection")}},
        input=input_spec, preprocessing=Preprocessing.from_steps(**spec.card()),
        precision=precision, provenance=provenance)
    # what every reader will check, checked before training starts (e.g. class folder names)
    ModelCard.from_dict(card.to_dict(), f"the card for this run's checkpoints ({settings.recipe_name or 'no recipe'})")

    def build(metrics: dict | None = None, epoch: int | None = None) -> ModelCard:
        return card.with_metrics(metrics or {}, epoch=epoch)

    return build
