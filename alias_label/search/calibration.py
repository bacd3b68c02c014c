"""Fitting, saving and loading a trained model's calibration: fusion weights and abstain settings.

One function, ``calibrate``, fits them on the validation split, and the reranker too; the teacher
and student scripts, ``build_index.py`` and ``calibrate.py`` all call it. The result is saved in
the model folder as ``calibration.json`` (and ``reranker.json``), fingerprinted with the model and
the data, and checked on load. Every abstain setting must meet its target precision by the
lower confidence bound of its validation precision (``CONFIDENCE``), a margin for unseen aliases.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alias_label.data.kinds import pair_kinds
from alias_label.data.split import Split
from alias_label.errors import UserError
from alias_label.index.bundle import model_name
from alias_label.index.tables import Candidates
from alias_label.io import read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.search.abstain import TARGET_MISSED, fit_abstain
from alias_label.search.cross import cross_dir, has_cross_encoder, load_cross_encoder
from alias_label.search.hybrid import FUSION_DEPTH, fit_fusion_weight, fit_reverse_fusion, fuse
from alias_label.search.rerank import (
    CANDIDATES_PER_CHANNEL,
    RERANKER_FILE,
    FirstStage,
    fit_reranker,
    load_reranker,
    refit_changes,
)
from alias_label.search.scoring import is_right, label_to_alias_gold
from alias_label.search.searchers import Searcher, keys_of, lexical_searcher

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
# One-sided confidence of the lower bound on validation precision that must clear the target: the
# setting with the most coverage among thousands is the one whose validation precision the noise
# flattered most, so the bound is strict (docs/rerank.md).
CONFIDENCE = 0.975


def add_calibration_args(parser: argparse.ArgumentParser, cross_encoder_flag: bool = True) -> None:
    """The flags of ``calibrate``; ``cross_encoder_flag`` False for a script that always fits with one."""
    parser.add_argument("--target-precision", type=float, default=0.95,
                        help="precision the abstain threshold must reach on validation (default: 0.95)")
    if cross_encoder_flag:
        parser.add_argument("--cross-encoder", action=argparse.BooleanOptionalAction, default=True,
                            help="fit the reranker with the model folder's cross-encoder scores when it has one "
                                 "(python scripts/train_cross_encoder.py), or without them (--no-cross-encoder) "
                                 "(default: with)")
    parser.add_argument("--rerank-candidates", type=int, default=CANDIDATES_PER_CHANNEL,
                        help="candidates each first-stage channel proposes to the reranker; more raise the ceiling "
                             f"and the cost of a lookup (docs/rerank.md) (default: {CANDIDATES_PER_CHANNEL})")


def check_target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 < args.target_precision < 1:
        parser.error(f"--target-precision {args.target_precision} must lie strictly between 0 and 1, e.g. 0.95")
    if args.rerank_candidates < 1:
        parser.error(f"--rerank-candidates {args.rerank_candidates} must be at least 1")


def calibration_command(model_dir: Path) -> str:
    return f"python scripts/calibrate.py --model {model_name(model_dir)}"


def load_calibration(model_dir: Path, data_fingerprint: str, required: bool = True) -> dict | None:
    """The fusion weight and abstain settings fitted for this model on the data its indexes hold."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.exists():
        if required:
            raise UserError(f"{model_dir} has no {CALIBRATION_FILE} (fusion weight, abstain threshold). "
                            f"Fit it with: {calibration_command(model_dir)}")
        return None
    calibration = read_json(path)
    stale = {"data_fingerprint": data_fingerprint, "model_fingerprint": model_fingerprint(model_dir)}
    for key, value in stale.items():
        if calibration.get(key) != value:
            if required:
                raise UserError(f"{path} was fitted for another {key.split('_')[0]} than the current one. "
                                f"Refit it with: {calibration_command(model_dir)}")
            log.warning("ignoring stale %s (%s changed); refit it with: %s", path, key, calibration_command(model_dir))
            return None
    return calibration


def fitted_as(model_dir: Path, role: str, data_fingerprint: str, target_precision: float,
              candidates_per_channel: int, cross_encoder: bool) -> bool:
    """Whether the model's calibration and reranker are current and what ``calibrate`` would fit with
    these settings, so that a rerun can keep them; logs what differs when not."""
    try:
        calibration = load_calibration(model_dir, data_fingerprint)
        sidecar = load_reranker(model_dir, data_fingerprint, calibration_command(model_dir))[0]
    except UserError as error:
        log.info("refitting the calibration of %s (%s)", model_dir, error)
        return False
    cross = model_fingerprint(cross_dir(model_dir)) if cross_encoder and has_cross_encoder(model_dir) else None
    found = refit_changes(sidecar, role, cross, candidates_per_channel, target_precision, CONFIDENCE)
    found += [f"{mode} abstain target" for mode, setting in calibration["abstain"].items()
              if setting.get("target_precision") != target_precision]
    if found:
        log.info("refitting the calibration of %s, fitted otherwise (%s)", model_dir, ", ".join(found))
    return not found


def warn_if_candidates_change(model_dir: Path, candidates_per_channel: int) -> None:
    """Say so when a refit proposes another number of candidates than the reranker it replaces: every
    script that refits takes the number as a flag, and a step run without it falls back to the default."""
    sidecar = Path(model_dir) / RERANKER_FILE
    before = read_json(sidecar).get("candidates_per_channel") if sidecar.exists() else None
    if before is not None and before != candidates_per_channel:
        log.warning("refitting the reranker of %s with %d candidates a channel; the one it replaces had %d "
                    "(pass --rerank-candidates %d to keep that)", model_dir, candidates_per_channel, before, before)


def calibrate(model_dir: Path, role: str, split: Split, dense: Searcher, target_precision: float = 0.95,
              candidates_per_channel: int = CANDIDATES_PER_CHANNEL, cross_encoder: bool = True) -> dict:
    """Fit the fusion weights (alias -> label, and label -> alias), the reranker and every mode's abstain
    setting on validation; save them with the model.

    ``dense`` is the float32 model's searcher (its label index and model). The reranker reads the
    model folder's cross-encoder too when it has one, unless ``cross_encoder`` is False.
    """
    pairs = split.pairs("val")
    gold = split.label_rows(pairs["label"])
    dense_result = dense.labels_for(pairs["alias"], FUSION_DEPTH)
    candidates = Candidates.from_split(split, keys_of(dense))
    lexical = lexical_searcher(candidates)
    lexical_result = lexical.labels_for(pairs["alias"], FUSION_DEPTH)
    fusion = fit_fusion_weight(dense_result, lexical_result, split.label_classes[gold], split.label_classes)
    hybrid_result = fuse(dense_result, lexical_result, fusion["weight"], FUSION_DEPTH, fusion["exponent"])
    labels, gold_aliases = label_to_alias_gold(split, pairs, pair_kinds(pairs))
    reverse_fusion = fit_reverse_fusion(dense.aliases_for(labels, FUSION_DEPTH),
                                        lexical.aliases_for(labels, FUSION_DEPTH), gold_aliases["all"])
    abstain = {}
    for mode, (scores, ids) in {"dense": dense_result, "hybrid": hybrid_result}.items():
        abstain[mode] = fit_abstain(scores, is_right(split, ids[:, 0], gold), target_precision, confidence=CONFIDENCE)
        log.info("%s %s abstain: score >= %.4f and margin >= %.4f -> val precision %.3f, coverage %.3f%s", role,
                 mode, abstain[mode]["threshold"], abstain[mode]["margin"], abstain[mode]["val"]["precision"],
                 abstain[mode]["val"]["coverage"], "" if abstain[mode]["met_target"] else TARGET_MISSED)
    warn_if_candidates_change(model_dir, candidates_per_channel)
    first_stage = FirstStage.build(dense, candidates, fusion, candidates_per_channel, lexical)
    cross = None
    if cross_encoder and has_cross_encoder(model_dir):
        cross = load_cross_encoder(model_dir, candidates.labels["label"].to_numpy(), str(dense.model.device))
    reranker = fit_reranker(first_stage, split, model_dir, role, target_precision, CONFIDENCE, cross=cross)
    abstain["rerank"] = reranker["abstain"]
    calibration = {"role": role, "split": "val", "data_fingerprint": split.fingerprint,
                   "model_fingerprint": model_fingerprint(model_dir), "fusion": fusion,
                   "reverse_fusion": reverse_fusion, "abstain": abstain}
    write_json(Path(model_dir) / CALIBRATION_FILE, calibration)
    return calibration
