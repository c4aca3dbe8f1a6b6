"""The out-of-distribution flag (issue 16, medzoo/engine/ood.py): each layer's score is Lee et al.'s
tied-covariance Mahalanobis distance in a PCA projection plus a residual term, the ensemble's is the largest
scaled layer score, it separates a small trained model's own kind of input from shifted inputs, the threshold
flags the stated share of validation, the card's `ood` field round-trips (and an old single-layer card scores as
it did) and a malformed one is refused in one line naming the field, and `medzoo predict` writes `ood_score` and
`ood` per row (null for a card without a summary) and one row per volume a 2D model sees slice by slice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medzoo.engine.inference import Preprocessor, volume_summaries
from medzoo.engine.ood import (
    FeatureHook,
    OODEnsemble,
    OODSummary,
    feature_layer,
    fit_ensemble,
    fit_summary,
    ood_layers,
)
from medzoo.engine.settings import TrainerSettings
from medzoo.errors import ConfigError, DataError
from medzoo.zoo import create_model
from medzoo.zoo.card import ModelCard
from medzoo.zoo.checkpoint import load_checkpoint, read_card
from tests.helpers import class_image, make_image_folder
from tests.test_untrusted_checkpoints import base_card, run_cli, write_checkpoint

SIZE = 32


def texture(image: np.ndarray) -> np.ndarray:
    """The same picture under a 2-pixel checkerboard of +-30 grey levels: a texture the model never saw."""
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    return np.clip(image.astype(np.float32) + 60 * ((yy // 2 + xx // 2) % 2) - 30, 0, 255).astype(np.uint8)


def images(count: int, seed: int, shifted: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    pictures = [class_image(int(label), rng, SIZE) for label in labels]
    return [texture(p) for p in pictures] if shifted else pictures, labels


def card_dict(ood: dict | None = None) -> dict:
    card = base_card(SIZE)
    card["model_kwargs"]["width"] = 0.25
    return ModelCard.from_dict(card).with_ood(ood).to_dict()


@pytest.fixture(scope="module")
def trained():
    """A quarter-width ResNet-10 trained for 20 steps on the synthetic classes, its summary fitted on its training
    images and thresholded on 200 validation images; and a function giving features of images."""
    preprocess = Preprocessor(ModelCard.from_dict(card_dict()))

    def batch(pictures):
        return torch.stack([preprocess.image(p[..., None]) for p in pictures])

    torch.manual_seed(0)
    model = create_model("resnet10", in_chans=1, num_classes=4, stem="small", width=0.25)
    train, labels = images(256, 0)
    inputs, targets = batch(train), torch.as_tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small: one thread is faster, and far faster on a busy 2-core machine
    try:
        for _ in range(20):
            chosen = torch.randint(0, len(targets), (32,))
            loss = torch.nn.functional.cross_entropy(model(inputs[chosen]), targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    hooks = [FeatureHook(model, layer) for layer in ood_layers(model)]

    @torch.no_grad()
    def features(pictures):
        for hook in hooks:
            hook.__enter__()
        try:
            model(batch(pictures))
        finally:
            for hook in hooks:
                hook.__exit__()
        return {hook.layer: hook.take() for hook in hooks}

    summary = fit_ensemble(features(train), labels, 4).calibrated(features(images(200, 1)[0]))
    return model, summary, features


def test_the_classifier_layer_is_found_by_name_or_as_the_last_linear_layer():
    resnet = create_model("resnet10", in_chans=1, num_classes=3, stem="small", width=0.25)
    assert feature_layer(resnet) == "fc" and ood_layers(resnet) == ("layer1", "layer2", "layer3", "fc")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert feature_layer(plain) == "3"


def test_the_score_is_the_nearest_class_mahalanobis_distance_plus_the_residual_term():
    rng = np.random.default_rng(0)
    dim, k, count = 12, 5, 4000
    mixing = rng.normal(size=(dim, dim)) * np.linspace(3, 0.2, dim)
    labels = rng.integers(0, 3, count)
    means = rng.normal(0, 2, (3, dim))
    features = means[labels] + rng.normal(size=(count, dim)) @ mixing.T
    summary = fit_summary(features, labels, 3, "fc", dims=k)
    probe = means[rng.integers(0, 3, 50)] + rng.normal(size=(50, dim)) @ mixing.T * 1.5
    # written out independently: PCA by eigh of the covariance, class means and tied covariance inside it
    center = features.mean(0)
    values, vectors = np.linalg.eigh(np.cov(features - center, rowvar=False, bias=True))
    top = vectors[:, ::-1][:, :k].T
    z, zp = (features - center) @ top.T, (probe - center) @ top.T
    class_means = np.stack([z[labels == c].mean(0) for c in range(3)])
    within = z - class_means[labels]
    precision = np.linalg.inv(within.T @ within / count)
    mahalanobis = np.min([np.einsum("ni,ij,nj->n", zp - m, precision, zp - m) for m in class_means], axis=0)
    residual = (((probe - center) - zp @ top) ** 2).sum(1) / (values[::-1][k:].sum() / (dim - k))
    np.testing.assert_allclose(summary.score(probe), mahalanobis + residual, rtol=1e-3)
    assert summary.projection.shape == (k, dim) and summary.class_means.shape == (3, k)


def test_the_score_separates_a_trained_models_inputs_from_shifted_ones(trained):
    _, summary, features = trained
    same = summary.score(features(images(200, 2)[0]))
    shifted = summary.score(features(images(200, 2, shifted=True)[0]))
    auroc = (shifted[:, None] > same[None, :]).mean()
    assert auroc > 0.99, auroc  # measured 1.0; a score of random features or with the sign flipped fails
    assert summary.flags(same).mean() <= 0.05 and summary.flags(shifted).mean() >= 0.95, (
        summary.flags(same).mean(), summary.flags(shifted).mean())


def test_the_threshold_flags_the_stated_share_of_validation():
    rng = np.random.default_rng(1)
    means = rng.normal(0, 3, (4, 40))

    def draw(count):
        labels = rng.integers(0, 4, count)
        return means[labels] + rng.normal(size=(count, 40)), labels

    summary = fit_summary(*draw(3000), 4, "fc", dims=16)
    validation = draw(2000)[0]
    for percentile, share in ((99.0, 0.01), (90.0, 0.10)):
        calibrated = summary.calibrated(validation, percentile)
        assert calibrated.percentile == percentile and calibrated.num_val == 2000
        assert calibrated.flags(calibrated.score(validation)).mean() == pytest.approx(share, abs=0.001)
        fresh = calibrated.flags(calibrated.score(draw(4000)[0])).mean()
        assert fresh == pytest.approx(share, abs=0.5 * share), (percentile, fresh)


def test_the_ensemble_scores_the_most_unusual_layer_and_flags_the_stated_share_of_validation():
    rng = np.random.default_rng(4)
    means = {"a": rng.normal(0, 3, (4, 10)), "b": rng.normal(0, 3, (4, 30))}

    def draw(count, shift_b=0.0):
        labels = rng.integers(0, 4, count)
        return {"a": means["a"][labels] + rng.normal(size=(count, 10)),
                "b": means["b"][labels] + rng.normal(size=(count, 30)) + shift_b}, labels

    features, labels = draw(3000)
    ensemble = fit_ensemble(features, labels, 4, dims=8)
    validation = draw(2000)[0]
    calibrated = ensemble.calibrated(validation)
    assert calibrated.layer_names == ("a", "b") and calibrated.num_fit == 3000 and calibrated.num_val == 2000
    for layer, scale in zip(calibrated.layers, calibrated.scales, strict=True):  # each scale: its layer's 99th pct
        assert scale == pytest.approx(np.percentile(layer.score(validation[layer.feature_layer]), 99), rel=1e-5)
    probe = draw(50)[0]
    expected = np.max([layer.score(probe[layer.feature_layer]) / scale
                       for layer, scale in zip(calibrated.layers, calibrated.scales)], axis=0)
    np.testing.assert_allclose(calibrated.score(probe), expected)
    assert calibrated.flags(calibrated.score(validation)).mean() == pytest.approx(0.01, abs=0.001)
    fresh = calibrated.flags(calibrated.score(draw(4000)[0])).mean()
    assert fresh == pytest.approx(0.01, abs=0.006), fresh
    # a shift in one layer alone is caught: the other layer's ordinary score does not dilute it
    assert calibrated.flags(calibrated.score(draw(500, shift_b=3.0)[0])).mean() > 0.95


RESNET18_LAYERS = {"layer1": 64, "layer2": 128, "layer3": 256, "fc": 512}  # feature sizes of ResNet-18's layers


def test_the_card_round_trips_the_field_and_stays_small(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 600)

    def draw(count):
        return {layer: np.abs(rng.normal(size=(count, dim))) for layer, dim in RESNET18_LAYERS.items()}

    summary = fit_ensemble(draw(600), labels, 4).calibrated(draw(100))
    card = ModelCard.from_dict(card_dict(summary.to_card()))
    again = ModelCard.from_json(card.to_json(), "round trip")
    assert again.ood == card.ood and [layer["k"] for layer in again.ood["layers"]] == [64] * 4
    assert [layer["feature_dim"] for layer in again.ood["layers"]] == list(RESNET18_LAYERS.values())
    assert 0 < len(json.dumps(card.ood)) < 1_100_000  # measured 0.87 MB, in a 22 MB checkpoint
    probe = draw(20)
    read = OODEnsemble.from_card(again.ood)
    np.testing.assert_array_equal(read.score(probe), summary.score(probe))
    assert read.threshold == summary.threshold and read.scales == summary.scales
    state = create_model("resnet10", in_chans=1, num_classes=4, stem="small", width=0.25).state_dict()
    path = write_checkpoint(tmp_path / "with.safetensors", card.to_dict(), state)
    assert read_card(path).ood == card.ood
    old = write_checkpoint(tmp_path / "old.safetensors", card_dict(), state)
    assert read_card(old).ood is None and "ood" not in base_card()


def legacy_card(summary: OODSummary) -> dict:
    """The single-layer `ood` field medzoo wrote before the ensemble (method mahalanobis_pca)."""
    return {"method": "mahalanobis_pca", "percentile": summary.percentile, "threshold": summary.threshold,
            **summary.layer_card(), "num_fit": summary.num_fit, "num_val": summary.num_val}


def test_an_old_single_layer_card_scores_and_flags_as_it_did():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 400)
    summary = fit_summary(rng.normal(size=(400, 24)) + labels[:, None], labels, 4, "fc", dims=8)
    summary = summary.calibrated(rng.normal(size=(100, 24)))
    card = ModelCard.from_dict(card_dict(legacy_card(summary)), "old.safetensors")
    read = OODEnsemble.from_card(card.ood)
    probe = rng.normal(size=(200, 24)) * 2
    np.testing.assert_array_equal(read.score({"fc": probe}), summary.score(probe))
    np.testing.assert_array_equal(read.flags(read.score({"fc": probe})), summary.flags(summary.score(probe)))
    assert read.method == "mahalanobis_pca" and read.scales == (1.0,)


def small_ood(legacy: bool = True) -> dict:
    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(80, 16)), rng.integers(0, 4, 80)
    if legacy:
        return legacy_card(fit_summary(features, labels, 4, "fc", dims=6).calibrated(rng.normal(size=(20, 16))))
    ensemble = fit_ensemble({"layer3": features[:, :12], "fc": features}, labels, 4, dims=6)
    return ensemble.calibrated({"layer3": rng.normal(size=(20, 12)), "fc": rng.normal(size=(20, 16))}).to_card()


def _set(key, value):
    return lambda ood: ood.__setitem__(key, value)


MALFORMED = {
    "class_means_rows": ("ood.class_means", lambda ood: ood["class_means"].pop()),
    "projection_row_length": ("ood.projection[2]", lambda ood: ood["projection"][2].append(0.0)),
    "center_length": ("ood.center", lambda ood: ood["center"].pop()),
    "k_above_feature_dim": ("ood.k", _set("k", 17)),
    "k_inconsistent": ("ood.class_means[0]", _set("k", 5)),
    "nan_threshold": ("ood.threshold", _set("threshold", float("nan"))),
    "nan_in_means": ("ood.class_means", lambda ood: ood["class_means"][1].__setitem__(0, float("nan"))),
    "infinite_in_projection": ("ood.projection", lambda ood: ood["projection"][0].__setitem__(0, float("inf"))),
    "oversize_k": ("ood.k", _set("k", 10**6)),
    "oversize_feature_dim": ("ood.feature_dim", _set("feature_dim", 10**9)),
    "oversize_values": ("ood.k", lambda ood: ood.update(k=1024, feature_dim=65_536)),
    "oversize_rows": ("ood.projection", lambda ood: ood.__setitem__("projection", [[0.0] * 16] * 20_000)),
    "k_as_text": ("ood.k", _set("k", "6")),
    "threshold_as_boolean": ("ood.threshold", _set("threshold", True)),
    "means_as_object": ("ood.class_means", _set("class_means", {"a": 1})),
    "text_in_cholesky": ("ood.precision_cholesky[0]", lambda ood: ood["precision_cholesky"][0].__setitem__(0, "1")),
    "boolean_in_center": ("ood.center", lambda ood: ood["center"].__setitem__(0, True)),
    "ood_as_list": ("ood", lambda ood: None),
    "unknown_key": ("ood.command", _set("command", "rm -rf /")),
    "missing_threshold": ("ood.threshold", lambda ood: ood.pop("threshold")),
    "unknown_method": ("ood.method", _set("method", "energy")),
    "layer_with_separator": ("ood.feature_layer", _set("feature_layer", "../fc")),
    "percentile_zero": ("ood.percentile", _set("percentile", 0)),
    "negative_residual_variance": ("ood.residual_variance", _set("residual_variance", -1.0)),
    "projection_not_orthonormal": ("ood.projection", lambda ood: ood["projection"][0].__setitem__(0, 5.0)),
    "cholesky_not_triangular": ("ood.precision_cholesky", lambda ood: ood["precision_cholesky"][0].__setitem__(3, 1.0)),
    "cholesky_zero_diagonal": ("ood.precision_cholesky", lambda ood: ood["precision_cholesky"][2].__setitem__(2, 0.0)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_ood_field_is_refused_in_one_line_naming_the_field(name):
    field, damage = MALFORMED[name]
    card = card_dict(small_ood())
    if name == "ood_as_list":
        card["ood"] = [1, 2]
    else:
        damage(card["ood"])
    with pytest.raises(DataError) as caught:
        ModelCard.from_dict(card, "crafted.safetensors")
    message = str(caught.value)  # "card field 'ood.k' ...", or for a key it does not know "unknown card field(s) ood.x"
    assert "\n" not in message and message.startswith("crafted.safetensors: ") and field in message, message
    ModelCard.from_dict(card_dict(small_ood()), "intact")  # the intact field passes the same check


TOP_LEVEL = {"nan_threshold", "missing_threshold", "unknown_method", "percentile_zero", "ood_as_list", "unknown_key"}
ENSEMBLE_ONLY = {
    "no_layers": ("ood.layers", _set("layers", [])),
    "too_many_layers": ("ood.layers", lambda ood: ood.__setitem__("layers", ood["layers"] * 9)),
    "layer_named_twice": ("ood.layers", lambda ood: ood["layers"][0].__setitem__("feature_layer", "fc")),
    "layers_as_object": ("ood.layers", _set("layers", {"fc": 1})),
    "missing_scale": ("ood.layers[0].scale", lambda ood: ood["layers"][0].pop("scale")),
    "zero_scale": ("ood.layers[0].scale", lambda ood: ood["layers"][0].__setitem__("scale", 0.0)),
    "top_level_layer_field": ("ood.k", _set("k", 6)),
    "oversize_total": ("ood.layers", lambda ood: ood["layers"].extend(
        dict(ood["layers"][1], feature_layer=f"l{i}", k=1024, feature_dim=4096) for i in range(14))),
}


@pytest.mark.parametrize("name", sorted(set(MALFORMED) - {"ood_as_list"} | set(ENSEMBLE_ONLY)))
def test_a_malformed_ensemble_field_is_refused_in_one_line_naming_the_field(name):
    """The same damage inside an ensemble's first layer (or at its top), and the ensemble's own fields."""
    card = card_dict(small_ood(legacy=False))
    if name in ENSEMBLE_ONLY:
        field, damage = ENSEMBLE_ONLY[name]
        damage(card["ood"])
    else:
        field, damage = MALFORMED[name]
        if name in TOP_LEVEL:
            damage(card["ood"])
        else:
            damage(card["ood"]["layers"][0])
            field = field.replace("ood.", "ood.layers[0].", 1)
    with pytest.raises(DataError) as caught:
        ModelCard.from_dict(card, "crafted.safetensors")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("crafted.safetensors: ") and field in message, message
    ModelCard.from_dict(card_dict(small_ood(legacy=False)), "intact")


@pytest.mark.parametrize("field", ["ood.layers[1].class_means", "ood"])
def test_a_malformed_ood_field_stops_predict_with_one_line(field, tmp_path, capsys):
    card = card_dict(small_ood(legacy=False))
    if field != "ood":  # refused by the card's schema
        card["ood"]["layers"][1]["class_means"].pop()
    else:  # a valid name, but no layer of the model: refused when predict hooks it
        card["ood"]["layers"][0]["feature_layer"] = "layer9"
    state = create_model("resnet10", in_chans=1, num_classes=4, stem="small", width=0.25).state_dict()
    ckpt = write_checkpoint(tmp_path / "damaged.safetensors", card, state)
    Image.fromarray(images(1, 0)[0][0]).save(tmp_path / "one.png")
    code, err = run_cli(["predict", f"ckpt={ckpt}", f"inputs={tmp_path / 'one.png'}",
                         f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "damaged.safetensors" in lines[0] and f"'{field}'" in lines[0], err
    assert not (tmp_path / "run" / "predictions.csv").exists()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Four images of the training kind, four shifted ones, and one volume of each kind (six slices each)."""
    folder = tmp_path_factory.mktemp("inputs")
    for kind, shifted in (("same", False), ("shifted", True)):
        pictures = images(10, 5, shifted)[0]
        for index, picture in enumerate(pictures[:4]):
            Image.fromarray(picture).save(folder / f"{kind}_{index}.png")
        nib.save(nib.Nifti1Image(np.stack(pictures[4:], axis=-1).astype(np.int16), np.eye(4)),
                 folder / f"{kind}_volume.nii.gz")
    return folder


def predict(ckpt: Path, inputs: Path, run: Path, capsys) -> tuple[list[dict], dict]:
    code, err = run_cli(["predict", f"ckpt={ckpt}", f"inputs={inputs}", f"hydra.run.dir={run}"], capsys)
    assert code == 0, err[-2000:]
    with open(run / "predictions.csv", newline="") as handle:
        table = list(csv.reader(handle))
    return table, json.loads((run / "predictions.json").read_text())


def test_predict_writes_ood_score_and_ood_per_row_and_per_volume(trained, inputs, tmp_path, capsys):
    model, summary, _ = trained
    ckpt = write_checkpoint(tmp_path / "ood.safetensors", card_dict(summary.to_card()), model.state_dict())
    table, result = predict(ckpt, inputs, tmp_path / "run", capsys)
    header, rows = table[0], table[1:]
    assert header == ["path", "prediction", "glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor",
                      "ood_score", "ood"]
    flagged = {Path(row[0]).name: row[-1] for row in rows}
    assert len(rows) == 8 + 12 and all(float(row[-2]) > 0 for row in rows)
    assert [flagged[f"same_{i}.png"] for i in range(4)] == ["false"] * 4
    assert [flagged[f"shifted_{i}.png"] for i in range(4)] == ["true"] * 4
    for row in result["predictions"]:
        assert isinstance(row["ood_score"], float) and isinstance(row["ood"], bool)
        assert row["ood"] == (row["ood_score"] > summary.threshold)
    volumes = {Path(v["path"]).name: v for v in result["volumes"]}
    assert volumes["same_volume.nii.gz"]["slices"] == 6 and volumes["same_volume.nii.gz"]["ood"] is False
    assert volumes["shifted_volume.nii.gz"]["ood"] is True and volumes["shifted_volume.nii.gz"]["ood_share"] > 0.5
    with open(tmp_path / "run" / "volumes.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert {Path(v["path"]).name: v["ood"] for v in listed} == {"same_volume.nii.gz": "false",
                                                                "shifted_volume.nii.gz": "true"}
    report = (tmp_path / "run" / "report.html").read_text()  # the card's summary by its shapes, not 8,000 numbers
    assert "[64 x 128 numbers]" in report and "out-of-distribution" in report


def test_an_old_card_without_a_summary_predicts_with_nulls_and_says_so(trained, inputs, tmp_path, capsys):
    model, _, _ = trained
    ckpt = write_checkpoint(tmp_path / "old.safetensors", card_dict(), model.state_dict())
    table, result = predict(ckpt, inputs, tmp_path / "run", capsys)
    assert table[0][-2:] == ["ood_score", "ood"] and all(row[-2:] == ["", ""] for row in table[1:])
    assert all(row["ood_score"] is None and row["ood"] is None for row in result["predictions"])
    assert all(v["ood"] is None and v["ood_share"] is None for v in result["volumes"]) and len(result["volumes"]) == 2
    logged = "".join(path.read_text() for path in (tmp_path / "run").glob("*.log"))
    assert logged.count("carries no OOD summary") == 1, logged


def test_volume_summaries_take_the_majority_and_flag_when_most_slices_are_flagged():
    def row(path, prediction, ood):
        return {"path": path, "prediction": prediction, "ood": ood}

    rows = [row("a.png", "x", True), row("v.nii#slice000", "x", True), row("v.nii#slice001", "y", False),
            row("v.nii#slice002", "y", True), row("w#slice000", "x", False), row("w#slice001", "x", True)]
    summaries = {s["path"]: s for s in volume_summaries(rows)}
    assert set(summaries) == {"v.nii", "w"}
    assert summaries["v.nii"]["prediction"] == "y" and summaries["v.nii"]["ood"] is True
    assert summaries["v.nii"]["ood_share"] == pytest.approx(2 / 3)
    assert summaries["w"]["ood"] is False  # half the slices is not most of them


def test_zoo_ood_adds_the_summary_to_a_checkpoint_without_touching_its_tensors(trained, tmp_path, capsys):
    model, _, _ = trained
    data = make_image_folder(tmp_path / "brain-tumor-mri", per_class_train=6, per_class_test=2, size=SIZE)
    ckpt = write_checkpoint(tmp_path / "plain.safetensors", card_dict(), model.state_dict())
    before, card = load_checkpoint(ckpt)
    code, err = run_cli(["zoo", "ood", f"ckpt={ckpt}", f"data.root={data}", "data.cache=memory"], capsys)
    assert code == 0, err[-2000:]
    after, updated = load_checkpoint(ckpt)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert card.ood is None and updated.ood is not None and updated.ood["method"] == "mahalanobis_layers"
    assert [layer["feature_layer"] for layer in updated.ood["layers"]] == ["layer1", "layer2", "layer3", "fc"]
    assert updated.ood["num_fit"] + updated.ood["num_val"] == 4 * 6  # the training folder: fit + validation split
    assert {**updated.to_dict(), "ood": None} == card.to_dict()


def test_trainer_ood_is_a_checked_setting_that_defaults_to_true():
    assert TrainerSettings.from_config({}).ood is True and TrainerSettings.from_config({"ood": False}).ood is False
    with pytest.raises(ConfigError, match=r"trainer\.ood='no': true or false"):
        TrainerSettings.from_config({"ood": "no"})
