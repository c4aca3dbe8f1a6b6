"""`medzoo bench recipe=NAME`: a recipe's training and inference speed on this machine, and its time estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import ArrayDataset
from medzoo.engine.throughput import TimedLoader
from medzoo.loading.loader import make_loader
from tests.test_cli import medzoo


def test_bench_measures_the_recipe_and_estimates_its_time(tmp_path):
    medzoo("bench", "recipe=demo", "model=resnet10", "bench.steps=3", "bench.warmup_steps=1", "bench.eval_steps=1",
           "trainer.progress=false", f"hydra.run.dir={tmp_path}")
    result = json.loads((tmp_path / "bench.json").read_text())
    train, infer = result["train"], result["inference"]
    assert result["recipe"] == "demo" and result["batch_size"] > 0
    assert train["images"] == 3 * result["batch_size"] and train["images_per_s"] > 0
    assert 0.0 <= train["data_wait_fraction"] < 1.0 and infer["images_per_s"] > 0
    samples = result["samples"]
    epoch = samples["train"] / train["images_per_s"] + samples["val"] / infer["images_per_s"]
    assert result["estimate"]["epoch_s"] == pytest.approx(epoch)
    assert result["estimate"]["recipe_s"] > result["estimate"]["epoch_s"] * (result["estimate"]["epochs"] - 1)


def test_timed_loaders_continue_one_pass_and_count_the_wait():
    split = SplitArrays(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), np.zeros(10, np.int64),
                        [str(i) for i in range(10)])
    loader = make_loader(ArrayDataset(split, None), 2, shuffle=False, seed=0, num_workers=0)
    batches = iter(loader)
    first = [images.flatten().tolist() for images, _ in TimedLoader(loader, 2, batches)]
    timed = TimedLoader(loader, 10, batches)
    rest = [images.flatten().tolist() for images, _ in timed]
    assert len(TimedLoader(loader, 10)) == 5 and len(timed) == 10  # only 3 batches were left: it stops there
    assert first + rest == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # the second picks up where the first stopped
    assert timed.served == 6 and timed.wait > 0.0
