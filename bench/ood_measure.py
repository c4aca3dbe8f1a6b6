"""How often a checkpoint's out-of-distribution flag (issue 16, medzoo/engine/ood.py) fires, through `medzoo predict`.

In distribution: the brain-tumour Testing images (goal: at most 10 % flagged). Unrelated inputs (goal: at least
95 % flagged): the BreastMNIST and PneumoniaMNIST test images (written out as PNG files), the slices of the DICOM
series volumes/dicom/SAG-anon-128 (a 3-year-old's sagittal brain MRI) and of the NIfTI volumes
volumes/nifti/stroke/*.nii.gz (a 2D model sees a volume slice by slice; volumes.csv adds one row per volume).

    MEDZOO_DATA=PATH/TO/data nice -n 15 python bench/ood_measure.py --ckpt brain_tumor_resnet18_cpu --out /tmp/ood

Prints a Markdown table and writes OUT/ood_measure.json. Beside the flag it counts the predictions less confident
than the 5th percentile of the Testing images' (top class probability), and for each volume how many slices each
class was given and how many of those the flag and that confidence floor mark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MEDZOO = Path(sys.executable).with_name("medzoo")
IN_DISTRIBUTION_GOAL = 0.10  # at most this share of in-distribution images flagged
UNRELATED_GOAL = 0.95  # at least this share of unrelated images flagged


def medmnist_pngs(npz: Path, out: Path) -> Path:
    """The test images of a MedMNIST .npz file as PNG files in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as data:
        for index, image in enumerate(data["test_images"]):
            Image.fromarray(image).save(out / f"{index:05d}.png")
    return out


def predict(ckpt: str, inputs: Path, run: Path) -> dict:
    """`medzoo predict` on `inputs`; its predictions.json."""
    subprocess.run([str(MEDZOO), "predict", f"ckpt={ckpt}", f"inputs={inputs}", "batch_size=64",
                    f"hydra.run.dir={run}"], check=True, capture_output=True, text=True)
    return json.loads((run / "predictions.json").read_text())


def summary(name: str, result: dict, goal: str, seconds: float) -> dict:
    rows, volumes = result["predictions"], result.get("volumes") or []
    flags = [row["ood"] for row in rows]
    if None in flags:
        raise SystemExit(f"{name}: the checkpoint carries no OOD summary (add one: medzoo zoo ood ckpt=...)")
    scores = np.array([row["ood_score"] for row in rows])
    confidence = np.array([max(row["probabilities"].values()) for row in rows])
    share = sum(flags) / len(flags)
    met = share <= IN_DISTRIBUTION_GOAL if goal == "in" else share >= UNRELATED_GOAL
    return {"set": name, "inputs": len(rows), "flagged": int(sum(flags)), "share": share,
            "goal": f"<= {IN_DISTRIBUTION_GOAL:.0%}" if goal == "in" else f">= {UNRELATED_GOAL:.0%}", "met": bool(met),
            "median_score": float(np.median(scores)), "confidence": confidence.tolist(),
            "predictions": [row["prediction"] for row in rows], "flags": flags, "volumes": [
                {"path": v["path"], "slices": v["slices"], "ood_share": v["ood_share"], "ood": v["ood"],
                 "prediction": v["prediction"]} for v in volumes], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="brain_tumor_resnet18_cpu", help="zoo name or .safetensors path")
    parser.add_argument("--data", type=Path, default=os.environ.get("MEDZOO_DATA"), required="MEDZOO_DATA" not in os.environ,
                        help="the data folder holding brain-tumor-mri/, medmnist/ and volumes/ (default: $MEDZOO_DATA)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ood_measure"))
    args = parser.parse_args()
    data, out = args.data.resolve(), args.out.resolve()
    sets = [("brain-tumour Testing", data / "brain-tumor-mri" / "Testing", "in"),
            ("BreastMNIST test", medmnist_pngs(data / "medmnist" / "breastmnist.npz", out / "breastmnist"), "out"),
            ("PneumoniaMNIST test", medmnist_pngs(data / "medmnist" / "pneumoniamnist.npz", out / "pneumoniamnist"),
             "out"),
            ("DICOM SAG-anon-128 slices", data / "volumes" / "dicom" / "SAG-anon-128", "out"),
            ("NIfTI stroke T1/T2/FLAIR slices", data / "volumes" / "nifti" / "stroke", "out")]
    results = []
    for name, inputs, goal in sets:
        start = time.perf_counter()
        result = predict(args.ckpt, inputs, out / "runs" / name.split()[0].lower())
        results.append(summary(name, result, goal, time.perf_counter() - start))
    print(f"checkpoint {args.ckpt}; torch {torch.__version__}; {platform.processor() or platform.machine()}\n")
    floor = float(np.percentile(results[0]["confidence"], 5))  # results[0]: the in-distribution Testing images
    print("| inputs | images | flagged | share | goal | median score | top probability < Testing's 5th pct |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for r in results:
        low = float(np.mean(np.array(r["confidence"]) < floor))
        print(f"| {r['set']} | {r['inputs']} | {r['flagged']} | {r['share']:.1%} | {r['goal']} "
              f"({'met' if r['met'] else 'missed'}) | {r['median_score']:.3g} | {low:.1%} |")
    print(f"\nconfidence floor (5th percentile of Testing's top probability): {floor:.3f}")
    for r in results:
        for v in r["volumes"]:
            print(f"volume {Path(v['path']).name}: {v['slices']} slices, {v['ood_share']:.1%} flagged, "
                  f"ood={v['ood']}, majority {v['prediction']}")
        if r["volumes"]:
            for name in sorted(set(r["predictions"])):
                chosen = [i for i, p in enumerate(r["predictions"]) if p == name]
                print(f"  {r['set']}: called {name}: {len(chosen)}, flagged {sum(r['flags'][i] for i in chosen)}, "
                      f"below the floor {sum(r['confidence'][i] < floor for i in chosen)}")
    (out / "ood_measure.json").write_text(json.dumps({"checkpoint": args.ckpt, "torch": torch.__version__,
                                                       "results": results}, indent=2))


if __name__ == "__main__":
    main()
