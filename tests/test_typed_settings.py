"""Settings stop at the command layer: the loader group (conf/loader/) and the recipe become typed, checked
values before any work; data configs hold only source arguments; the engine's entry points take typed settings."""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from medzoo.engine.card_builder import card_builder
from medzoo.engine.loaders import build_loaders, eval_loader
from medzoo.engine.recipe_parts import load_splits, training_parts
from medzoo.engine.recipe_settings import ModelSettings, RecipeSettings
from medzoo.engine.trainer import Trainer
from medzoo.errors import ConfigError
from medzoo.loading.settings import LOADER_KEYS, LoaderSettings, moved_loader_keys
from medzoo.recipes import register_recipes
from tests.cli_runner import run_medzoo

DATA_CONFIGS = sorted(path.stem for path in Path(str(resources.files("medzoo.conf") / "data")).glob("*.yaml"))


def composed(*overrides: str):
    register_recipes()
    with initialize_config_module("medzoo.conf", version_base=None):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize(("values", "key"), [
    ({"batch_size": 0}, "loader.batch_size=0"),
    ({"batch_size": True}, "loader.batch_size=True"),
    ({"eval_batch_size": -2}, "loader.eval_batch_size=-2"),
    ({"num_workers": -1}, "loader.num_workers=-1"),
    ({"num_workers": "many"}, "loader.num_workers='many'"),
    ({"device_cache": "maybe"}, "loader.device_cache='maybe'"),
    ({"device_augment": 1}, "loader.device_augment=1"),
    ({"batch_ring": "yes"}, "loader.batch_ring='yes'"),
    ({"batch_sise": 8}, "loader.batch_sise is not a setting"),
])
def test_a_wrong_loader_setting_is_a_config_error_naming_its_key(values, key):
    with pytest.raises(ConfigError, match=key.replace("(", r"\(")):
        LoaderSettings.from_config(values)


def test_loader_settings_keep_their_values_and_the_eval_batch_falls_back_to_the_batch():
    settings = LoaderSettings.from_config({"batch_size": 12, "eval_batch_size": None, "num_workers": 0,
                                           "device_cache": "auto", "batch_ring": False})
    assert (settings.batch_size, settings.eval_batch, settings.num_workers) == (12, 12, 0)
    assert (settings.device_cache, settings.device_augment, settings.batch_ring) == ("auto", False, False)
    assert settings.merged({"eval_batch_size": 5, "num_workers": None}).eval_batch == 5


@pytest.mark.parametrize(("overrides", "expected"), [
    (("data=brain_tumor",), (64, 128, "auto", False)),
    (("data=prepared", "data.path=x"), (8, 8, "auto", False)),
    (("data=breastmnist",), (128, 256, 0, False)),
    (("data=medmnist", "data.path=x.npz"), (128, 256, 0, False)),
    (("recipe=adrenalmnist3d_resnet18_3d",), (32, 256, 0, False)),
    (("recipe=brain_tumor_resnet18_cpu",), (32, 128, 0, "auto")),
    (("data=prepared", "data.path=x", "loader=gpu"), (64, 128, "auto", "auto")),
    (("data=breastmnist", "loader.batch_size=7"), (7, 256, 0, False)),
])
def test_each_data_config_picks_the_loader_that_fits_its_samples(overrides, expected):
    cfg = composed(*overrides)
    loader = LoaderSettings.from_config(cfg.loader)
    assert (loader.batch_size, loader.eval_batch, loader.num_workers, loader.device_cache) == expected
    assert not set(LOADER_KEYS) & set(cfg.data), "a data config still carries loader keys"


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_configs_and_their_sources_hold_only_source_arguments(name):
    config = OmegaConf.load(Path(str(resources.files("medzoo.conf") / "data" / f"{name}.yaml")))
    assert not set(LOADER_KEYS) & set(config), name
    source = get_class(config._target_)
    parameters = inspect.signature(source.__init__).parameters.values()
    assert not [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD], \
        f"{source.__name__} swallows unknown keys (**kwargs): a typo in a data setting would pass unnoticed"


RECIPES = sorted(path.stem for path in Path(str(resources.files("medzoo.recipes"))).glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_shipped_recipe_builds_its_data_source(recipe, tmp_path, monkeypatch):
    """A recipe inherits another recipe's `data.*` values: each one the source does not take would stop the run
    before any work (brain_tumor_multisource_cpu inherited brain_tumor_resnet18's data.clean_split)."""
    monkeypatch.setenv("MEDZOO_DATA", str(tmp_path))  # building a source reads no file
    cfg = composed(f"recipe={recipe}")
    if "path" in cfg.data and cfg.data.path is None:  # a generic recipe: the user names the file
        cfg = composed(f"recipe={recipe}", "data.path=x.npz")
    settings = RecipeSettings.from_config(cfg)
    source = instantiate(settings.data, _convert_="all")
    assert hasattr(source, "load"), recipe


def test_a_multi_source_recipe_keeps_the_audit_clean_split_of_its_image_folders():
    source = instantiate(RecipeSettings.from_config(composed("recipe=brain_tumor_multisource_cpu")).data,
                         _convert_="all")
    assert source.sources["brain_tumor"].clean_split == "auto"
    source = instantiate(RecipeSettings.from_config(composed("recipe=brain_tumor_multisource_cpu",
                                                             "data.clean_split=null")).data, _convert_="all")
    assert source.sources["brain_tumor"].clean_split is None


def test_a_loader_key_under_data_is_told_where_it_went():
    with pytest.raises(ConfigError, match=r"data\.num_workers is a loader setting: write loader\.num_workers=0"):
        moved_loader_keys({"root": "x", "num_workers": 0})
    with pytest.raises(ConfigError, match=r"data\.batch_size is a loader setting"):
        RecipeSettings.from_config(composed("data=breastmnist", "+data.batch_size=3"))


def test_the_command_line_names_the_new_key_in_one_line(tmp_path):
    result = run_medzoo("train", "data=breastmnist", "data.batch_size=3", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "write loader.batch_size=3" in lines[0]
    assert not (tmp_path / "run").exists()


def test_recipe_settings_are_typed_and_checked_before_any_work():
    settings = RecipeSettings.from_config(composed("recipe=breastmnist_resnet18", "loader.batch_size=16"), "breastmnist")
    assert isinstance(settings.loader, LoaderSettings) and settings.loader.batch_size == 16
    assert isinstance(settings.model, ModelSettings) and settings.model.name == "resnet18"
    assert settings.recipe_name == "breastmnist_resnet18" and settings.data_group == "breastmnist"
    assert type(settings.data) is dict and type(settings.optim) is dict and type(settings.record) is dict
    assert settings.record["loader"]["batch_size"] == 16  # the whole config, as plain values, for the card
    with pytest.raises(ConfigError, match=r"model\.widht is not a model setting.*width"):
        RecipeSettings.from_config(composed("data=breastmnist", "+model.widht=0.5"))
    with pytest.raises(ConfigError, match=r"model\.width=-1"):
        RecipeSettings.from_config(composed("data=breastmnist", "model.width=-1"))


def test_model_options_leave_the_architecture_to_pretrained_weights_unless_set():
    assert ModelSettings("resnet18").options(28) == {"norm": "batch", "stem": "auto", "input_size": 28}
    assert ModelSettings("resnet18", width=0.5, conv="acs").options(28)["conv"] == "acs"
    assert ModelSettings("resnet18", pretrained="x").options(28) == {"input_size": 28}
    assert ModelSettings("resnet18", pretrained="x", norm="group").options(28) == {"norm": "group", "input_size": 28}


@pytest.mark.parametrize(("function", "parameter", "annotation"), [
    (build_loaders, "settings", "LoaderSettings"),
    (eval_loader, "settings", "LoaderSettings"),
    (training_parts, "settings", "RecipeSettings"),
    (card_builder, "settings", "RecipeSettings"),
    (load_splits, "data", "dict"),
    (Trainer.__init__, "settings", "TrainerSettings"),
])
def test_the_engine_takes_typed_settings_not_a_config(function, parameter, annotation):
    assert inspect.signature(function).parameters[parameter].annotation == annotation
