"""Label -> alias recall@10 by alias kind, with the TF-IDF side reading each string as written or transliterated.

A label -> alias lookup is the hybrid's in every search mode: the model's alias index fused with
TF-IDF over the aliases. This compares three TF-IDF sides, alone and fused at the model's
calibrated label -> alias weight and exponent: both strings as written; the aliases also under
their transliterations; and both sides transliterated (the aliases under both keys, the label
transliterated: the default). The default is also fused at the alias -> label weight and
exponent, to show what fitting one for this direction gives.
Each held-out label is a query, its held-out aliases the gold set, on val and test.

Reads   data/processed/, the trained model (default: the teacher), its indexes and calibration
Writes  benchmarks/results/reverse_search.json (reverse_search_<tag>.json with --tag)

Example:
    python benchmarks/reverse_search.py --model student
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from harness import save_results

from alias_label.data.kinds import pair_kinds
from alias_label.data.split import load_split
from alias_label.index.tables import keyed_texts
from alias_label.search.hybrid import HybridSearcher
from alias_label.search.lexical import TfidfIndex
from alias_label.search.retriever import check_split, load_retriever
from alias_label.search.scoring import label_to_alias_gold, label_to_alias_recall
from alias_label.search.searchers import Searcher, keyed_tfidf

FORWARD = "hybrid at the alias -> label weight"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder (default: teacher)")
    parser.add_argument("--tag", default=None, help="names the results file, for a run on other data")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def lexical_sides(hybrid: HybridSearcher, aliases: list[str]) -> dict:
    """The TF-IDF sides compared, by name; the last is the hybrid's own."""
    return {"as written": Searcher("tfidf", None, TfidfIndex(aliases)),
            "aliases transliterated": Searcher("tfidf", None, keyed_tfidf(*keyed_texts(aliases))),
            "both transliterated": hybrid.lexical}


def recall_table(hybrid: HybridSearcher, split, part: str) -> dict:
    pairs = split.pairs(part)
    kinds = pair_kinds(pairs)
    labels, gold = label_to_alias_gold(split, pairs, kinds)
    table = {"dense": label_to_alias_recall(hybrid.dense.aliases_for(labels, 10)[1], gold)}
    for name, lexical in lexical_sides(hybrid, split.aliases["alias"].tolist()).items():
        fused = replace(hybrid, lexical=lexical)
        table[f"tfidf, {name}"] = label_to_alias_recall(lexical.aliases_for(labels, 10)[1], gold)
        table[f"hybrid, {name}"] = label_to_alias_recall(fused.aliases_for(labels, 10)[1], gold)
    # The default, fused at the alias -> label weight instead of its own.
    forward = replace(hybrid, reverse=None)
    table[f"{FORWARD}, both transliterated"] = label_to_alias_recall(forward.aliases_for(labels, 10)[1], gold)
    for name, row in table.items():
        print(f"{part} {name}: " + ", ".join(f"{kind} {value:.2%}" for kind, value in row.items()))
    return {"labels": len(labels), "aliases": len(pairs), "recall10": table}


def main(args) -> dict:
    split = load_split()
    retriever = load_retriever(args.model, mode="hybrid")
    check_split(retriever, split.fingerprint)
    figures = {"model": args.model, "reverse_fusion": retriever.calibration.get("reverse_fusion"),
               **{part: recall_table(retriever.searcher, split, part) for part in ("val", "test")}}
    save_results("reverse_search" + (f"_{args.tag}" if args.tag else ""), figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
