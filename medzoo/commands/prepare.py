"""`medzoo prepare inputs=DIR out=DIR`: decode every source once into a verified, memory-mapped cache."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medzoo.commands.common import run_directory
from medzoo.datasets import prepared_store
from medzoo.errors import ConfigError

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> dict:
    """Prepare `cfg.out` from `cfg.inputs` (class folders) or `cfg.labels` (CSV); return the summary."""
    run_dir = run_directory()
    if not cfg.out:
        raise ConfigError("set out=DIR: the folder the prepared cache goes to.")
    if bool(cfg.inputs) == bool(cfg.labels):
        raise ConfigError("set exactly one of inputs=DIR (holding <class>/<file or DICOM folder>) or "
                          "labels=FILE.csv (columns path,label).")
    started = time.perf_counter()
    if cfg.inputs:
        root = Path(cfg.inputs).expanduser().absolute()
        sources, ignored = prepared_store.sources_from_folder(root)
        origin = {"inputs": str(root)}
    else:
        table = Path(cfg.labels).expanduser().absolute()
        sources, ignored, root = prepared_store.sources_from_csv(table), [], table.parent
        origin = {"labels": str(table)}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    out = Path(cfg.out).expanduser().absolute()
    manifest = prepared_store.prepare(sources, out, root=root, origin=origin, verify=cfg.verify,
                                progress=cfg.progress, **data)
    counts, run = manifest["counts"], manifest["last_run"]
    summary = {"out": str(out), "classes": manifest["classes"], "samples": counts["samples"],
               "skipped": counts["skipped"], "ignored": len(ignored), "bytes": counts["bytes"],
               "read": run["read"], "kept": run["kept"], "repaired": run["repaired"],
               "seconds": round(time.perf_counter() - started, 2)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"prepared {summary['samples']} sample(s) in {len(summary['classes'])} class(es) "
          f"({summary['read']} read, {summary['kept']} kept, {summary['repaired']} repaired), "
          f"skipped {summary['skipped']}, ignored {summary['ignored']}, {summary['bytes'] / 1e9:.3f} GB, "
          f"{summary['seconds']:.1f} s -> {out}")
    if manifest["skipped"]:
        print("skipped (see manifest.json): " + ", ".join(s["key"] for s in manifest["skipped"][:10]))
    return summary
