"""What the model's cross-encoder adds to the reranker, and what it costs a lookup on this CPU.

The cross-encoder is the model folder's own, trained by ``scripts/train_cross_encoder.py`` (``make
pipeline`` trains the teacher's). Its scores of each validation and test alias's top candidates
by fused score are computed once; the reranker is then refitted as ``calibrate`` fits it (entity
folds on validation, out-of-fold temperature and abstain), with and without the cross-encoder's
two features, and the cross-encoder ranking the candidates alone is reported too. Last, it times
scoring one lookup's candidates with the cross-encoder against the whole reranked lookup, which
includes that scoring.

Reads   data/processed/, the trained model (default: the teacher) with its indexes, calibration and
        cross-encoder
Writes  benchmarks/results/cross_encoder_<model>.json

Example:
    python benchmarks/cross_encoder.py --model teacher
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import add_reranker_args, percentiles, reranker_tables, save_results

from alias_label.errors import UserError, run_main
from alias_label.io import read_json
from alias_label.paths import under_home
from alias_label.search.abstain import abstain_quality
from alias_label.search.calibration import CONFIDENCE
from alias_label.search.cross import CROSS_FEATURES, cross_command, cross_dir
from alias_label.search.features import FEATURES
from alias_label.search.rerank import (
    booster_params,
    fit_abstain_shares,
    fit_out_of_fold,
    outcome_metrics,
    ranked_outcome,
    score_table,
    top_shares,
)
from alias_label.search.retriever import load_retriever


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser)
    parser.add_argument("--latency-queries", type=int, default=50, help="test aliases timed (default: 50)")
    return parser.parse_args(argv)


def cross_column(table) -> list[np.ndarray]:
    """Each alias's cross-encoder scores, read back from its feature matrix (NaN where it scored none)."""
    return [matrix[:, len(FEATURES)] for matrix in table[1]]


def cross_alone(tables, target_precision: float) -> dict:
    """The cross-encoder ranking the candidates it scored by itself, the rest after them, its abstain
    fitted on validation."""
    val_scores = [np.nan_to_num(s, nan=-np.inf) for s in cross_column(tables["val"])]
    test_scores = [np.nan_to_num(s, nan=-np.inf) for s in cross_column(tables["test"])]
    _, val_right, val_rank = ranked_outcome(val_scores, tables["val"][2])
    temperature, abstain = fit_abstain_shares(val_scores, val_right, target_precision, CONFIDENCE)
    _, test_right, test_rank = ranked_outcome(test_scores, tables["test"][2])
    return {"val": outcome_metrics(tables["val"][0], val_right, val_rank),
            "test": {**outcome_metrics(tables["test"][0], test_right, test_rank),
                     "abstain": abstain_quality(top_shares(test_scores, temperature), test_right, abstain)},
            "abstain": abstain}


def refit(tables, columns: list[str], features: list[str], role: str, target_precision: float) -> dict:
    """The reranker refitted on ``features``, of the tables' ``columns``, as ``calibrate`` fits it."""
    fitted = fit_out_of_fold(tables["val"], features, target_precision, CONFIDENCE, params=booster_params(role),
                             columns_of=columns)
    return {"val": fitted["val"], "test": score_table(fitted, tables["test"], features, columns_of=columns),
            "abstain": fitted["abstain"]}


def latency(model: str, aliases: list[str]) -> dict:
    """Single-lookup times: the whole reranked lookup, and the cross-encoder's share of it."""
    retriever = load_retriever(model)
    searcher = retriever.searcher
    cross_ms, lookup_ms = [], []
    for alias in aliases[:3]:  # warm-up
        retriever.labels_for([alias], 10)
    for alias in aliases:
        start = time.perf_counter()
        retriever.labels_for([alias], 10)
        lookup_ms.append((time.perf_counter() - start) * 1000)
        rows, matrices = searcher.first_stage.candidates([alias])
        start = time.perf_counter()
        searcher.cross.scores([alias], rows, matrices)
        cross_ms.append((time.perf_counter() - start) * 1000)
    figures = {"queries": len(aliases), "cross_encoder": percentiles(cross_ms),
               "reranked_lookup": percentiles(lookup_ms)}
    figures["cross_encoder_share_of_lookup_p50"] = (figures["cross_encoder"]["p50_ms"]
                                                    / figures["reranked_lookup"]["p50_ms"])
    return figures


def main(args) -> dict:
    split, dense, _, tables, columns = reranker_tables(args.model)
    if columns != FEATURES + CROSS_FEATURES:
        raise UserError(f"{dense.model_dir} has no cross-encoder. Train it with: {cross_command(dense.model_dir)}")
    record = read_json(cross_dir(dense.model_dir) / "training_config.json")
    variants = {"reranker": refit(tables, columns, FEATURES, dense.name, args.target_precision),
                "reranker with the cross-encoder": refit(tables, columns, columns, dense.name,
                                                         args.target_precision),
                "cross-encoder alone": cross_alone(tables, args.target_precision)}
    for name, row in variants.items():
        abstain = row["test"]["abstain"]
        print(f"{name}: val top-1 {row['val']['top1']:.2%}, test top-1 {row['test']['top1']:.2%}, test precision "
              f"{abstain['precision'] or 0:.2%} at coverage {abstain['coverage']:.2%}")
    cost = latency(args.model, split.test["alias"].tolist()[:args.latency_queries])
    print(f"cross-encoder over one lookup's candidates: p50 {cost['cross_encoder']['p50_ms']:.1f} ms of the whole "
          f"reranked lookup's {cost['reranked_lookup']['p50_ms']:.1f} ms")
    figures = {"model": args.model, "cross_encoder": {key: record[key] for key in (
        "layers", "train_aliases", "train_pairs", "negatives", "epochs", "top", "train_s", "device")},
        "variants": variants, "latency": cost}
    figures["cross_encoder"]["base_model"] = under_home(record["base_model"])
    save_results(f"cross_encoder_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
