"""What a cross-encoder adds to the reranker, and what it costs a lookup on this CPU.

A cross-encoder reads each (alias, candidate) pair together instead of comparing two embeddings.
This trains sentence-transformers' ``CrossEncoder`` from the bundled all-MiniLM-L6-v2 on the train
aliases, each against its gold label and the hard negatives the model's first stage ranks highest
(by the hybrid's fused score), with binary cross-entropy. It then scores each validation and test
alias's top candidates by fused score (``--cross-top``; on this CPU every candidate would cost
several times more) and refits the reranker as ``calibrate`` fits it (entity folds on validation,
out-of-fold temperature and abstain), with and without the cross-encoder's score and its gap to
the query's best as two more features; the cross-encoder ranking the candidates alone is reported
too. Last, it times scoring one lookup's candidates with the cross-encoder against the whole
reranked lookup.

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/cross_encoder_<model>.json

Example:
    python benchmarks/cross_encoder.py --model teacher
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import add_reranker_args, percentiles, reranker_tables, save_results

from alias_label.models.load import bundled_model_path
from alias_label.search.abstain import abstain_quality
from alias_label.search.calibration import CONFIDENCE
from alias_label.search.features import COLUMN, FEATURES
from alias_label.search.rerank import (
    booster_params,
    fit_abstain_shares,
    fit_out_of_fold,
    outcome_metrics,
    pairs_table,
    ranked_outcome,
    score_table,
    top_shares,
)
from alias_label.search.retriever import load_retriever

CROSS_FEATURES = ["cross_encoder", "cross_encoder_gap"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser)
    parser.add_argument("--base", default=None, help="the cross-encoder's starting model (default: the bundled MiniLM)")
    parser.add_argument("--negatives", type=int, default=5, help="hard negatives per train alias (default: 5)")
    parser.add_argument("--train-aliases", type=int, default=1500,
                        help="train aliases used, a seeded sample small enough to train on a CPU in minutes; "
                             "0 for all (default: 1500)")
    parser.add_argument("--epochs", type=float, default=1, help="training epochs (default: 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="training pairs per step (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-5, help="learning rate (default: 3e-5)")
    parser.add_argument("--max-length", type=int, default=48,
                        help="tokens per pair; names are short, so longer only costs time (default: 48)")
    parser.add_argument("--seed", type=int, default=13, help="sampling and training seed (default: 13)")
    parser.add_argument("--cross-top", type=int, default=20,
                        help="candidates per alias the cross-encoder scores, the top by fused score (default: 20)")
    parser.add_argument("--latency-queries", type=int, default=50, help="test aliases timed (default: 50)")
    return parser.parse_args(argv)


def train_sample(stage, split, size: int, seed: int):
    """A seeded sample of the train aliases (all for ``size`` 0) and their candidates, in split order."""
    train = split.pairs("train")
    if size and size < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), size, replace=False))
        train = train.iloc[chosen]
    return train, pairs_table(stage, split, train)


def mined_pairs(table, aliases: list[str], gold: list[str], labels: np.ndarray, negatives: int) -> dict:
    """Each alias with its gold label (1) and the wrong candidates of highest fused score (0)."""
    rows, matrices, relevance, _ = table
    pairs = {"query": [], "passage": [], "label": []}
    for alias, label, candidate_rows, matrix, rel in zip(aliases, gold, rows, matrices, relevance, strict=True):
        wrong = np.flatnonzero(rel == 0)
        hardest = wrong[np.argsort(-matrix[wrong, COLUMN["fused"]], kind="stable")[:negatives]]
        for text, target in [(label, 1.0), *((labels[candidate_rows[i]], 0.0) for i in hardest)]:
            pairs["query"].append(alias)
            pairs["passage"].append(text)
            pairs["label"].append(target)
    return pairs


def train_cross_encoder(pairs: dict, args):
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    cross = CrossEncoder(str(args.base or bundled_model_path()), num_labels=1, device="cpu",
                         max_length=args.max_length)
    with tempfile.TemporaryDirectory() as output:
        training_args = CrossEncoderTrainingArguments(
            output_dir=output, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=0.1, seed=args.seed, use_cpu=True, save_strategy="no",
            eval_strategy="no", report_to="none", logging_steps=200)
        trainer = CrossEncoderTrainer(model=cross, args=training_args, train_dataset=Dataset.from_dict(pairs),
                                      loss=BinaryCrossEntropyLoss(cross))
        trainer.train()
    return cross


def head(matrix: np.ndarray, top: int) -> np.ndarray:
    """The positions of a query's ``top`` candidates by the hybrid's fused score, the ones it reranks."""
    return np.argsort(-matrix[:, COLUMN["fused"]], kind="stable")[:top]


def cross_scores(cross, aliases: list[str], table, labels: np.ndarray, top: int) -> list[np.ndarray]:
    """The cross-encoder's logit for each alias's ``top`` candidates by fused score; NaN for the rest,
    which LightGBM reads as missing."""
    rows, matrices = table[0], table[1]
    heads = [head(m, top) for m in matrices]
    flat = [(alias, labels[r[i]]) for alias, r, h in zip(aliases, rows, heads, strict=True) for i in h]
    logits = np.asarray(cross.predict(flat, batch_size=256, show_progress_bar=False), dtype=np.float64)
    scores = []
    for r, h, chunk in zip(rows, heads, np.split(logits, np.cumsum([len(h) for h in heads])[:-1]), strict=True):
        full = np.full(len(r), np.nan)
        full[h] = chunk
        scores.append(full)
    return scores


def with_cross_features(table, scores: list[np.ndarray]):
    """The table with the cross-encoder's logit and its gap to the query's best as two more columns."""
    rows, matrices, relevance, entities = table
    extended = [np.column_stack([m, s, s - (np.nanmax(s) if len(s) else 0.0)]) for m, s in zip(matrices, scores,
                                                                                                strict=True)]
    return rows, extended, relevance, entities


def cross_alone(val_scores, test_scores, tables, target_precision: float) -> dict:
    """The cross-encoder ranking the candidates it scored by itself, the rest after them, its abstain
    fitted on validation."""
    val_scores = [np.nan_to_num(s, nan=-np.inf) for s in val_scores]
    test_scores = [np.nan_to_num(s, nan=-np.inf) for s in test_scores]
    _, val_right, val_rank = ranked_outcome(val_scores, tables["val"][2])
    temperature, abstain = fit_abstain_shares(val_scores, val_right, target_precision, CONFIDENCE)
    _, test_right, test_rank = ranked_outcome(test_scores, tables["test"][2])
    return {"val": outcome_metrics(tables["val"][0], val_right, val_rank),
            "test": {**outcome_metrics(tables["test"][0], test_right, test_rank),
                     "abstain": abstain_quality(top_shares(test_scores, temperature), test_right, abstain)},
            "abstain": abstain}


def refit(tables, features: list[str], role: str, target_precision: float) -> dict:
    columns = FEATURES + CROSS_FEATURES
    fitted = fit_out_of_fold(tables["val"], features, target_precision, CONFIDENCE, params=booster_params(role),
                             columns_of=columns)
    return {"val": fitted["val"], "test": score_table(fitted, tables["test"], features, columns_of=columns),
            "abstain": fitted["abstain"]}


def latency(cross, model: str, aliases: list[str], top: int) -> dict:
    retriever = load_retriever(model)
    labels = retriever.candidates.labels["label"].to_numpy()
    cross_ms, lookup_ms = [], []
    for alias in aliases:
        start = time.perf_counter()
        retriever.labels_for([alias], 10)
        lookup_ms.append((time.perf_counter() - start) * 1000)
        rows, matrices = retriever.searcher.first_stage.candidates([alias])
        start = time.perf_counter()
        pairs = [(alias, labels[rows[0][i]]) for i in head(matrices[0], top)]
        cross.predict(pairs, batch_size=len(pairs) or 1, show_progress_bar=False)
        cross_ms.append((time.perf_counter() - start) * 1000)
    figures = {"queries": len(aliases), "cross_encoder": percentiles(cross_ms),
               "reranked_lookup": percentiles(lookup_ms)}
    figures["cross_encoder_vs_lookup_p50"] = figures["cross_encoder"]["p50_ms"] / figures["reranked_lookup"]["p50_ms"]
    return figures


def main(args) -> dict:
    split, dense, stage, tables = reranker_tables(args.model)
    labels = dense.candidates.labels["label"].to_numpy()
    train, train_table = train_sample(stage, split, args.train_aliases, args.seed)
    pairs = mined_pairs(train_table, train["alias"].tolist(), train["label"].tolist(), labels, args.negatives)
    start = time.perf_counter()
    cross = train_cross_encoder(pairs, args)
    train_s = time.perf_counter() - start
    scores = {part: cross_scores(cross, split.pairs(part)["alias"].tolist(), tables[part], labels, args.cross_top)
              for part in ("val", "test")}
    extended = {part: with_cross_features(tables[part], scores[part]) for part in ("val", "test")}
    variants = {"reranker": refit(extended, FEATURES, dense.name, args.target_precision),
                "reranker with the cross-encoder": refit(extended, FEATURES + CROSS_FEATURES, dense.name,
                                                         args.target_precision),
                "cross-encoder alone": cross_alone(scores["val"], scores["test"], tables, args.target_precision)}
    for name, row in variants.items():
        abstain = row["test"]["abstain"]
        print(f"{name}: val top-1 {row['val']['top1']:.2%}, test top-1 {row['test']['top1']:.2%}, test precision "
              f"{abstain['precision'] or 0:.2%} at coverage {abstain['coverage']:.2%}")
    cost = latency(cross, args.model, split.test["alias"].tolist()[:args.latency_queries], args.cross_top)
    print(f"cross-encoder over one lookup's candidates: p50 {cost['cross_encoder']['p50_ms']:.1f} ms, "
          f"{cost['cross_encoder_vs_lookup_p50']:.1f}x the whole reranked lookup")
    figures = {"model": args.model, "cross_top": args.cross_top, "train_pairs": len(pairs["label"]),
               "train_aliases": len(train), "train_s": train_s, "variants": variants, "latency": cost}
    save_results(f"cross_encoder_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
