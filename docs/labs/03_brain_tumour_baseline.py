# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 3 — Train the brain-tumour baseline on a laptop
#
# **Goal.** Train a shortened version of medzoo's CPU baseline for four-class brain-tumour MRI, then read its
# confusion matrix, its calibration and its Grad-CAM maps, and find where it fails: gliomas from another hospital.
#
# **You will learn**
# - to run a published recipe with a shorter schedule, and to compare with the full recipe's card;
# - to read a confusion matrix and a reliability diagram (is a 90 % answer right 90 % of the time?);
# - to look at where a model looks (Grad-CAM), and to test it on images from another source.
#
# **Time.** Full mode: 3 min 40 s and 3 min 53 s (seeds 0 and 1) on a 2-core CPU, from an empty cache (decoding,
# the audit, 6 epochs, the final evaluation); quick mode about 40 s.
# **Requires:** `brain-tumor-mri/` and `tcga-lgg-slices/` under MEDZOO_DATA.

# %% tags=["parameters"]
QUICK = False          # True: one epoch of a tiny model on 20 images per class folder (what the tests run)
WORKDIR = "lab_runs"   # where the runs are written
SEED = 0               # the runs' seed (the figures below were measured with seeds 0 and 1)
EPOCHS = 6             # the published recipe trains 35

# %%
import json
import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image as Show
from IPython.display import display
from PIL import Image

import medzoo

data = Path(os.environ.get("MEDZOO_DATA", "data"))
out = Path(WORKDIR) / "03_baseline"
root = data / "brain-tumor-mri"
if QUICK:  # the same folder layout with the first 20 files of each class folder
    root = out / "subset"
    for folder in sorted((data / "brain-tumor-mri").glob("*/*")):
        if folder.is_dir():
            (root / folder.relative_to(folder.parents[1])).mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.iterdir())[:20]:
                shutil.copy2(path, root / folder.relative_to(folder.parents[1]) / path.name)
short = [f"trainer.max_epochs={1 if QUICK else EPOCHS}"]
if QUICK:
    short += ["model=resnet10", "model.width=0.25", "trainer.precision=fp32"]

# %% [markdown]
# ## 1. Train
# The recipe is `brain_tumor_resnet18_cpu` (128 px, ResNet-18, bf16 on the CPU where it has bf16); only the number
# of epochs changes. It audits the set once (`data.clean_split=auto`) so that it can also report the de-leaked
# test accuracy (lab 2).

# %%
run = medzoo.train("brain_tumor_resnet18_cpu", f"data.root={root}", f"seed={SEED}", "trainer.progress=false",
                   *short, f"hydra.run.dir={out / 'train'}")
published = medzoo.zoo.info("brain_tumor_resnet18_cpu")["metrics"]
for split in ("val", "test", "test_deleaked"):
    mine = run.metrics.get(split, {}).get("accuracy")
    theirs = published.get(split, {}).get("accuracy")
    print(f"{split:14s} this run {mine if mine is None else round(mine, 3)}   "
          f"published (35 epochs) {theirs if theirs is None else round(theirs, 3)}")

# %% [markdown]
# ## 2. Confusion matrix and calibration

# %%
display(Show(str(run.dir / "confusion_test.png"), width=420))
display(Show(str(run.dir / "reliability_test.png"), width=420))
test = run.metrics["test"]
print(f"expected calibration error (ECE) on Testing: {test['ece']:.3f}")
print("recall per class:", {c: round(v["recall"], 3) for c, v in test["per_class"].items()})

# %% [markdown]
# ## 3. Where does the model look?
# Grad-CAM weighs the last convolutional maps by how much they push the predicted class. One test image per class:

# %%
model = medzoo.load(run.checkpoint, device="cpu")
examples = [sorted((root / "Testing" / c).iterdir())[0] for c in model.classes]
fig, axes = plt.subplots(1, len(examples), figsize=(3 * len(examples), 3.2))
maps = []
for ax, path in zip(axes, examples):
    answer = model.predict(path)[0]
    heat = model.explain(path)
    maps.append(heat)
    image = np.asarray(Image.open(path).convert("L").resize(heat.shape[::-1]))
    ax.imshow(image, cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4)
    ax.set_title(f"{path.parent.name.replace('_tumor', '')}\n-> {answer['prediction'].replace('_tumor', '')} "
                 f"({max(answer['probabilities'].values()):.2f})", fontsize=8)
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ## 4. Gliomas from another hospital
# TCGA-LGG: post-contrast T1 slices of lower-grade gliomas from five other institutions, with the tumour visible
# (`tcga-lgg-slices/t1c/glioma_tumor`). Every one of them is a glioma. How many does the model call glioma?

# %%
other = sorted((data / "tcga-lgg-slices" / "t1c" / "glioma_tumor").glob("*.jpg"))
other = [other[i] for i in np.random.default_rng(0).choice(len(other), 10 if QUICK else 200, replace=False)]
answers = model.predict(other)
called = {c: sum(a["prediction"] == c for a in answers) for c in model.classes}
glioma_share = called["glioma_tumor"] / len(answers)
print(f"{len(answers)} other-source gliomas: " + ", ".join(f"{c}: {n}" for c, n in called.items()))
print(f"called glioma: {glioma_share:.1%}  (Testing gliomas recalled: {test['per_class']['glioma_tumor']['recall']:.1%})")
flagged = sum(bool(a["ood"]) for a in answers)
print(f"flagged as unlike the training data (ood): {flagged} of {len(answers)}")

# %% [markdown]
# ## Questions
# 1. Which two classes does the model confuse most? Look at a few of those images in `report.html`: can you see why?
# 2. In the reliability diagram, is the model over- or under-confident? What would you change so that a 0.9 answer
#    is right 9 times in 10?
# 3. In the Grad-CAM maps, does the model look at the tumour, at the skull, at the image border? What would a map on
#    the border tell you about the data?
# 4. The other-source slices are all gliomas, and the model calls most of them something else — as it does with the
#    Testing gliomas, while its validation accuracy is above 0.9. What does that say about how Testing differs from
#    Training (lab 2)? Name two things you could change in the data, not the model; the recipe
#    `brain_tumor_multisource_cpu` tries one of them.
# 5. The out-of-distribution check flags none of the other-source slices. What does such a check measure, and why
#    can an input be "like the training data" and still be read wrong?
#
# ## What you should see (checked below)
# Full mode (6 epochs; measured 2026-12-06 on a 2-core CPU, seeds 0 / 1): validation accuracy 0.924 / 0.937, official
# Testing 0.718 / 0.721 (the published 35-epoch run: 0.812), de-leaked Testing 0.381 / 0.410, ECE 0.092 / 0.106.
# Testing gliomas recalled 0.37 / 0.41. Of 200 TCGA-LGG glioma slices, 79 are called glioma with both seeds (39.5 %),
# the rest spread over the other three classes, and the out-of-distribution check flags none of them: the images
# look like training images to the model's features, yet it reads them wrong. The checks allow 0.03-0.05 around
# these. Quick mode checks that the numbers hold together.

# %%
assert run.metrics == json.loads((run.dir / "metrics.json").read_text())
assert {"val", "test", "test_deleaked"} <= set(run.metrics) and run.metrics["epochs"] == (1 if QUICK else EPOCHS)
cm = np.array(test["confusion_matrix"])
assert cm.shape == (4, 4) and abs(np.trace(cm) / cm.sum() - test["accuracy"]) < 1e-9
assert 0.0 <= test["ece"] <= 1.0
assert all(m.shape == (128, 128) and m.min() >= 0 and m.max() <= 1 for m in maps)
assert sum(called.values()) == len(answers) == (10 if QUICK else 200)
if not QUICK:
    assert 0.68 <= test["accuracy"] <= 0.76, test["accuracy"]
    assert 0.33 <= run.metrics["test_deleaked"]["accuracy"] <= 0.46, run.metrics["test_deleaked"]["accuracy"]
    assert 0.30 <= glioma_share <= 0.50, glioma_share
print("LAB RESULTS", json.dumps({"test": round(test["accuracy"], 4),
                                "test_deleaked": round(run.metrics["test_deleaked"]["accuracy"], 4),
                                "ece": round(test["ece"], 4), "other_source_glioma_called_glioma": glioma_share,
                                "ood_flagged": flagged}))
print("all checks passed")
