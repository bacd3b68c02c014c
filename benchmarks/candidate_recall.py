"""Recall@K of each first-stage channel and of their union: the ceiling of a second stage.

A reranker can only put first a label that some channel proposed. For K in a grid, this counts
the held-out aliases whose gold label is in each channel's top K, and in the union of all of
them, overall and by alias kind, with the union's mean size (what a reranker would score).
Channels: the trained model's dense index (its label keys included), TF-IDF over the label keys,
the same TF-IDF with the queries transliterated too, and the acronym channel; and, to measure
what its readings from the starts of words add, the acronym channel with initialisms alone
(``acronym_initialisms``) and the union with it in place of the whole channel.

Reads   data/processed/, the trained model (default: the teacher) and its indexes
Writes  benchmarks/results/candidate_recall.json

Example:
    python benchmarks/candidate_recall.py --ks 10 20 50 100 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import save_results

from alias_label.data.kinds import ALIAS_KINDS, pair_kinds
from alias_label.data.split import load_split
from alias_label.index.tables import Candidates
from alias_label.search.acronym import AcronymIndex
from alias_label.search.candidates import channel_results, union
from alias_label.search.retriever import load_dense
from alias_label.search.searchers import Searcher, TransliteratedQueries, lexical_searcher


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder (default: teacher)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50, 100, 200],
                        help="candidates taken from each channel (default: 10 20 50 100 200)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def first_stage_channels(model: str, split) -> dict:
    dense = load_dense(model, "cpu", int8=False)
    lexical = lexical_searcher(Candidates.from_split(split, "transliterated"))
    return {"dense": dense.searcher, "tfidf": lexical, "tfidf_query_translit": TransliteratedQueries(lexical),
            "acronym": Searcher("acronym", AcronymIndex(split.labels["label"]), None),
            "acronym_initialisms": Searcher("acronym_initialisms", AcronymIndex(split.labels["label"], aligned=False),
                                            None)}


# The union of the first stage, and the same union with the acronym channel's initialisms alone.
UNIONS = {"union": "acronym_initialisms", "union_initialisms": "acronym"}


def recall_table(channels: dict, split, part: str, ks: list[int]) -> dict:
    pairs = split.pairs(part)
    gold = split.label_rows(pairs["label"])
    kinds = pair_kinds(pairs)
    results = channel_results(channels, pairs["alias"], max(ks))
    table = {}
    for k in ks:
        cut = {name: (scores[:, :k], ids[:, :k]) for name, (scores, ids) in results.items()}
        hits = {name: (ids == gold[:, None]).any(axis=1) for name, (_, ids) in cut.items()}
        sizes = {}
        for name, left_out in UNIONS.items():
            merged = union({channel: found for channel, found in cut.items() if channel != left_out})
            hits[name], sizes[name] = (merged.rows == gold[:, None]).any(axis=1), float(merged.sizes().mean())
        table[k] = {name: {"all": float(hit.mean()),
                           **{kind: float(hit[kinds == kind].mean()) for kind in ALIAS_KINDS if (kinds == kind).any()}}
                    for name, hit in hits.items()}
        for name, size in sizes.items():
            table[k][name]["mean_candidates"] = size
        print(f"{part} recall@{k}: " + ", ".join(f"{name} {row['all']:.3f}" for name, row in table[k].items())
              + f" (union of {table[k]['union']['mean_candidates']:.0f} candidates)")
    return {"n": len(pairs), "kind_counts": {kind: int((kinds == kind).sum()) for kind in ALIAS_KINDS},
            "recall": table}


def main(args) -> dict:
    split = load_split()
    channels = first_stage_channels(args.model, split)
    figures = {"model": args.model, "ks": args.ks,
               **{part: recall_table(channels, split, part, args.ks) for part in ("val", "test")}}
    save_results("candidate_recall", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
