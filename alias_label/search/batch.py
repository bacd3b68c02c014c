"""A batch lookup in checkpointed parts, so that a long table interrupted halfway resumes there.

Each finished batch of input rows is saved beside the output, in ``<output>.partial/``, as one parquet
part named by its first row, with ``run.json`` recording what the lookup was: the queries, the
lookup's settings and the model's files. ``--resume`` continues only the same lookup, and looks up
only the batches without a part; the output is written from the parts, the same whether or not the
run was interrupted, and the parts are removed once it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from alias_label.io import atomic_path, go_on_from, sha256_of

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
