"""A batch lookup in checkpointed parts, so that a long table interrupted halfway resumes there.

Each finished batch of input rows is saved beside the output, in ``<output>.partial/``, as one parquet
part named by its first row, with ``run.json`` recording what the lookup was: the queries, the
lookup's settings and the model's files. ``--resume`` continues only the same lookup, and looks up
only the batches without a part; the output is written from the parts, the same whether or not the
run was interrupted, and the parts are removed once it is.

A batch whose rows carry the label each query should find is also scored against it
(``against_gold``), so that a user can check the abstain setting on aliases of their own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.io import atomic_path, go_on_from, sha256_of
from alias_label.metrics import counts_as_right
from alias_label.search.abstain import precision_interval

log = logging.getLogger(__name__)

PART_GLOB = "rows-*.parquet"


def partial_dir(output: Path) -> Path:
    """Where the parts of a batch lookup writing ``output`` are kept until it is written."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def folder_signature(folder: Path) -> str:
    """Every file of a model folder by path, size and modification time: a refitted reranker or
    calibration, or a retrained model, changes it."""
    files = sorted(path for path in Path(folder).rglob("*") if path.is_file())
    return sha256_of(*(f"{path.relative_to(folder)}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                       for path in files))


def lookup_identity(queries: list[str], settings: dict, model_dir: Path | None, data_fingerprint: str) -> dict:
    """What makes two batch lookups the same one: the queries in order, the settings that shape
    their rows (k, direction, mode, batch size, ...), and the model's folder and files."""
    return {"queries": sha256_of(*queries), "rows": len(queries), **settings,
            "model": str(model_dir), "model_files": folder_signature(model_dir) if model_dir else None,
            "data_fingerprint": data_fingerprint}


def prepare_parts(folder: Path, resume: bool, identity: dict, is_main: bool) -> None:
    """Keep the parts of an interrupted lookup like this one (``identity``: its queries, flags and
    model), so that a rerun goes on from them; else clear them (``go_on_from``). With --resume every
    process checks them, so that none waits for another that refused them; else the main process
    decides, and the others wait for it at the barrier after this."""
    if resume or is_main:
        go_on_from(folder, any(folder.glob(PART_GLOB)), identity, resume, is_main, "parts", "lookup",
                   "part of a lookup", log)


def done_starts(folder: Path) -> set[int]:
    """The first input rows of the batches already looked up."""
    return {int(path.stem.split("-")[1]) for path in folder.glob(PART_GLOB)}


def save_part(folder: Path, start: int, block: pd.DataFrame) -> None:
    """One finished batch, written whole or not at all."""
    with atomic_path(folder / f"rows-{start:09d}.parquet") as tmp:
        block.to_parquet(tmp, index=False)


def read_parts(folder: Path) -> pd.DataFrame:
    """Every part, in input order."""
    return pd.concat([pd.read_parquet(path) for path in sorted(folder.glob(PART_GLOB))], ignore_index=True)


def against_gold(table: pd.DataFrame, gold: list[str]) -> tuple[pd.DataFrame, dict]:
    """A batch's rows (``input_row``, ``rank``, ``label``, ``confident``, ...) with ``correct``: whether
    the candidate counts as its input row's ``gold`` label, by the evaluator's rule (equal up to case
    and accents); empty where the row has no gold label or no query. And the figures over the input
    rows with both: top-1, the gold label anywhere in the rows found, and how many top answers are
    flagged confident, with the share of those that are right and its 95% Wilson interval."""
    wanted = pd.Series(gold, dtype="string").fillna("").str.strip().to_numpy()[table["input_row"].to_numpy()]
    scored = (wanted != "") & table["rank"].notna().to_numpy()
    correct = pd.array(np.full(len(table), pd.NA), dtype="boolean")
    correct[scored] = counts_as_right(table.loc[scored, "label"], wanted[scored])
    table = table.assign(correct=correct)
    top = table[scored & (table["rank"] == 1).to_numpy()]
    kept = top["confident"].to_numpy(dtype=bool)
    right = top["correct"].to_numpy(dtype=bool)
    figures = {"rows": len(top), "left_out": len(gold) - len(top),
               "top1": float(right.mean()) if len(top) else None,
               "found": float(table[scored].groupby("input_row")["correct"].any().mean()) if len(top) else None,
               "confident": float(kept.mean()) if len(top) else None,
               "confident_right": float(right[kept].mean()) if kept.any() else None,
               "interval95": precision_interval(int(right[kept].sum()), int(kept.sum()))}
    return table, figures
