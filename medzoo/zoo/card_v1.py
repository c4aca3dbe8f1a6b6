"""Cards written before schema 2: a schema-1 card read into schema 2's shape, then validated like any
other."""

from __future__ import annotations

import re
from typing import Any

from medzoo.errors import DataError
from medzoo.zoo.card_schema import MAX_CLASSES, SCHEMA_VERSION


def _migrate_v1(old: dict[str, Any], source: str) -> dict[str, Any]:
    """A schema-1 card (flat keys, `_target_` steps, the whole training config) in schema 2's shape. Its
    `_target_` steps become step names here; they are then checked against the registry like any other. Its
    data config's `_target_` is never used, but one outside medzoo's datasets marks an edited card: refused."""
    config = old.get("config") if isinstance(old.get("config"), dict) else {}
    data_config = config.get("data") if isinstance(config.get("data"), dict) else {}
    target = data_config.get("_target_")
    if target is not None and not (isinstance(target, str) and re.fullmatch(r"medzoo\.datasets\.[\w.]+", target)):
        raise DataError(f"{source}: card field 'config.data._target_' names {str(target)[:80]!r}, which is not a "
                        "medzoo data source; the card was edited. Refused.")
    data = old.get("data") if isinstance(old.get("data"), dict) else {}
    prepared = data.get("prepared") if isinstance(data.get("prepared"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    layout_source = {**prepared, **{k: v for k, v in data_config.items() if v is not None}}
    spatial_dims = old.get("spatial_dims", 2)
    layout = layout_source.get("layout")
    preprocessing = old.get("preprocessing") if isinstance(old.get("preprocessing"), dict) else {}
    num_classes = old.get("num_classes")
    classes = old.get("classes")
    if classes is None and isinstance(num_classes, int) and 0 <= num_classes <= MAX_CLASSES:
        classes = [f"class_{index}" for index in range(num_classes)]
    return {
        "schema_version": SCHEMA_VERSION,
        "arch": old.get("arch"), "in_chans": old.get("in_chans"), "num_classes": num_classes,
        "classes": classes, "spatial_dims": spatial_dims, "model_kwargs": old.get("model_kwargs") or {},
        "input": {
            "size": old.get("input_size"),
            "layout": "slices" if layout == "slices" else ("volume" if spatial_dims == 3 else "image"),
            "channels": layout_source.get("channels") if isinstance(layout_source.get("channels"), int) else None,
            "depth_mode": layout_source.get("depth_mode"),
            "memory_format": "channels_last" if trainer.get("channels_last") else "contiguous",
            "reader": layout_source.get("reader") or "auto",
            "reader_options": layout_source.get("reader_kwargs") or {},
        },
        "preprocessing": {"backend": preprocessing.get("backend", "albumentations"),
                          "pre": _v1_steps(preprocessing.get("pre")), "eval": _v1_steps(preprocessing.get("eval"))},
        "precision": old.get("precision") or "fp32",
        "provenance": {
            "recipe": old.get("recipe"), "data_name": data.get("name"), "data_group": _v1_group(data, data_config),
            "data_settings": {k: v for k, v in data_config.items() if k != "_target_"},
            "fingerprint": data.get("fingerprint"), "num_train": data.get("num_train"),
            "num_val": data.get("num_val"), "num_test": data.get("num_test"), "epoch": old.get("epoch"),
            "config": config, "versions": old.get("versions") or {}, "created": old.get("created"),
            "license": old.get("license"), "intended_use": old.get("intended_use"),
            "published": old.get("published") or {},
        },
        "metrics": old.get("metrics") or {},
    }


def _v1_steps(steps: Any) -> Any:
    if not isinstance(steps, list):
        return steps if steps is not None else []
    out = []
    for step in steps:
        if isinstance(step, dict) and "_target_" in step:
            params = {k: v for k, v in step.items() if k != "_target_"}
            if isinstance(params.get("transforms"), list):
                params["transforms"] = _v1_steps(params["transforms"])
            out.append({"name": step["_target_"], "params": params})
        else:
            out.append(step)
    return out


# Schema-1 cards named their data source by class; these are the data configs that used each one.
_V1_GROUPS = {"medzoo.datasets.prepared_source.PreparedSource": "prepared"}


def _v1_group(data: dict[str, Any], data_config: dict[str, Any]) -> str | None:
    target = data_config.get("_target_")
    if target in _V1_GROUPS:
        return _V1_GROUPS[target]
    name = data.get("name") or data_config.get("name")
    return name if isinstance(name, str) else None
