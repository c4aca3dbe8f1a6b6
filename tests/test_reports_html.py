"""report.html in every train, eval, predict and audit run directory: one self-contained file (every src/href a
data URI or an anchor, no script, no stylesheet or font from elsewhere), with the sections each kind promises,
that headless Chromium renders into a page that is not blank, without a console message or a second file read.
One small training run is shared by the whole module."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from medzoo.audit.document import Document, Picture
from medzoo.datasets.arrays import SplitArrays
from medzoo.datasets.dataset import DataSplits
from medzoo.engine import reports
from medzoo.engine.reports import write_json, write_predictions
from medzoo.reporting.audit_content import document_blocks
from medzoo.reporting.content import train_report
from medzoo.reporting.render import write_report
from tests.cli_runner import run_medzoo
from tests.helpers import make_image_folder

CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)
FAST = ["model=resnet10", "model.width=0.25", "trainer.precision=fp32", "loader.num_workers=0",
        "trainer.progress=false"]
SECTIONS = {"train": ("run", "data", "curves", "metrics", "gallery", "card"),
            "eval": ("run", "data", "metrics", "gallery", "card"),
            "predict": ("run", "predictions", "skipped", "card"),
            "audit": ("run", "findings", "pairs")}
TAG = re.compile(r"<[a-zA-Z][^>]*>")  # text is escaped, so every `<` followed by a letter opens a tag
# the URL-bearing attributes of a tag; each value must be a data URI or an anchor in the page
ATTRIBUTE = re.compile(r"""\s(src|href|srcset|poster|action|formaction|background|data)\s*=\s*["']?([^"'\s>]*)""", re.I)
EXTERNAL = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""", re.I)


def medzoo(home: Path, *args: str) -> None:
    """`medzoo *args` (in this process) with its own cache folder, offline, and no MEDZOO_DATA."""
    done = run_medzoo(*args, env={"MEDZOO_HOME": str(home), "MEDZOO_OFFLINE": "1", "MEDZOO_DATA": None})
    assert done.returncode == 0, f"medzoo {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One demo training (2 epochs), then eval and predict on its checkpoint, and the audit of a small image
    folder with a leak and a relabelled copy."""
    base = tmp_path_factory.mktemp("reports")
    home = base / "home"
    root = make_image_folder(base / "brain-tumor-mri", per_class_train=3, per_class_test=2)
    shutil.copy(root / "Training" / "glioma_tumor" / "img (0).jpg", root / "Testing" / "glioma_tumor" / "leak.jpg")
    shutil.copy(root / "Training" / "glioma_tumor" / "img (1).jpg", root / "Training" / "no_tumor" / "relabelled.jpg")
    medzoo(home, "audit", "data=brain_tumor", f"data.root={root}", "audit.workers=1", f"hydra.run.dir={base / 'audit'}")
    medzoo(home, "train", "recipe=demo", "trainer.max_epochs=2", *FAST, f"hydra.run.dir={base / 'train'}")
    ckpt = base / "train" / "checkpoints" / "best.safetensors"
    inputs = base / "inputs"
    inputs.mkdir()
    test_images = np.load(Path(reports.__file__).parents[1] / "datasets" / "builtin" / "breastmnist.npz")["test_images"]
    for index in range(5):
        Image.fromarray(test_images[index]).save(inputs / f"case {index}.png")
    (inputs / "broken.png").write_bytes(b"not a png")
    medzoo(home, "eval", f"ckpt={ckpt}", "split=test", f"hydra.run.dir={base / 'eval'}")
    medzoo(home, "predict", f"ckpt={ckpt}", f"inputs={inputs}", "on_error=skip", "explain=gradcam",
           f"hydra.run.dir={base / 'predict'}")
    return {kind: base / kind for kind in SECTIONS}


def page(runs: dict[str, Path], kind: str) -> str:
    return (runs[kind] / "report.html").read_text(encoding="utf-8")


def pictures(html: str) -> list[Image.Image]:
    found = []
    for uri in re.findall(r'<img src="([^"]*)"', html):
        assert uri.startswith("data:image/png;base64,"), uri[:80]
        found.append(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    return found


@pytest.mark.parametrize("kind", list(SECTIONS))
def test_every_run_dir_has_a_self_contained_report_with_its_sections(runs, kind):
    html = page(runs, kind)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    outside = [(name, value[:60]) for tag in TAG.findall(html) for name, value in ATTRIBUTE.findall(tag)
               if not value.startswith(("data:", "#"))]
    assert not outside, f"attributes that point outside the page: {outside}"
    for word in ("<script", "<iframe", "<object", "<embed", "<frame", "<base", "<link rel=\"stylesheet"):
        assert word not in html.lower(), word
    styles = " ".join(re.findall(r"<style>(.*?)</style>", html, re.S) + re.findall(r'style="([^"]*)"', html))
    for word in ("url(", "@import", "@font-face"):
        assert word not in styles, word
    for section in SECTIONS[kind]:
        assert f'<section id="{section}">' in html, section
    assert all(picture.size[0] > 0 for picture in pictures(html))  # every embedded picture decodes
    assert f"medzoo {kind} " in html  # the command line


def test_train_report_shows_curves_intervals_confusions_gallery_and_card(runs):
    html, run = page(runs, "train"), runs["train"]
    metrics = json.loads((run / "metrics.json").read_text())
    info = json.loads((run / "run.json").read_text())  # where and how long, for bench/benchmarks.py
    assert info["seconds"] > 0 and "cores" in info["hardware"] and info["versions"]["torch"]
    assert "trainer.max_epochs=2" in html and "recipe_name: demo" in html  # command line, resolved config
    for split in ("val", "test"):
        assert f'id="split-{split}"' in html
        low, high = metrics[split]["ci95"]["accuracy"]
        assert f"{low:.4g} – {high:.4g}" in html  # the 95 % interval beside the value
        assert f"{metrics[split]['ece']:.4g}" in html and f'alt="reliability diagram, {split}"' in html
        confusion = re.search(rf'id="split-{split}".*?<table class="confusion">(.*?)</table>', html, re.S).group(1)
        cells = [int(n) for n in re.findall(r'of the row">(\d+)</td>', confusion)]
        assert cells == [n for row in metrics[split]["confusion_matrix"] for n in row]
        with (run / f"predictions_{split}.csv").open() as handle:  # train writes them too, for the gallery
            rows = list(csv.DictReader(handle))
        assert len(rows) == metrics[split]["num_samples"]
        wrong = sum(row["correct"] == "0" for row in rows)
        gallery = html.split(f"<h3>{split}: the most confident mistakes")[1].split("Every sample is in")[0]
        assert gallery.count("<figure>") == min(8, wrong) + min(8, len(rows) - wrong)
        thumbnails = re.findall(r'<figure>\s*<img src="data:image/png;base64,', gallery)
        assert gallery.count("<figure>") == len(thumbnails)  # all with pixels
        # Grad-CAM of the first four of each row, for the class the model gave, the input beside the map
        overlays = re.findall(r'<figure class="overlay"><img src="(data:image/png;base64,[^"]+)"', gallery)
        assert len(overlays) == min(4, wrong) + min(4, len(rows) - wrong) > 0
        for uri in overlays:
            drawn = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
            assert drawn.size[0] > 1.5 * drawn.size[1]  # two panels and a colour bar side by side
    assert len(list((run / "gallery_maps").glob("*.png"))) >= 2
    epochs = html.split('<section id="curves">')[1].split("</section>")[0]
    assert epochs.count("<tr>") == 1 + 2 and 'alt="loss and accuracy per epoch"' in epochs
    card = html.split('<section id="card">')[1]
    assert "resnet10" in card and "malignant, normal_benign" in card and "research and teaching only" in card


def test_eval_and_predict_reports_show_their_split_inputs_overlays_and_skipped_files(runs):
    html = page(runs, "eval")
    assert 'id="split-test"' in html and 'id="split-val"' not in html and "test: the most confident" in html
    assert html.count('<figure class="overlay"><img src="data:image/png;base64,') >= 2  # Grad-CAM in the gallery
    assert list((runs["eval"] / "gallery_maps").glob("*.png"))
    html = page(runs, "predict")
    table = html.split("<h3>The least confident predictions")[1].split("</table>")[0]
    assert table.count("case ") >= 5 and table.count('class="overlay"') == 5  # input and Grad-CAM per row
    assert "broken.png" in html.split('<section id="skipped">')[1] and "5 input(s)" in html


def test_audit_report_shows_the_pairs_side_by_side_label_conflicts_first(runs):
    html, run = page(runs, "audit"), runs["audit"]
    with (run / "pairs.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    shown = html.split('<section id="pairs">')[1]
    assert shown.count('<div class="pair">') == min(24, len(pairs))
    assert shown.count('<img src="data:image/png;base64,') == 2 * min(24, len(pairs))
    first = shown.split('<div class="pair">')[1]
    assert "label conflict" in first and "relabelled.jpg" in first
    assert "What this means for evaluation" in html and "<table>" in html  # the audit's own findings


@pytest.mark.parametrize("kind", list(SECTIONS))
def test_reports_render_in_headless_chromium(runs, kind, tmp_path):
    if CHROMIUM is None:
        assert not os.environ.get("MEDZOO_REQUIRE_CHROMIUM"), "CI installs chromium (.ci/run); it is missing"
        pytest.skip("chromium not installed (Debian: apt-get install chromium); CI runs this check")
    report, shot = runs[kind] / "report.html", tmp_path / "shot.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", f"--screenshot={shot}",
         "--enable-logging=stderr", "--v=0", "--vmodule=file_url_loader_factory=1", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-3000:]
    # The pages hold no script: any console line is the browser complaining (a refused or broken resource).
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, "\n".join(console)
    files = re.findall(r"FileURLLoader::Start: (\S+)", result.stderr)
    assert files == [report.as_uri()], f"the page read other files: {files}"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "the screenshot is nearly blank"
    assert (pixels.min(axis=2) < 200).mean() > 0.02, "the screenshot is nearly all background"


def test_a_report_that_cannot_be_built_is_one_warning_and_no_file(tmp_path, caplog):
    def broken() -> dict:
        raise ValueError("no metrics here")

    with caplog.at_level(logging.WARNING, logger="medzoo.reporting"):
        assert write_report(tmp_path, "train.html.j2", broken) is None
        assert train_report(tmp_path, OmegaConf.create({}), splits=None) is None  # no metrics.json
    assert len(caplog.records) == 2 and "no metrics here" in caplog.records[0].getMessage()
    assert not (tmp_path / "report.html").exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_pieces_are_left_out(tmp_path):
    """No test split (evaluate_test=false), no metrics.csv, no data report, no checkpoint: the report has the
    validation split and its gallery, and nothing of the rest."""
    rng = np.random.default_rng(0)

    def split(n: int, name: str) -> SplitArrays:
        return SplitArrays(rng.integers(0, 255, (n, 1, 12, 12), dtype=np.uint8), np.arange(n) % 2,
                           [f"{name}/{i}" for i in range(n)])

    splits = DataSplits(split(8, "train"), split(6, "val"), split(6, "test"), classes=["a", "b"])
    probs = rng.dirichlet([1, 1], 6)
    write_predictions(tmp_path / "predictions_val.csv", splits.val.keys, probs, splits.val.labels, splits.classes)
    write_json(tmp_path / "metrics.json", {"best_epoch": 1, "val": {
        "accuracy": 0.5, "num_samples": 6, "confusion_matrix": [[2, 1], [2, 1]],
        "per_class": {"a": {"precision": 0.5, "recall": 0.67, "f1": 0.57, "support": 3}}}})
    assert train_report(tmp_path, OmegaConf.create({"recipe_name": "toy"}), splits) is not None
    html = (tmp_path / "report.html").read_text()
    assert 'id="split-val"' in html and 'id="split-test"' not in html and "val: the most confident" in html
    for absent in ('<section id="curves">', '<section id="card">', "Skipped files", "reliability diagram"):
        assert absent not in html, absent


def test_audit_pictures_are_embedded_from_inside_the_run_dir_only(tmp_path):
    run = tmp_path / "run"
    (run / "label_issues").mkdir(parents=True)
    Image.new("L", (8, 8), 128).save(run / "label_issues" / "001.png")
    Image.new("L", (8, 8), 128).save(tmp_path / "outside.png")
    doc = Document("t")
    doc.table(["", "n"], [[Picture("label_issues/001.png", "a"), 1], [Picture("../outside.png", "b"), 2.5]])
    rows = document_blocks(doc, run)[0]["rows"]
    assert rows[0][0]["uri"].startswith("data:image/png;base64,") and rows[1][0]["uri"] is None
    assert rows[0][1] == {"uri": None, "text": "1", "number": True}


def test_training_curves_mark_every_epoch_so_a_one_epoch_run_shows(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(reports.plt, "close", figures.append)
    reports.plot_curves([{"epoch": 1, "train/loss": 0.7, "train/accuracy": 0.6, "val/accuracy": 0.5}],
                        tmp_path / "curves.png")
    lines = [line for axis in figures[0].axes for line in axis.get_lines()]
    assert len(lines) == 3 and all(line.get_marker() not in (None, "", "None") for line in lines)
