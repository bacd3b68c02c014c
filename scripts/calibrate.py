"""Fit a trained model's hybrid fusion weights, reranker and abstain thresholds on validation.

The teacher and student scripts run this step themselves when they finish; run it again to
pick another target precision, or after rebuilding an index.

Reads   data/processed/ (the val split), the model folder (models/trained/alias_label_{teacher,student}/
        or --model) and the FAISS indexes its indexes.json names.
Writes  <model folder>/calibration.json: the fusion weight (best val top-1 of weight * dense +
        (1 - weight) * TF-IDF ** exponent), label -> alias search's own (best val recall@10)
        and, for dense and hybrid search, the score threshold
        and runner-up margin with the highest val coverage at the target precision;
        <model folder>/reranker.json, reranker_boosters.json and reranker_confidence.json: the
        reranker, with the cross-encoder's scores among its features when the folder has one
        (train_cross_encoder.py), and the classifiers whose probability that the top answer is
        right its abstain threshold reads (docs/rerank.md).

Example:
    python scripts/calibrate.py --model teacher --target-precision 0.95
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.io import save_run_args, setup_logging
from alias_label.models.processes import require_one_process
from alias_label.search.calibration import add_calibration_args, calibrate, check_target
from alias_label.search.retriever import check_split, load_dense

NAME = "calibrate"
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher",
                        help="teacher, student, or a trained model folder to calibrate (default: teacher)")
    add_calibration_args(parser)
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the model runs")
    args = parser.parse_args(argv)
    check_target(parser, args)
    return args


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/calibrate.py")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    split = load_split(args.processed_dir)
    # int8 off: calibration is fitted on the float32 model's scores, which int8 lookups share.
    dense = load_dense(args.model, args.device, int8=False)
    check_split(dense, split.fingerprint)
    return calibrate(dense.model_dir, dense.name, split, dense.searcher, args.target_precision,
                     args.rerank_candidates, args.cross_encoder)


if __name__ == "__main__":
    run_main(main, parse_args())
