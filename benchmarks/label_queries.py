"""Queries that are already labels: how often lookups answer them right, and flag them confident.

A column being normalised often holds names that are already canonical, as written or in another
case. The calibrated abstain setting was fitted on validation aliases, and the data keeps no
alias equal to its label, so it has never seen such a query. This benchmark looks up the labels
of the test entities through each model's default search (reranked; the student in int8 on a
CPU): as written, upper-cased, and without their accents (the labels that have any). For each it
reports top-1 (a label equal to the gold one up to case and accents counts as right, as in the
evaluator), then the share of queries flagged confident and the precision of those, by the
calibrated setting alone and as lookups flag them: the setting, or the top answer being the
query's own label as written up to case (``Retriever.exact_label_answers``).

Reads   data/processed/, models/trained/alias_label_{teacher,student}/ with their indexes,
        calibration, reranker and cross-encoder
Writes  benchmarks/results/label_queries.json

Example:
    python benchmarks/label_queries.py
"""

from __future__ import annotations

import argparse
import unicodedata
from pathlib import Path

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.metrics import counts_as_right
from alias_label.search.abstain import confident
from alias_label.search.retriever import load_retriever

ROLES = ("teacher", "student")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ROLES), help="models to look the labels up with "
                        "(teacher, student or model folders; default: teacher student)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def without_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def label_queries(labels: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Each way of writing the labels: (queries, their gold labels)."""
    accented = [label for label in labels if without_accents(label) != label]
    return {"as written": (labels, labels), "upper case": ([label.upper() for label in labels], labels),
            "without accents": ([without_accents(label) for label in accented], accented)}


def flagged(kept: np.ndarray, right: np.ndarray) -> dict:
    return {"coverage": float(kept.mean()), "precision": float(right[kept].mean()) if kept.any() else None,
            "kept": int(kept.sum())}


def score(retriever, queries: list[str], gold: list[str]) -> dict:
    """Top-1, and what the calibrated setting alone and lookups flag confident, of one way of writing."""
    _, ids, read = retriever.labels_with_confidence(queries, 2)
    top = np.where(ids[:, 0] >= 0, retriever.candidates.labels["label"].to_numpy()[ids[:, 0]], "")
    right = counts_as_right(top, gold)
    calibrated = confident(read, retriever.abstain) if retriever.vouches else np.zeros(len(queries), dtype=bool)
    as_written = retriever.exact_label_answers(queries, ids[:, 0])
    return {"n": len(queries), "top1": float(right.mean()), "calibrated": flagged(calibrated, right),
            "lookups": flagged(calibrated | as_written, right)}


def report(model: str, figures: dict) -> None:
    for way, row in figures.items():
        print(f"{model} {way:16s} n={row['n']:4d} top-1 {row['top1']:.1%}  confident: calibrated "
              f"{row['calibrated']['coverage']:.1%}, lookups {row['lookups']['coverage']:.1%} "
              f"(precision {row['lookups']['precision'] or 0:.1%})")


def main(args: argparse.Namespace) -> dict:
    labels = load_split().pairs("test")["label"].drop_duplicates().tolist()
    figures = {"labels": len(labels)}
    for model in args.models:
        retriever = load_retriever(model)
        figures[model] = {way: score(retriever, queries, gold)
                          for way, (queries, gold) in label_queries(labels).items()}
        report(model, figures[model])
    save_results("label_queries", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
