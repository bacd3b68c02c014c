"""Look up aliases (alias -> label) or labels (label -> alias) with the teacher or the student.

By default the candidates of every channel (the model's FAISS index, TF-IDF character n-grams,
acronyms) are scored by the reranker fitted on validation (--mode rerank; a candidate's score is its
share of the reranker's softmaxed scores), and an alias whose top match is not likely enough to be
right is reported as "no confident match": a classifier fitted on validation gives that probability,
and the threshold it must clear is calibrated there too (--mode hybrid and dense: a threshold and
margin on the score). Label -> alias lookups
use the hybrid ranking. On a CPU the student runs its Linear layers in int8 (--no-int8:
float32); the teacher runs float32 unless given --int8.

Reads   the chosen model folder in models/trained/ (or any folder given to --model) with its
        calibration.json, and the FAISS indexes its indexes.json names (faiss/ by default), whose
        sidecars hold the candidate tables.
Writes  with --batch, a CSV (or TSV, Excel or parquet, by --output's extension) of (input_row,
        [--keep-columns], query, rank, qid, label (--reverse: alias, label), score, confidence,
        confident): one block
        of rows per input row, in input order, so it joins back to the input table on input_row
        (the row's position, from 0); confidence is on each block's first row. With --gold-col,
        a correct column: whether each candidate is the row's gold label.
        A blank query gets one row with no rank, flagged as no match; each distinct query text is
        searched once, however often the column repeats it. A text cell that would start
        a spreadsheet formula (=, +, -, @) is written with a leading quote. Until the CSV is
        written, each finished batch of rows is kept in <output>.partial/, and the same command
        run again goes on from there. Otherwise, prints.

Under `accelerate launch`, --batch spreads whole batches of distinct queries over the processes
(GPUs, nodes), and the main process writes the CSV, in input order.

Examples:
    python scripts/test_lookup.py "UdeG"
    python scripts/test_lookup.py --reverse "Universidad de Guadalajara" --model student -k 5
    python scripts/test_lookup.py "Uni Wien" --model student            # int8 on a CPU; --no-int8 for float32
    python scripts/test_lookup.py --batch my_aliases.csv --query-col name --output matches.csv
    python scripts/test_lookup.py --batch checked.csv --query-col name --gold-col expected_label
    python scripts/test_lookup.py --batch my_aliases.csv --query-col name --keep-columns id --output matches.parquet
    accelerate launch --num_processes 4 scripts/test_lookup.py --batch big.parquet --device cuda
    python scripts/test_lookup.py            # interactive prompt; an empty line quits
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from alias_label.data.table import add_encoding_arg, read_table
from alias_label.data.text import clean_query
from alias_label.errors import UserError, run_main
from alias_label.io import atomic_path, setup_logging, spreadsheet_safe
from alias_label.models.load import pick_device
from alias_label.models.processes import Processes
from alias_label.paths import paths
from alias_label.search.abstain import rounded
from alias_label.search.batch import (
    against_gold,
    done_starts,
    lookup_identity,
    partial_dir,
    prepare_parts,
    read_parts,
    save_part,
)
from alias_label.search.retriever import LOOKUP_BATCH, add_retriever_args, load_retriever

NAME = "test_lookup"
OUTPUT_SUFFIXES = (".csv", ".tsv", ".xlsx", ".parquet")
EXCEL_ROWS = 1_048_576  # rows in an Excel sheet
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query", nargs="?", default=None, help="the alias (or, with --reverse, label) to look up")
    parser.add_argument("--reverse", action="store_true", help="label -> alias instead of alias -> label")
    add_retriever_args(parser)
    parser.add_argument("-k", type=int, default=5, help="matches per query (default: 5)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="report the top match as 'no confident match' below this score, instead of the "
                             "calibrated abstain setting (which applies to alias -> label only); a query that is "
                             "its label as written stays confident")
    parser.add_argument("--batch", type=Path, default=None,
                        help="CSV, TSV, Excel (.xlsx) or parquet file of queries to look up in one go")
    parser.add_argument("--query-col", default="query", help="column of --batch holding the queries (default: query)")
    add_encoding_arg(parser)
    parser.add_argument("--output", type=Path, default=None,
                        help="file written in batch mode: CSV, TSV, Excel (.xlsx) or parquet, by its extension "
                             "(default: logs/lookup_results.csv)")
    parser.add_argument("--gold-col", default=None,
                        help="column of --batch holding the label each query should find, where you know it: "
                             "the output gets a correct column, and the log how often the top answer is right and "
                             "how often one flagged confident is, to check the abstain setting on names of your own")
    parser.add_argument("--keep-columns", nargs="+", default=None, metavar="COLUMN",
                        help="columns of --batch copied into each of its rows of the output (e.g. your own id), so "
                             "that it reads on its own in a spreadsheet; one named like an output column gets an "
                             "input_ prefix")
    parser.add_argument("--batch-size", type=int, default=LOOKUP_BATCH,
                        help="distinct queries of --batch searched at a time, and saved as they finish "
                             f"(default: {LOOKUP_BATCH})")
    parser.add_argument("--resume", action="store_true",
                        help="insist on continuing an interrupted --batch lookup from its saved batches "
                             "(<output>.partial/), refusing those of another lookup (a rerun with the same queries, "
                             "flags and model goes on from them anyway)")
    args = parser.parse_args(argv)
    if args.query is not None and not clean_query(args.query):
        parser.error("the query is empty; give an alias, e.g. \"UdeG\", or leave it out for a prompt")
    if args.k < 1:
        parser.error("-k must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.resume and not args.batch:
        parser.error("--resume continues an interrupted --batch lookup; give the same --batch file and flags")
    if args.keep_columns and not args.batch:
        parser.error("--keep-columns copies columns of a --batch file; give one")
    if args.gold_col and (not args.batch or args.reverse):
        parser.error("--gold-col scores the alias -> label answers of a --batch file; give one, without --reverse")
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        parser.error(f"--output {args.output}: name a {', '.join(OUTPUT_SUFFIXES)} file")
    return args


def shown(score: float) -> str:
    """A score to 3 decimals, or with the digits that tell it from 1 (``rounded``)."""
    value = rounded(score, 3)
    return f"{value:.3f}" if value == round(score, 3) else str(value)


def print_matches(matches: pd.DataFrame, column: str, reads: str | None = "best score", note: str = "") -> None:
    """Each query's matches; ``reads``: what the abstain setting compared, shown when it is not
    confident, with ``note`` after it (why no match can be); None where nothing decides."""
    for query, rows in matches.groupby("query", sort=False):
        print(f"\n{query!r}")
        first = rows.iloc[0]
        if pd.isna(first["rank"]):
            print("  no match")
            continue
        if not first["confident"] and reads is not None:
            print(f"  no confident match ({reads} {shown(first['confidence'])}{note})")
        for row in rows.itertuples():
            # Label -> alias: the alias, then the label of the entity it names.
            named = f"  (alias of {row.label})" if column == "alias" else ""
            print(f"  {row.rank:>2}. {shown(row.score)}  {getattr(row, column)}{named}  [{row.qid}]")


def read_batch(args) -> tuple[list[str], pd.DataFrame | None, list[str] | None]:
    """Every row's query, stripped, in input order (a blank or missing cell is an empty string),
    the --keep-columns of every row, and every row's --gold-col label."""
    table = read_table(args.batch, args.encoding, keep_blank_lines=True, kind="queries")
    for flag, column in (("--query-col", args.query_col), ("--gold-col", args.gold_col)):
        if column is not None and column not in table.columns:
            raise UserError(f"{args.batch} has no column {column!r}; found {list(table.columns)}. "
                            f"Name the right one with {flag}.")
    missing = [column for column in args.keep_columns or [] if column not in table.columns]
    if missing:
        raise UserError(f"{args.batch} has no column(s) {missing} to keep; found {list(table.columns)}")
    kept = table[args.keep_columns].reset_index(drop=True) if args.keep_columns else None
    gold = table[args.gold_col].fillna("").astype(str).tolist() if args.gold_col else None
    return table[args.query_col].fillna("").astype(str).str.strip().tolist(), kept, gold


def with_input_columns(table: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """Each output row with the kept columns of its input row, after input_row."""
    kept = kept.rename(columns={column: f"input_{column}" for column in kept.columns
                                if column in table.columns or column == "input_row"})
    merged = table.merge(kept.assign(input_row=range(len(kept))), on="input_row", how="left")
    return merged[["input_row", *kept.columns, *table.columns.drop("input_row")]]


def check_output_fits(args, n_queries: int) -> None:
    """Refuse, before any lookup, an Excel output that k rows a query could overflow."""
    if args.output is not None and args.output.suffix.lower() == ".xlsx" and n_queries * args.k >= EXCEL_ROWS:
        raise UserError(f"{n_queries} queries with -k {args.k} can give more rows than an Excel sheet holds "
                        f"({EXCEL_ROWS} with the header); write {args.output.with_suffix('.csv')} or .parquet, "
                        "or ask for fewer matches a query (-k)")


def write_matches(table: pd.DataFrame, output: Path) -> None:
    """The batch's rows in the output's format, written whole or not at all: CSV, TSV and Excel with
    the cells a spreadsheet would take for formulas quoted, parquet as they are."""
    suffix = output.suffix.lower()
    with atomic_path(output) as tmp:
        if suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        elif suffix == ".xlsx":
            spreadsheet_safe(table).to_excel(tmp, index=False, engine="openpyxl")
        else:
            spreadsheet_safe(table).to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")


def batch_settings(args) -> dict:
    """The flags that shape a batch lookup's rows, for a rerun to check its saved parts against."""
    return {"query_col": args.query_col, "k": args.k, "reverse": args.reverse, "mode": args.mode,
            "min_score": args.min_score, "batch_size": args.batch_size, "int8": args.int8,
            "int8_scheme": args.int8_scheme, "device": args.device}


def lookup_batches(args, retriever, texts: list[str], starts: list[int], parts: Path, done: int) -> None:
    """Look up the batches of distinct texts that start at ``starts`` and save each as a part: whole
    batches of --batch-size texts, so that one process or several search each text in the same
    company, to the same rows, whether or not the run was interrupted."""
    total = -(-len(texts) // args.batch_size)
    for start in tqdm(starts, desc="lookup", unit="batch", total=total, initial=done):
        batch = pd.Series(texts[start:start + args.batch_size])
        batch.index += start
        save_part(parts, start, retriever.lookup(batch, args.k, args.reverse, args.min_score, args.batch_size))


def by_input_row(found: pd.DataFrame, queries: list[str], texts_of_rows: list[str], column: str) -> pd.DataFrame:
    """Each input row's block: the rows found for its text, or one row without a match for a blank
    one, numbered by the input row and showing its query as given, in input order."""
    rows = pd.DataFrame({"input_row": range(len(queries)), "given": queries, "query": texts_of_rows})
    # A left merge keeps the input rows' order, and each text's rows in their rank order.
    table = rows.merge(found.drop(columns="input_row"), on="query", how="left")
    table = table.assign(query=table["given"]).drop(columns="given")
    table = table.fillna({"qid": "", column: "", "confident": False})
    return table.astype({"input_row": "int64", "rank": "Int64", "confident": "bool"})


def run_batch(args, queries: list[str], kept: pd.DataFrame | None, gold: list[str] | None, retriever,
              processes: Processes) -> Path | None:
    """Look up the batch file's queries, each distinct text once, saving each finished batch, and
    write the output from them; under accelerate launch each process takes whole batches, and the
    main process writes them all, in input order."""
    output = Path(args.output or paths().logs / "lookup_results.csv")
    parts = partial_dir(output)
    identity = lookup_identity(queries, batch_settings(args), retriever.model_dir, retriever.data_fingerprint)
    # With --resume every process checks the parts, so that none waits for another that refused them.
    prepare_parts(parts, args.resume, identity, processes.is_main)
    processes.barrier()  # no process lists or writes parts before the main one has kept or cleared them
    # A name repeated down the column is searched once, as Retriever.lookup does.
    texts_of_rows = [clean_query(query) for query in queries]
    texts = list(dict.fromkeys(text for text in texts_of_rows if text))
    done = done_starts(parts)
    if done:
        log.info("resuming: %d of %d batches already looked up in %s", len(done), -(-len(texts) // args.batch_size),
                 parts)
    left = [start for start in range(0, len(texts), args.batch_size) if start not in done]
    lookup_batches(args, retriever, texts, processes.share(left), parts, len(done))
    processes.barrier()
    if not processes.is_main:
        return None
    found = read_parts(parts) if texts else retriever.lookup([], args.k, args.reverse)  # every row blank
    table = by_input_row(found, queries, texts_of_rows, "alias" if args.reverse else "label")
    if gold is not None:
        table, figures = against_gold(table, gold)
        log_gold_figures(args.gold_col, figures, args.k)
    write_matches(table if kept is None else with_input_columns(table, kept), output)
    shutil.rmtree(parts)
    blank = sum(not text for text in texts_of_rows)
    log.info("%d queries (%d blank, %d distinct) -> %s (%d rows, %d process%s)", len(queries), blank, len(texts),
             output, len(table), processes.world, "" if processes.world == 1 else "es")
    return output


def log_gold_figures(column: str, figures: dict, k: int) -> None:
    """One line: how the answers compare with the batch's own gold labels."""
    if not figures["rows"]:
        log.warning("no row has both a query and a label in --gold-col %r to score", column)
        return
    sure = ("none flagged confident" if figures["confident_right"] is None else
            "{:.1%} flagged confident, {:.1%} of them right (95% interval {:.1%}-{:.1%})".format(
                figures["confident"], figures["confident_right"], *figures["interval95"]))
    log.info("against --gold-col %r, %d rows (%d without a query or a gold label left out): top-1 %.1f%%, "
             "the gold label in the top %d %.1f%%; %s", column, figures["rows"], figures["left_out"],
             100 * figures["top1"], k, 100 * figures["found"], sure)


def abstain_reads(args, retriever) -> tuple[str | None, str]:
    """What decides "no confident match": the score against --min-score, or the calibrated setting's
    reading (in rerank mode, the probability that the top match is right), with a note where no
    setting can make a match confident; None in reverse without --min-score, where nothing decides."""
    if args.min_score is not None:
        return "best score", ""
    if args.reverse:
        return None, ""
    probability = retriever.abstain and retriever.abstain.get("reads") == "probability"
    note = "" if retriever.vouches else "; the setting missed its target on validation" if retriever.abstain else \
        "; no calibrated setting"
    return ("probability right" if probability else "best score"), note


def interactive(args, retriever, column: str) -> None:
    print(f"{args.model} {args.mode}, {'label -> alias' if args.reverse else 'alias -> label'}; an empty line quits")
    while True:
        try:
            query = input("query> ").strip()
        except EOFError:
            return
        if not query:
            return
        matches = retriever.lookup([query], args.k, args.reverse, args.min_score)
        print_matches(matches, column, *abstain_reads(args, retriever))


def main(args: argparse.Namespace):
    setup_logging(NAME)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.batch:
        queries, kept, gold = read_batch(args)  # a wrong file or column is told before the model loads
        check_output_fits(args, len(queries))
        with Processes.launched(pick_device(args.device)) as processes:
            retriever = load_retriever(args.model, args.mode, processes.device, args.int8, args.int8_scheme)
            return run_batch(args, queries, kept, gold, retriever, processes)
    retriever = load_retriever(args.model, args.mode, args.device, args.int8, args.int8_scheme)
    column = "alias" if args.reverse else "label"
    if args.query is None:
        return interactive(args, retriever, column)
    matches = retriever.lookup([args.query], args.k, args.reverse, args.min_score)
    print_matches(matches, column, *abstain_reads(args, retriever))
    return matches


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    run_main(main, args, resumable=bool(args.batch))
