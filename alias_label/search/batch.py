"""A batch lookup in checkpointed parts, so that a long table interrupted halfway resumes there.

Each finished batch of input rows is saved beside the output, in ``<output>.partial/``, as one parquet
part named by its first row, with ``run.json`` recording what the lookup was: the queries, the
lookup's settings and the model's files. ``--resume`` continues only the same lookup, and looks up
only the batches without a part; the output is written from the parts, the same whether or not the
run was interrupted, and the parts are removed once it is.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from alias_label.errors import UserError
from alias_label.io import atomic_path, read_json, sha256_of, write_json

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
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
    model), so that a rerun goes on from them; else clear them. ``resume`` (--resume) insists: parts
    of another lookup are then an error, in every process, where a plain run starts over. Only the
    main process clears and writes."""
    if not (resume or is_main):
        return  # the main process decides; the others wait for it at the barrier after this
    run_file = folder / RUN_FILE
    if any(folder.glob(PART_GLOB)):
        saved = read_json(run_file) if run_file.exists() else {}
        changed = {key: (saved.get(key), value) for key, value in identity.items() if saved.get(key) != value}
        if not changed:
            return
        if resume:
            raise UserError(f"the parts in {folder} belong to another lookup ({changed}: was, now); rerun without "
                            "--resume to start over")
        log.info("starting over: the parts in %s are of another lookup (%s: was, now)", folder, changed)
    elif resume:
        log.warning("--resume given but %s holds no part of a lookup; starting fresh", folder)
    if is_main:
        shutil.rmtree(folder, ignore_errors=True)
        write_json(run_file, identity)


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
