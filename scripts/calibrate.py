"""Fit the hybrid fusion weight and the abstain threshold of a trained model on validation.

The teacher and student scripts run this step themselves when they finish; run it again to
pick another target precision, or after rebuilding an index.

Reads   data/processed/ (the val split), models/trained/alias_label_{teacher,student}/ and its
        FAISS indexes in faiss/.
Writes  models/trained/alias_label_{teacher,student}/calibration.json: the fusion weight (best val
        top-1 of weight * dense + (1 - weight) * TF-IDF) and, for dense and hybrid search, the score
        threshold and runner-up margin with the highest val coverage at the target precision.

Example:
    python scripts/calibrate.py --model teacher --target-precision 0.95
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from alias_label.common import run_main, save_run_args, setup_logging
from alias_label.data import load_split
from alias_label.modeling import pick_device
from alias_label.retrieval import calibrate, model_dir_of, trained_retriever

NAME = "calibrate"
log = logging.getLogger(NAME)


def add_calibration_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-precision", type=float, default=0.95,
                        help="precision the abstain threshold must reach on validation (default: 0.95)")


def check_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.target_precision < 1:
        parser.error(f"--target-precision {args.target_precision} must lie strictly between 0 and 1, e.g. 0.95")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", choices=["teacher", "student"],
                        help="which trained model to calibrate (default: teacher)")
    add_calibration_args(parser)
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--index-dir", type=Path, default=None, help="the model's indexes (default: faiss/)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the model runs")
    args = parser.parse_args(argv)
    check_target(parser, args)
    return args


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    split = load_split(args.processed_dir)
    dense = trained_retriever(args.model, split, pick_device(args.device), args.index_dir)
    return calibrate(model_dir_of(args.model), args.model, split, dense, args.target_precision)


if __name__ == "__main__":
    run_main(main, parse_args())
