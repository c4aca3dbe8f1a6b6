"""The SLURM launcher config composes and instantiates (nothing is submitted)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed")


def test_slurm_launcher_instantiates_with_our_settings():
    GlobalHydra.instance().clear()
    with initialize_config_module("medzoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.tasks_per_node == 4 and launcher.partition == "gpu" and launcher.timeout_min == 240
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    instance = instantiate(launcher)
    assert isinstance(instance, SlurmLauncher)
    assert instance.params["gpus_per_node"] == 4 and instance.params["tasks_per_node"] == 4
