"""Experiment trackers and the Optuna sweep, offline: `logger=mlflow` read back from MLflow's local file store with
MLflow's own client, `logger=wandb` (offline mode) read back from the files W&B writes in the run dir, the one-line
error for a missing tracker package, and `hparams_search=demo_optuna` through Hydra's Optuna sweeper."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path

import pytest
import yaml

import medzoo
from medzoo.commands.train import TrainMetrics
from medzoo.errors import ConfigError, UnknownNameError
from tests.test_cli import medzoo as medzoo_cli

FAST = ("model=resnet10", "model.width=0.25", "trainer.precision=fp32", "loader.num_workers=0",
        "trainer.progress=false", "logger.plots=false", "trainer.ood=false")
OFFLINE = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture
def offline(tmp_path, monkeypatch) -> dict[str, str]:
    """No tracker reaches the network, and W&B keeps its cache and settings inside the test's folder."""
    env = {**OFFLINE, **{f"WANDB_{name}_DIR": str(tmp_path / "wandb-home" / name.lower())
                         for name in ("CACHE", "CONFIG", "DATA")}}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def epoch_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_mlflow_run_holds_params_epoch_metrics_and_artifacts(tmp_path, offline, monkeypatch):
    from mlflow.tracking import MlflowClient

    runs, run = tmp_path / "runs", tmp_path / "runs" / "train" / "one"
    medzoo_cli("train", "recipe=demo", "logger=mlflow", "trainer.max_epochs=2", *FAST, f"paths.runs_dir={runs}",
               f"hydra.run.dir={run}", env=offline)

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only with this
    client = MlflowClient(tracking_uri=(runs / "mlruns").as_uri())  # the default store: paths.runs_dir/mlruns
    experiment = client.get_experiment_by_name("demo")  # the recipe's name
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "train/one"
    params = found.data.params
    assert params["recipe_name"] == "demo" and params["model.name"] == "resnet10"
    assert params["trainer.max_epochs"] == "2" and float(params["optim.lr"]) == 1e-3
    assert params["logger.loggers"] == "['csv', 'tensorboard', 'mlflow']"

    rows = epoch_rows(run)
    for key in ("train/loss", "val/accuracy", "val/auc"):
        history = client.get_metric_history(found.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
        assert [m.value for m in history] == pytest.approx([float(row[key]) for row in rows]), key

    stored = Path(client.download_artifacts(found.info.run_id, "", str(tmp_path / "artifacts")))
    assert json.loads((stored / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())
    assert (stored / "report.html").read_bytes() == (run / "report.html").read_bytes()
    best = run / "checkpoints" / "best.safetensors"
    assert (stored / "checkpoints" / "best.safetensors").read_bytes() == best.read_bytes()


def wandb_records(path: Path) -> list:
    """The records of a `.wandb` file, as W&B's own protobuf messages (`wandb_internal_pb2.Record`).

    W&B's Go core writes the file and the wandb package no longer ships a Python reader for it; the framing is the
    LevelDB log format behind a 7-byte W&B header: 32 KiB blocks, each chunk `crc32 (4) | length (2) | type (1)`,
    type 1 a whole record, 2/3/4 its first/middle/last part.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B run file"
    records, position, parts = [], 7, b""
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        parts += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def test_wandb_offline_run_holds_config_epoch_metrics_and_artifacts(tmp_path, offline):
    run = tmp_path / "runs" / "train" / "two"
    medzoo_cli("train", "recipe=demo", "logger=wandb", "trainer.max_epochs=2", *FAST,
               f"paths.runs_dir={tmp_path / 'runs'}", f"hydra.run.dir={run}", env=offline)

    (folder,) = (run / "wandb").glob("offline-run-*")  # offline mode, inside the run dir
    for name in ("report.html", "metrics.json"):
        assert (folder / "files" / name).read_bytes() == (run / name).read_bytes(), name
    (run_file,) = folder.glob("run-*.wandb")
    records = wandb_records(run_file)
    kinds = [record.WhichOneof("record_type") for record in records]
    assert "run" in kinds and kinds[-1] == "exit"  # the run was finished

    config = {item.key or ".".join(item.nested_key): json.loads(item.value_json) for record in records
              if record.HasField("config") for item in record.config.update}
    assert config["recipe_name"] == "demo" and config["model.name"] == "resnet10"
    assert config["trainer.max_epochs"] == 2 and config["optim.lr"] == 1e-3

    history = [{item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
               for record in records if record.HasField("history")]  # W&B's core writes a history key as nested
    assert [row["_step"] for row in history] == [1, 2]
    rows = epoch_rows(run)
    for key in ("train/loss", "val/accuracy", "val/auc"):
        assert [row[key] for row in history] == pytest.approx([float(row[key]) for row in rows]), key

    (artifact,) = [record.artifact for record in records if record.HasField("artifact")]
    assert artifact.type == "model" and [entry.path for entry in artifact.manifest.contents] == ["best.safetensors"]


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_missing_tracker_package_is_one_line_before_any_work(tmp_path, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import mlflow` now fails as if it were not installed
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"logger={tracker}: the {tracker} package is not installed; "
                                          rf"pip install {tracker} ") as caught:
        medzoo.train("demo", f"logger={tracker}", *FAST, f"hydra.run.dir={run}")
    assert "\n" not in str(caught.value)
    assert not (run / "data_report.json").exists()  # stopped before the data was loaded


def test_an_unknown_logger_name_lists_the_close_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown logger .*'mlfow'.*Did you mean: mlflow"):
        medzoo.train("demo", "logger.loggers=[csv,mlfow]", *FAST, f"hydra.run.dir={tmp_path / 'run'}")


def test_train_returns_the_validation_score_a_sweep_optimises():
    metrics = TrainMetrics({"monitor": "val/auc", "val": {"auc": 0.8, "accuracy": 0.6}, "test": {"auc": 0.1}})
    assert float(metrics) == 0.8 and metrics["test"] == {"auc": 0.1}


def test_optuna_sweep_over_the_demo_recipe_writes_its_results(tmp_path, offline):
    sweep = tmp_path / "sweep"
    medzoo_cli("train", "-m", "recipe=demo", "hparams_search=demo_optuna", "hydra.sweeper.n_trials=2",
               "trainer.max_epochs=1", "model=resnet10", "trainer.precision=fp32", "loader.num_workers=0",
               "trainer.progress=false", "logger.plots=false", "trainer.ood=false", "evaluate_test=false",
               f"hydra.sweep.dir={sweep}", env=offline)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == {"optim.lr", "model.width"}
    assert 1e-4 <= results["best_params"]["optim.lr"] <= 1e-2 and results["best_params"]["model.width"] in (
        0.25, 0.5, 1.0)
    trials = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in range(2)]
    assert results["best_value"] == max(trial["val"]["accuracy"] for trial in trials)  # what train returned
