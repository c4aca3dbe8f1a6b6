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
# # Lab 2 — Look at your data before you train
#
# **Goal.** Audit the public brain-tumour MRI set (four classes: glioma, meningioma, no tumour, pituitary) before
# training anything on it, and see what the audit changes about a published model's test accuracy.
#
# **You will learn**
# - to find exact and near duplicates, and copies that leak from the training split into the test split;
# - to spot label conflicts (the same picture under two labels) and a shortcut (image size alone predicts the class);
# - why a model's accuracy on the official test split and on its de-leaked subset differ, and which one to report.
#
# **Time.** Full mode: 33 s on a 2-core CPU (2026-12-06, from an empty cache: the audit decodes every image once);
# quick mode about 25 s.
# **Requires:** the brain-tumour set as `brain-tumor-mri/` under MEDZOO_DATA (`medzoo data fetch name=brain_tumor`
# puts it there once).

# %% tags=["parameters"]
QUICK = False          # True: the audit and the evaluation on a small subset (what the tests run)
WORKDIR = "lab_runs"   # where the runs are written

# %%
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import medzoo

source = Path(os.environ.get("MEDZOO_DATA", "data")) / "brain-tumor-mri"
out = Path(WORKDIR) / "02_audit"
root = source
if QUICK:  # the same folder layout with the first 20 files of each class folder
    root = out / "subset"
    for folder in sorted(source.glob("*/*")):
        if folder.is_dir():
            target = root / folder.relative_to(source)
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.iterdir())[:20]:
                shutil.copy2(path, target / path.name)
files = sorted(p for p in root.glob("*/*/*") if p.is_file())
print(f"{len(files)} files under {root}")
print(Counter(p.parent.parent.name + "/" + p.parent.name for p in files))

# %% [markdown]
# ## 1. Image size by class
# A model sees pixels, but a resize step hides nothing if the size itself differs by class. Look first.

# %%
sizes = {}
for path in files:
    with Image.open(path) as image:
        sizes.setdefault(path.parent.name, []).append(image.size)
for label, found in sizes.items():
    common = Counter(found).most_common(2)
    square = np.mean([w == h for w, h in found])
    print(f"{label:18s} {len(found):4d} files  most common sizes {common}  square: {square:.0%}")

# %% [markdown]
# ## 2. The audit
# `medzoo.audit(root)` is `medzoo audit data=brain_tumor data.root=ROOT`. It compares every image with every other
# (exact hashes, perceptual hashes, then aligned pixels) and checks whether metadata alone predicts the class.

# %%
audit = medzoo.audit(root, f"hydra.run.dir={out / 'audit'}")
summary = audit.summary
for key in ("files", "exact_pairs", "near_pairs", "cross_split_pairs", "label_conflict_pairs", "test_files",
            "test_leaked", "test_deleaked"):
    print(f"{key:22s} {summary[key]}")
print("shortcut check:", summary["shortcut"])
print("report:", audit.report)

# %% [markdown]
# ## 3. Leaks: the same picture in Training and in Testing

# %%
def show_pairs(pairs, title, count=4):
    pairs = pairs[:count]
    if not pairs:
        print(f"no {title}")
        return
    fig, axes = plt.subplots(len(pairs), 2, figsize=(5, 2.4 * len(pairs)), squeeze=False)
    for row, pair in enumerate(pairs):
        for col, key in enumerate(("path_a", "path_b")):
            axes[row, col].imshow(Image.open(root / pair[key]).convert("L"), cmap="gray")
            axes[row, col].set_title(pair[key].replace("_tumor", ""), fontsize=7)
            axes[row, col].set_axis_off()
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()


def split_of(path):
    return path.split("/")[0]


leaks = [p for p in audit.pairs if split_of(p["path_a"]) != split_of(p["path_b"])]
show_pairs(leaks, "Training vs Testing copies")
conflicts = [p for p in audit.pairs if p["label_conflict"] == "true"]
show_pairs(conflicts, "one picture, two labels")

# %% [markdown]
# ## 4. What the leaks do to a published model's test accuracy
# The zoo's `brain_tumor_resnet18_cpu` was trained on Training. Evaluate it on the official Testing split, then on
# its de-leaked subset: the test images with no exact or near copy in Training (`clean_split.json` from the audit).

# %%
clean = audit.dir / "clean_split.json"
official = medzoo.evaluate("brain_tumor_resnet18_cpu", "split=test", f"data.root={root}",
                           f"hydra.run.dir={out / 'eval_test'}")["test"]
deleaked = medzoo.evaluate("brain_tumor_resnet18_cpu", "split=test_deleaked", f"data.root={root}",
                           f"data.clean_split={clean}", f"hydra.run.dir={out / 'eval_deleaked'}")["test_deleaked"]
for name, m in (("official Testing", official), ("de-leaked Testing", deleaked)):
    low, high = m["ci95"]["accuracy"]
    print(f"{name:18s} {m['num_samples']:4d} images  accuracy {m['accuracy']:.3f}  (95% CI {low:.3f}-{high:.3f})  "
          f"balanced {m['balanced_accuracy']:.3f}")

# %% [markdown]
# ## Questions
# 1. What share of the official test images has a copy in Training? If a model had memorised Training perfectly,
#    what accuracy would it get on those images alone?
# 2. The shortcut check fits a small model on image metadata only (size, aspect, file size). What does its accuracy,
#    against the baseline, tell you? What in every medzoo recipe keeps a network from using it?
# 3. Open one of the label-conflict pairs. Which label would you trust, and what would you do with the pair before
#    training?
# 4. Which of the two test accuracies would you put in a paper, and what sentence would you write beside it?
#
# ## What you should see (checked below)
# Full mode (the whole set, 3,264 files; measured 2026-12-06 on a 2-core CPU; the audit is deterministic, so there is
# no seed range): 371 exact and 464 near pairs, 429 of them across Training and Testing, 8 label conflicts;
# 260 of the 394 official test images leaked, 134 de-leaked. The shipped checkpoint scores 0.812 on the official
# test split and 0.493 on the de-leaked one. Quick mode (20 files per class folder) checks that the numbers hold
# together.

# %%
assert summary == json.loads((audit.dir / "summary.json").read_text())
assert summary["test_leaked"] + summary["test_deleaked"] + summary["unreadable"] >= summary["test_files"]
assert deleaked["num_samples"] == summary["test_deleaked"] == len(audit.clean_split["test_deleaked"])
assert official["num_samples"] == summary["test_files"]
assert all(split_of(p["path_a"]) in ("Training", "Testing") for p in audit.pairs)
if not QUICK:
    assert (summary["files"], summary["exact_pairs"], summary["near_pairs"]) == (3264, 371, 464), summary
    assert (summary["cross_split_pairs"], summary["label_conflict_pairs"]) == (429, 8), summary
    assert (summary["test_leaked"], summary["test_deleaked"]) == (260, 134), summary
    assert summary["shortcut"]["shortcut"] is True
    assert abs(official["accuracy"] - 0.812) < 0.001 and abs(deleaked["accuracy"] - 0.493) < 0.001
print("LAB RESULTS", json.dumps({k: summary[k] for k in ("files", "exact_pairs", "near_pairs", "cross_split_pairs",
                                                          "label_conflict_pairs", "test_leaked", "test_deleaked")}
                                | {"official": round(official["accuracy"], 4), "deleaked": round(deleaked["accuracy"], 4)}))
print("all checks passed")
