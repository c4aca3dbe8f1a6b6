"""A published checkpoint's model card as Markdown (docs/zoo/NAME.md), written from its embedded card."""

from __future__ import annotations

from typing import Any

from medzoo.zoo.card import ModelCard


def _figure(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    interval = metrics.get("ci95", {}).get(key)
    return f"{value:.4f}" + (f" (95 % CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def model_card(name: str, card: ModelCard, published: dict[str, Any]) -> str:
    """Markdown: what the model is, the data and its fingerprint, how it was made, metrics, limitations."""
    metrics = card.metrics
    data = card.provenance
    rows = []
    for split, label in (("test", "official test split"), ("test_deleaked", "de-leaked test subset (no near-copy "
                         "in training)"), ("val", "validation (used for checkpoint selection)")):
        if split in metrics:
            m = metrics[split]
            rows.append(f"| {label} | {m.get('num_samples')} | {_figure(m, 'accuracy')} | "
                        f"{_figure(m, 'balanced_accuracy')} | {m.get('macro_f1', 0):.4f} | "
                        f"{m['auc']:.4f} | {m.get('ece', 0):.4f} |" if m.get("auc") is not None else
                        f"| {label} | {m.get('num_samples')} | {_figure(m, 'accuracy')} | "
                        f"{_figure(m, 'balanced_accuracy')} | {m.get('macro_f1', 0):.4f} | n/a | {m.get('ece', 0):.4f} |")
    per_class = metrics.get("test", {}).get("per_class", {})
    class_rows = [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |" for c, v in per_class.items()]
    return "\n".join([
        f"# {name}",
        "",
        f"{published.get('task', '')}. Architecture `{card.arch}` ({card.model_kwargs}), "
        f"{card.in_chans} input channel(s), {card.num_classes} classes: {', '.join(card.classes)}. "
        f"Input {card.input_size} after the checkpoint's own preprocessing (stored in the file).",
        "",
        f"**Intended use:** {card.provenance.intended_use}.",
        "",
        "## How it was made",
        "",
        f"- Recipe: `{card.recipe}`; command: `{published.get('command', '')}`",
        f"- Hardware and time: {published.get('hardware', 'not recorded')}; {published.get('train_time', '')}",
        f"- Data: `{data.data_name}`, {data.num_train} train / {data.num_val} val / "
        f"{data.num_test} test images; fingerprint `{data.fingerprint}`",
        f"- Best epoch {metrics.get('best_epoch')} of {metrics.get('epochs')}, chosen on `{metrics.get('monitor')}` "
        "(the test split is never used for training, tuning or checkpoint selection).",
        f"- Weights stored as {published.get('weights_dtype', 'float32')}; every figure below was measured after "
        "that conversion, through the same code path as `medzoo eval`.",
        f"- Versions: {card.provenance.versions}",
        "",
        "## Metrics",
        "",
        "| split | images | accuracy | balanced accuracy | macro-F1 | AUC | ECE |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *(["| class (official test) | precision | recall | support |", "|---|---|---|---|", *class_rows, ""]
          if class_rows else []),
        "## Limitations",
        "",
        *[f"- {line}" for line in published.get("limitations", [])],
        "- Not validated for clinical use; scores on one public dataset do not transfer to other scanners, "
        "protocols or populations without re-evaluation.",
        "",
        *(["## Notes", "", *[f"- {line}" for line in published["notes"]], ""] if published.get("notes") else []),
    ])
