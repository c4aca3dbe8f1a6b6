"""A training recipe's settings as typed values: what `medzoo train` and `medzoo bench` hand to the engine.

The command layer composes the config with Hydra and calls `RecipeSettings.from_config` once; below it the
engine reads fields (`settings.loader.batch_size`, `settings.model.name`), never a DictConfig, and every
setting a user can get wrong is checked here with its key named. The data config and the optimiser and
schedule configs stay plain mappings: they name the class to build (`_target_`, chosen by the user's recipe
or command line, never by a checkpoint) and its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf

from medzoo.close_names import unknown_name
from medzoo.engine.settings import TrainerSettings
from medzoo.errors import ConfigError
from medzoo.loading.settings import LoaderSettings, moved_loader_keys


def plain_mapping(config: Any, where: str) -> dict[str, Any]:
    """A config node as a plain, resolved dict; a node that is not a mapping is a ConfigError naming it."""
    values = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: a mapping of settings expected, got {values!r}.")
    return dict(values)


@dataclass(frozen=True)
class ModelSettings:
    """What `conf/model/*.yaml` documents: the registered model and the options its entrypoint takes."""

    name: str
    stem: str = "auto"
    norm: str = "batch"
    width: float | None = None
    conv: str | None = None  # conv=acs: a 2D ResNet's kernels run on volumes (zoo/acs.py)
    shortcut: str | None = None
    pretrained: str | None = None  # a checkpoint path or zoo name

    @classmethod
    def from_config(cls, config: Any, where: str = "model") -> ModelSettings:
        values = plain_mapping(config, where)
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                raise ConfigError(f"{where}.{key} is not a model setting "
                                  f"({unknown_name(f'{where} setting', str(key), known)}).")
        if not isinstance(values.get("name"), str) or not values["name"]:
            raise ConfigError(f"{where}.name={values.get('name')!r}: the name of a registered model expected "
                              "(medzoo.list_models()).")
        if values.get("width") is not None and (isinstance(values["width"], bool)
                                                or not isinstance(values["width"], (int, float))
                                                or values["width"] <= 0):
            raise ConfigError(f"{where}.width={values['width']!r}: null or a positive number expected.")
        return cls(**{k: v for k, v in values.items() if v is not None or k in ("width", "conv", "shortcut",
                                                                                   "pretrained")})

    def options(self, input_size: int) -> dict[str, Any]:
        """The entrypoint's options: norm, stem and input size, with width, conv and shortcut where set. With
        pretrained weights the architecture options belong to the weights, unless set explicitly."""
        options: dict[str, Any] = {"norm": self.norm, "stem": self.stem, "input_size": input_size}
        options.update({key: getattr(self, key) for key in ("width", "conv", "shortcut")
                        if getattr(self, key) is not None})
        if self.pretrained:
            options = {k: v for k, v in options.items() if k == "input_size" or v not in ("auto", "batch")}
        return options


@dataclass(frozen=True)
class RecipeSettings:
    """Everything one training run is configured with, checked."""

    model: ModelSettings
    trainer: TrainerSettings
    loader: LoaderSettings
    data: dict[str, Any]  # the data config: `_target_` (a data source class) and its arguments
    optim: dict[str, Any]  # `_target_` optimiser with `_partial_: true`, plus medzoo's backbone_lr_scale
    sched: dict[str, Any]  # the schedule's name and options (engine/optim.py SCHEDULES)
    seed: int = 0
    recipe_name: str | None = None
    data_group: str | None = None  # the data config chosen (conf/data/NAME.yaml), recorded in the card
    evaluate_test: bool = True
    record: dict[str, Any] = field(default_factory=dict)  # the whole resolved config, kept as text in the card

    @classmethod
    def from_config(cls, cfg: Any, data_group: str | None = None) -> RecipeSettings:
        """The settings of a composed `train` (or `bench`) config."""
        data = plain_mapping(cfg.data, "data")
        moved_loader_keys(data)
        seed = cfg.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed={seed!r}: a whole number expected.")
        return cls(model=ModelSettings.from_config(cfg.model), trainer=TrainerSettings.from_config(cfg.trainer),
                   loader=LoaderSettings.from_config(cfg.get("loader")), data=data,
                   optim=plain_mapping(cfg.optim, "optim"), sched=plain_mapping(cfg.sched, "sched"), seed=seed,
                   recipe_name=cfg.get("recipe_name"), data_group=data_group or data.get("name"),
                   evaluate_test=bool(cfg.get("evaluate_test", True)),
                   record=plain_mapping(cfg, "the configuration"))
