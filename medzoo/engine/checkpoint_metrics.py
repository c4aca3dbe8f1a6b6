"""A checkpoint's metrics on the splits of installed data, through its own preprocessing: the measurement
behind `medzoo eval` and `medzoo zoo publish`. The data config comes from medzoo's installed configs (the
user's `data=NAME`, else the card's recipe or data group); the card's data settings are only values checked
against it, and nothing of the card is instantiated."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from medzoo.close_names import unknown_name
from medzoo.datasets.arrays import SplitArrays
from medzoo.engine.loaders import eval_loader
from medzoo.engine.precision import Precision
from medzoo.engine.reports import write_predictions
from medzoo.engine.trainer import detailed_metrics, predict_probs
from medzoo.errors import ConfigError, DataError
from medzoo.loading.settings import LOADER_KEYS, LoaderSettings, moved_loader_keys
from medzoo.recipes import recipe_files
from medzoo.transforms.registry import check_plain
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo.card import ModelCard

log = logging.getLogger(__name__)
# Settings of the card's data section that belong to the machine evaluating, not to the checkpoint.
LOCAL_SETTINGS = ("cache_dir",)
# Where the data lies: a card records the training machine's paths, which are not used (a crafted card could point
# anywhere). The data comes from the command line (data.root=..., data.path=...) or MEDZOO_DATA.
LOCATION_SETTINGS = ("root", "path", "test_path", "clean_split")
# Names of a file or folder under MEDZOO_DATA: kept when they are one plain name.
NAME_SETTINGS = ("folder", "file")
# Values of location settings that name no place on disk.
LOCATION_KEYWORDS = ("auto",)


def card_location_free(settings: Mapping[str, Any], where: str, prefix: str = "data.") -> dict[str, Any]:
    """The card's data settings without the places on disk they name (see LOCATION_SETTINGS: the installed
    config's value applies), also inside each of a multi-source card's sources; a file or folder name under
    MEDZOO_DATA stays when it is one plain name. Each setting dropped is logged with its recorded value."""
    kept = {}
    for key, value in settings.items():
        if key == "sources" and isinstance(value, Mapping):
            kept[key] = {name: card_location_free(source, where, f"{prefix}sources.{name}.")
                         if isinstance(source, Mapping) else source for name, source in value.items()}
        elif key in LOCATION_SETTINGS and value is not None and not _names_no_place(value):
            log.info("%s: the card's %s%s=%s (where it was trained) is not used; the data comes from the command "
                     "line or MEDZOO_DATA", where, prefix, key, value)
        elif key in NAME_SETTINGS and value is not None and not _plain_name(value):
            raise DataError(f"{where}: card data setting '{prefix}{key}' is {value!r}, which is not one plain name "
                            f"of a file or folder; the card was edited. Pass {prefix}{key}=NAME.")
        else:
            kept[key] = value
    return kept


def _names_no_place(value: Any) -> bool:
    return isinstance(value, str) and (value in LOCATION_KEYWORDS or value.startswith("builtin:"))


def _plain_name(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value \
        and "\0" not in value and ":" not in value


def data_groups() -> list[str]:
    """The data configs medzoo installs (conf/data/NAME.yaml)."""
    folder = Path(str(resources.files("medzoo.conf") / "data"))
    return sorted(path.stem for path in folder.glob("*.yaml"))


def installed_config(card: ModelCard, source: str | None, where: str) -> DictConfig:
    """The training config whose data (and the loader that data picks) to evaluate on, from installed configs
    only: `data=NAME` on the command line, else the card's recipe, else the data config the card names. Nothing
    of the card is instantiated."""
    if source:
        if source not in data_groups():
            raise unknown_name("data config (data=NAME)", source, data_groups())
        overrides = [f"data={source}"]
    elif card.recipe and card.recipe in recipe_files():
        overrides = [f"recipe={card.recipe}"]
    elif card.provenance.data_group in data_groups():
        overrides = [f"data={card.provenance.data_group}"]
    else:
        raise ConfigError(f"{where}: its recipe {card.recipe!r} and data config {card.provenance.data_group!r} are "
                          f"not installed here; name the data to evaluate on: data=NAME ({', '.join(data_groups())}) "
                          "data.root=DIR.")
    return compose(config_name="train", overrides=overrides)


def installed_data_config(card: ModelCard, source: str | None, where: str) -> DictConfig:
    """The data part of `installed_config`."""
    return installed_config(card, source, where).data


def _fits(value: Any, schema: Any) -> bool:
    if value is None:
        return True
    if schema is None:
        return isinstance(value, (str, int, float, bool))
    if isinstance(schema, str):  # settings such as num_workers or batch_ring take "auto", a number or a flag
        return isinstance(value, (str, int, float, bool))
    if isinstance(schema, bool) or isinstance(value, bool):
        return isinstance(schema, bool) and isinstance(value, bool)
    if isinstance(schema, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(schema, (list, dict)):
        return isinstance(value, (list, dict, str))
    return False


def evaluation_data(card: ModelCard, data_overrides: Mapping[str, Any], loader_overrides: Mapping[str, Any],
                    cache_dir: str, where: str = "checkpoint") -> tuple[DictConfig, LoaderSettings]:
    """The installed data config (see `installed_config`) with the card's data settings as values, checked
    against it, and every non-null command-line override on top; and the loader settings the data config picks,
    with the eval batch and workers an older card recorded among its data settings and the overrides on top."""
    user = {k: v for k, v in data_overrides.items() if v is not None}
    moved_loader_keys(user)
    installed = installed_config(card, user.pop("source", None), where)
    base = installed.data
    schema = OmegaConf.to_container(base, resolve=True)
    values, recorded_loader = {}, {}
    for key, value in card_location_free(card.provenance.data_settings, where).items():
        if key.startswith("_") or key in LOCAL_SETTINGS:
            continue
        if key in LOADER_KEYS:  # a card written before the loader group kept these among its data settings
            check_plain(value, f"{where}: card data setting '{key}'", error=DataError)
            recorded_loader[key] = value
            continue
        if key not in schema:
            log.warning("%s: card data setting '%s' is not a setting of this data config; ignored", where, key)
            continue
        check_plain(value, f"{where}: card data setting '{key}'", error=DataError)  # no `_target_` at any depth
        if not _fits(value, schema[key]):
            raise DataError(f"{where}: card data setting '{key}' is {value!r}, which does not fit the data config's "
                            f"{schema[key]!r}; the card was edited or comes from another medzoo. Pass data.{key}=...")
        values[key] = value
    merged = OmegaConf.merge(base, OmegaConf.create(values), OmegaConf.create(user))
    if "cache_dir" in schema:  # sources that decode once keep their cache on this machine
        with open_dict(merged):
            merged.cache_dir = cache_dir
    loader = LoaderSettings.from_config(installed.get("loader") or {})
    try:
        loader = loader.merged(recorded_loader, f"{where}: card data")
    except ConfigError as exc:
        raise DataError(f"{exc} The card was edited or comes from another medzoo; pass loader.KEY=... "
                        "instead.") from exc
    return merged, loader.merged(loader_overrides)


def data_config(card: ModelCard, overrides: Mapping[str, Any], cache_dir: str, where: str = "checkpoint") -> DictConfig:
    """The data config of `evaluation_data`."""
    return evaluation_data(card, overrides, {}, cache_dir, where)[0]


def checkpoint_metrics(model: torch.nn.Module, card: ModelCard, split_names: list[str],
                       data_overrides: Mapping[str, Any], cache_dir: str, device: torch.device,
                       precision_name: str | None = None, loader_overrides: Mapping[str, Any] | None = None,
                       predictions_dir: Path | None = None, where: str = "checkpoint",
                       samples: dict[str, SplitArrays] | None = None, progress: bool = True) -> dict[str, dict]:
    """Metrics of a loaded checkpoint on `split_names`, through installed data configs and the checkpoint's own
    preprocessing; with `predictions_dir`, also each sample's prediction as predictions_<split>.csv there; with
    `samples`, each evaluated split's arrays are put there (the report's thumbnails); `progress` shows each
    split's inference as it goes."""
    spec = TransformSpec.from_card_steps(card.preprocessing.backend, card.preprocessing.pre,
                                         card.preprocessing.eval, where)
    data_cfg, loader = evaluation_data(card, data_overrides, loader_overrides or {}, cache_dir, where)
    splits = instantiate(data_cfg, _convert_="all").load(spec.preprocess, spec.pre_spec)
    if list(splits.classes) != list(card.classes):
        raise DataError(f"the data's classes {splits.classes} differ from the checkpoint's {list(card.classes)}; "
                        "point data.root at the dataset the checkpoint was trained for.")
    if splits.in_chans != card.in_chans:
        raise DataError(f"the data has {splits.in_chans} channel(s), the checkpoint expects {card.in_chans}; "
                        f"use data prepared the same way (for stacks: medzoo prepare data.layout=slices "
                        f"data.channels={card.in_chans}).")
    precision = Precision.resolve(precision_name or card.precision, device)
    channels_last = card.channels_last
    model = model.to(memory_format=torch.channels_last) if channels_last else model
    metrics = {}
    for name in split_names:
        probs, labels = predict_probs(model, eval_loader(splits, name, spec, loader, device), device, precision,
                                      channels_last, progress=progress, desc=f"eval {name}")
        metrics[name] = detailed_metrics(probs, labels, splits.classes)
        if predictions_dir is not None:
            write_predictions(predictions_dir / f"predictions_{name}.csv", splits.split(name).keys, probs, labels,
                              splits.classes)
        if samples is not None:
            samples[name] = splits.split(name)
    return metrics
