"""`medzoo audit data=NAME data.root=DIR`: duplicates, leaks, label conflicts, sizes and shortcuts of a dataset, and
with `audit.label_issues=true` suspected label errors."""

from __future__ import annotations

import json
import logging
import time

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medzoo.audit.duplicates import find_duplicates
from medzoo.audit.features import check_checkpoints
from medzoo.audit.hashing import fingerprint_records
from medzoo.audit.label_issues import search_label_issues, write_label_issues, write_thumbnails
from medzoo.audit.manifest import clean_split
from medzoo.audit.report import AuditResult, build_report, summarize, write_pairs
from medzoo.audit.settings import AuditSettings
from medzoo.audit.shortcut import shortcut_check
from medzoo.audit.sources import cross_source_pairs, source_shortcut_check
from medzoo.commands.common import run_directory
from medzoo.errors import ConfigError
from medzoo.reporting.audit_content import audit_report

log = logging.getLogger(__name__)


def audit(cfg: DictConfig) -> dict:
    """Audit `cfg.data` and write report.md/.html, pairs.csv, clean_split.json and summary.json (and
    label_issues.csv with thumbnails under label_issues/ when audit.label_issues is true); returns the summary."""
    run_dir = run_directory()
    started = time.perf_counter()
    settings = AuditSettings.from_config(OmegaConf.to_container(cfg.audit, resolve=True))
    if settings.label_issues and settings.label_features == "checkpoint":
        check_checkpoints(settings)  # a wrong checkpoint or layer name ends here, before the data is scanned
    source = instantiate(cfg.data, _convert_="all")
    if not hasattr(source, "records"):
        raise ConfigError(f"data={source.__class__.__name__} is not an image-folder dataset; medzoo audit reads "
                          "Training/<class>/* and Testing/<class>/* folders (e.g. data=brain_tumor).")
    train, test, classes = source.records()
    prints = fingerprint_records(train + test, settings)
    duplicates = find_duplicates(prints, settings)
    manifest = clean_split(prints.facts, duplicates, classes, source.train_dir, source.test_dir)
    shortcut = shortcut_check(prints.facts, source.train_dir, source.test_dir, settings)
    several = hasattr(source, "sources")  # data=brain_tumor_multisource: keys Training/SOURCE:path
    sources = source_shortcut_check(prints.facts, prints.thumbs, classes, source.train_dir, settings) if several else None
    cross = cross_source_pairs(prints.facts, duplicates.pairs) if several else None
    records = train + test
    found = None
    if settings.label_issues:
        found = search_label_issues(records, prints, duplicates.groups, settings, source.name, classes)
        write_label_issues(run_dir / "label_issues.csv", found, [f.key for f in prints.facts], classes)
        write_thumbnails(run_dir, found, records, settings.label_thumbnails, settings.label_thumb_size)
    result = AuditResult(source.name, source.resolve(), classes, source.train_dir, source.test_dir, prints.facts,
                         duplicates, manifest, shortcut, settings, time.perf_counter() - started, found,
                         sources, cross)

    summary = summarize(result)
    write_pairs(run_dir / "pairs.csv", result)
    write_pairs(run_dir / "pairs_detail.csv", result, detail=True)
    (run_dir / "clean_split.json").write_text(json.dumps({"root": str(result.root), **manifest}, indent=2) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = build_report(result, summary)
    (run_dir / "report.md").write_text(report.markdown())
    (run_dir / "report.html").write_text(report.html())  # the plain page, kept should the full one fail
    audit_report(run_dir, cfg, result, report, records)  # report.html with thumbnails, every picture embedded
    log.info("%d files in %.1f s: %d exact + %d near pairs, %d across splits, %d label conflicts, %d unreadable; "
             "%d/%d test files leaked -> %s", summary["files"], summary["seconds"], summary["exact_pairs"],
             summary["near_pairs"], summary["cross_split_pairs"], summary["label_conflict_pairs"],
             summary["unreadable"], summary["test_leaked"], summary["test_files"], run_dir / "report.md")
    if found is not None:
        log.info("label issues: %d of %d images flagged (%s) in %.1f s -> %s", len(found.issues), len(found.checked),
                 found.skipped or found.features, found.seconds, run_dir / "label_issues.csv")
    return summary
