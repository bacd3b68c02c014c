"""Atomic writes, JSON, metrics records, run records, saved work to go on from, and the one log format.

Every artifact is written beside its target and renamed over it only when complete, so an
interrupted run leaves the previous file intact and no half-written one behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from alias_label.errors import UserError
from alias_label.paths import paths

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s | %(message)s"
RUN_FILE = "run.json"  # what run the work saved in a folder is of (``go_on_from``)

# Libraries whose INFO lines ("Loading SentenceTransformer model from ...") go to the log file only:
# on stdout they would open every lookup's answer.
FILE_ONLY_INFO = ("sentence_transformers",)


def _not_library_info(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".")[0] not in FILE_ONLY_INFO


def setup_logging(name: str) -> logging.Logger:
    """Log to stdout and to ``logs/<name>.log`` in one format; ``FILE_ONLY_INFO``'s INFO lines to the file only."""
    log_dir = paths().logs
    log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_alias_label", False):
            root.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT, "%H:%M:%S")
    stdout = logging.StreamHandler(sys.stdout)
    stdout.addFilter(_not_library_info)
    for handler in (stdout, logging.FileHandler(log_dir / f"{name}.log")):
        handler.setFormatter(formatter)
        handler._alias_label = True
        root.addHandler(handler)
    # faiss announces each CPU-feature build it tries; only its failures are news.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    return logging.getLogger(name)


def save_run_args(name: str, args) -> Path:
    """Write the resolved arguments of this run to ``logs/<name>_args.json``."""
    record = {
        "script": name,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    target = paths().logs / f"{name}_args.json"
    write_json(target, record)
    return target


def current_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it, so set it straight back
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success.

    A crash or Ctrl-C leaves the previous file intact and no half-written one behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); the artifact gets the mode a plain open() would give it.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(target: Path, obj) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def append_jsonl(target: Path, record: dict) -> None:
    """Append one metrics record; a single short write, so readers never see half a line."""
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **record}
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def sha256_of(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def timed(phase: str, timings: dict, logger: logging.Logger):
    """Log one fixed-format line when a phase ends and record its wall time."""
    start = time.perf_counter()
    logger.info("phase=%s start", phase)
    yield
    timings[phase] = round(time.perf_counter() - start, 1)
    logger.info("phase=%s done seconds=%.1f", phase, timings[phase])


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(table):
    """A copy of a table whose text cells a spreadsheet shows as text: a leading quote before any
    cell that would start a formula. Numbers stay numbers."""
    safe = table.copy()
    for column in safe.columns:
        safe[column] = safe[column].map(
            lambda cell: "'" + cell if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell)
    return safe


def go_on_from(folder: Path, saved: bool, identity: dict, resume: bool, is_main: bool, what: str, of: str,
               nothing: str, log: logging.Logger) -> bool:
    """Whether a run goes on from the work saved in ``folder`` (``saved``: whether it holds any):
    yes when its ``RUN_FILE`` says that work is of a run with this ``identity``, so that a rerun after
    an interruption goes on where it stopped. Else the main process clears the folder and writes
    this identity, so that no later run goes on from another's work. ``resume`` (--resume) insists:
    another run's work is then an error, where a plain run starts over. ``what`` (checkpoints,
    parts), ``of`` (run, lookup) and ``nothing`` (no checkpoint) word the messages."""
    run_file = folder / RUN_FILE
    if saved:
        before = read_json(run_file) if run_file.exists() else {}
        changed = {key: (before.get(key), value) for key, value in identity.items() if before.get(key) != value}
        if not changed:
            return True
        if resume:
            raise UserError(f"the {what} in {folder} belong to another {of} ({changed}: was, now); rerun without "
                            "--resume to start over")
        log.info("starting over: the %s in %s are of another %s (%s: was, now)", what, folder, of, changed)
    elif resume:
        log.warning("--resume given but %s holds no %s; starting fresh", folder, nothing)
    if is_main:
        shutil.rmtree(folder, ignore_errors=True)
        write_json(run_file, identity)
    return False
