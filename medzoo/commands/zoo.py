"""`medzoo zoo list` and `medzoo zoo info name=NAME`: what the zoo publishes, and each checkpoint's card;
`medzoo zoo ood ckpt=NAME_OR_PATH`: a trained checkpoint's out-of-distribution summary added to its card."""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from medzoo.close_names import unknown_name
from medzoo.download import sha256_file
from medzoo.errors import ConfigError
from medzoo.zoo import catalog, hub

if TYPE_CHECKING:
    from omegaconf import DictConfig

# torch, the engine and the model families are imported by the actions that build a model (publish, ood), so
# that `medzoo zoo list` answers without them (bench/cli_startup.py).


def headline(summary: dict) -> str:
    test = summary.get("test", {})
    parts = [f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, (int, float))]
    return "test " + ", ".join(parts) if parts else "no test metrics"


def list_checkpoints(cfg: DictConfig) -> list[str]:
    """One line per published checkpoint: name, task, headline test metric, and whether it is local."""
    lines = [f"{entry['name']:<36} {entry['task']:<44} {headline({'test': entry['test']}):<40} {entry['where']}"
             for entry in catalog.published()]
    print("\n".join(lines) if lines else "no published checkpoints")
    return lines


def info(cfg: DictConfig) -> dict:
    """The checkpoint's full card as JSON (metrics under `metrics.test`)."""
    if not cfg.name:
        raise ConfigError("medzoo zoo info needs name=NAME (see `medzoo zoo list`).")
    card = catalog.info(cfg.name)
    print(json.dumps(card, indent=2, default=str))
    return card


PUBLISHED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def publish(cfg: DictConfig) -> dict:
    """A trained checkpoint -> a published one: fp16 weights in the weights distribution, metrics measured after the
    conversion (the same code path as `medzoo eval`), a manifest entry and docs/zoo/NAME.md."""
    if not cfg.name or not cfg.ckpt:
        raise ConfigError("medzoo zoo publish needs ckpt=PATH name=NAME task='...' (see docs/zoo/README.md).")
    if not PUBLISHED_NAME.fullmatch(str(cfg.name)):
        raise ConfigError(f"name={cfg.name}: a published name is a file name too (NAME.safetensors, docs/zoo/NAME.md): "
                          "letters, digits, '_', '-' and '.', starting with a letter or digit.")
    import torch

    from medzoo.commands.common import plain
    from medzoo.engine.checkpoint_metrics import checkpoint_metrics
    from medzoo.engine.runtime import resolve_device
    from medzoo.zoo.card_doc import model_card
    from medzoo.zoo.checkpoint import save_checkpoint
    from medzoo.zoo.factory import model_from_checkpoint

    device = resolve_device(cfg.trainer.device)
    model, card = model_from_checkpoint(cfg.ckpt, "cpu")
    package = Path(str(resources.files("medzoo.zoo")))
    staged = hub.cache_dir() / "publishing" / f"{cfg.name}.safetensors"  # sized here before a folder is chosen
    save_checkpoint(staged, model, card, dtype=torch.float16)
    size = staged.stat().st_size
    if cfg.ship and size > hub.MAX_PACKAGED_BYTES:
        staged.unlink()
        raise ConfigError(f"{cfg.name}: the fp16 checkpoint is {size / 2**20:.1f} MB, over the "
                          f"{hub.MAX_PACKAGED_BYTES // 2**20} MB package limit; publish it with ship=false "
                          "urls=[...] (served from the cache or by URL).")
    if cfg.weights_dir:
        folder = Path(cfg.weights_dir)
        if cfg.ship and not _has_room(folder, staged):
            staged.unlink()
            raise ConfigError(f"{cfg.name}: {folder} would hold over the {hub.MAX_WEIGHTS_WHEEL_BYTES / 1e6:.0f} MB "
                              "of checkpoints a weights wheel may hold; publish into another weights distribution.")
    else:
        folder = shipped_folder(staged) if cfg.ship else hub.cache_dir()
    target = folder / staged.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(staged, target)
    model16, card16 = model_from_checkpoint(target, device)
    splits = ["val", "test"] + (["test_deleaked"] if card.provenance.data_settings.get("clean_split") else [])
    measured = checkpoint_metrics(model16, card16, splits, plain(cfg.data), cfg.paths.cache_dir, device,
                                  loader_overrides=plain(cfg.get("loader")), where=str(target))
    training = {k: v for k, v in card.metrics.items() if k not in ("val", "test", "test_deleaked")}
    published = {"task": cfg.task, "command": cfg.command, "hardware": cfg.hardware, "train_time": cfg.train_time,
                 "weights_dtype": "float16", "limitations": list(cfg.limitations or []),
                 "notes": list(cfg.get("notes") or [])}
    card16 = card16.with_metrics({**training, **measured}, published=published)
    save_checkpoint(target, model16, card16, dtype=torch.float16)
    entry = {"name": cfg.name, "sha256": sha256_file(target), "size": target.stat().st_size, "task": cfg.task,
             "file": target.name if cfg.ship else None, "urls": list(cfg.urls or []),
             "summary": {split: {k: measured[split][k] for k in ("accuracy", "auc") if measured[split].get(k) is not None}
                         for split in measured if split != "val"}}
    if not cfg.ship:
        entry["card"] = card16.to_dict()
    manifest_path = Path(cfg.manifest or package / hub.MANIFEST)
    entries = [e for e in json.loads(manifest_path.read_text()) if e["name"] != cfg.name] + [entry]
    manifest_path.write_text(json.dumps(sorted(entries, key=lambda e: e["name"]), indent=2) + "\n")
    docs = Path(cfg.docs_dir) / f"{cfg.name}.md"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(model_card(cfg.name, card16, published))
    print(json.dumps(entry, indent=2))
    return entry


def add_ood(cfg: DictConfig) -> dict:
    """`medzoo zoo ood ckpt=NAME_OR_PATH data.root=DIR`: fit a trained checkpoint's out-of-distribution summary on
    the data it names (no retraining) and store it in its card, the tensors unchanged. A checkpoint shipped in the
    package gets its manifest entry's sha256 and size updated."""
    if not cfg.ckpt:
        raise ConfigError("medzoo zoo ood needs ckpt=NAME_OR_PATH and the data it was trained on (data.root=DIR).")
    from medzoo.commands.common import plain
    from medzoo.engine.ood import checkpoint_summary
    from medzoo.engine.runtime import resolve_device
    from medzoo.zoo.checkpoint import replace_card
    from medzoo.zoo.factory import model_from_checkpoint

    path = hub.resolve(cfg.ckpt)
    package = Path(str(resources.files("medzoo.zoo")))
    shipped = [e.name for e in hub.manifest().values() for folder in hub.weights_folders()
               if e.file and (folder / e.file).resolve() == path.resolve()]
    if not shipped and path.resolve().is_relative_to(hub.cache_dir().resolve()):
        raise ConfigError(f"{path} is a downloaded zoo checkpoint, checked against its published sha256; add the "
                          "summary to your own copy (ckpt=PATH) or publish it again.")
    device = resolve_device(cfg.trainer.device)
    model, card = model_from_checkpoint(path, device)
    summary = checkpoint_summary(model, card, plain(cfg.data), cfg.paths.cache_dir, device, str(path))
    replace_card(path, card.with_ood(summary))
    entry = {"checkpoint": str(path), "sha256": sha256_file(path), "size": path.stat().st_size}
    if shipped:
        manifest_path = Path(cfg.manifest or package / hub.MANIFEST)
        entries = json.loads(manifest_path.read_text())
        for item in entries:
            if item["name"] == shipped[0]:
                item.update(sha256=entry["sha256"], size=entry["size"])
        manifest_path.write_text(json.dumps(entries, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return entry


def _has_room(folder: Path, checkpoint: Path) -> bool:
    """Whether `folder` stays within what one weights wheel may hold with `checkpoint` added (or replaced)."""
    held = sum(p.stat().st_size for p in folder.glob("*.safetensors") if p.name != checkpoint.name)
    return held + checkpoint.stat().st_size <= hub.MAX_WEIGHTS_WHEEL_BYTES


def shipped_folder(checkpoint: Path | None = None) -> Path:
    """Where `zoo publish ship=true` writes: the installed weights distribution that holds `checkpoint`'s name already,
    else the first (in name order) with room for it; each stays under the package index's per-file limit."""
    folders = hub.weights_folders()
    if not folders:
        raise ConfigError("zoo publish ship=true writes into the weights distribution, and none is installed: "
                          "pip install -e ./weights (in a checkout), or set weights_dir=DIR.")
    if checkpoint is None:
        return folders[0]
    holding = [folder for folder in folders if (folder / checkpoint.name).is_file()]  # published before: stay there
    for folder in holding + [folder for folder in folders if folder not in holding]:
        if _has_room(folder, checkpoint):
            for other in holding:  # an older copy left elsewhere shadows the new one or just fills its wheel
                if other != folder:
                    (other / checkpoint.name).unlink()
            return folder
    size = checkpoint.stat().st_size / 1e6
    checkpoint.unlink()
    raise ConfigError(f"{checkpoint.stem}: no installed weights distribution has room for {size:.0f} MB more (each "
                      f"holds at most {hub.MAX_WEIGHTS_WHEEL_BYTES / 1e6:.0f} MB: the package index takes 100 MB per "
                      "file). Start the next one as weights/README.md says (weights-2/, module medzoo_weights_2), "
                      "pip install -e ./weights-2, and publish again.")


ACTIONS = {"list": list_checkpoints, "info": info, "publish": publish, "ood": add_ood}


def zoo(cfg: DictConfig):
    if cfg.action not in ACTIONS:
        raise unknown_name("zoo action", cfg.action, ACTIONS)
    return ACTIONS[cfg.action](cfg)
