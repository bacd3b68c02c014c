"""Compare teacher, student, their hybrids and reranked search, the untrained base model and TF-IDF.

Every system goes through the same code: the same held-out queries, a full N-way ranking over
every distinct label, the same metrics, and the same search path a lookup takes. Dense systems
search their FAISS indexes; TF-IDF ranks character n-gram vectors; a hybrid fuses a dense and the
TF-IDF ranking at the weight and exponent fitted on validation; a reranked system scores the
union of every channel's candidates with the reranker fitted on validation. Systems with a
calibrated abstain setting also report its precision and coverage, with a confidence interval.
Single lookups are timed with the systems taking turns, a few queries each, so that a drift in the
machine's speed reaches every system alike; batch throughput is the pace of the accuracy pass,
which looks every query up in one batch.
On a CPU the student runs as the lookup script runs it, Linear layers in int8; ``--int8 none``
evaluates it in float32.

Reads   data/processed/ (the split), models/trained/alias_label_{teacher,student}/ (or --teacher,
        --student) with their calibration.json and the FAISS indexes their indexes.json names
Writes  logs/metrics/evaluation.json (+ a timestamped copy), evaluation.md (the tables),
        accuracy_at_k.png, latency_vs_top1.png, errors.csv (each alias a reranked or dense system
        gets wrong: every such system's top-3, and its confidence and flag where it abstains)
        data/cache/base_{label,label_key,alias}_embs.npy  the base model's embeddings (+ sidecars),
        which a later evaluation of the same data reads instead of encoding every label again

Example:
    python scripts/evaluate_student.py --latency-queries 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.data.kinds import ALIAS_KINDS, pair_kinds
from alias_label.data.split import load_split
from alias_label.errors import UserError, run_main
from alias_label.evaluate.report import markdown_tables, save_plots
from alias_label.evaluate.timing import taking_turns
from alias_label.index.bundle import ROLES, index_files, model_folder, require_trained
from alias_label.index.cache import cached_candidates
from alias_label.index.tables import Candidates
from alias_label.io import atomic_path, read_json, save_run_args, setup_logging, write_json
from alias_label.metrics import DEPTH, classes_of, retrieval_metrics
from alias_label.models.load import load_model, pick_device, precision_name, resolve_model
from alias_label.models.processes import require_one_process
from alias_label.models.quantize import default_activation_bits, int8_by_default
from alias_label.paths import paths
from alias_label.search.abstain import abstain_quality, precision_interval
from alias_label.search.rerank import RERANKER_FILE
from alias_label.search.retriever import Retriever, add_int8_scheme_arg, as_hybrid, as_rerank, check_split, load_dense
from alias_label.search.scoring import (
    correct_classes,
    is_right,
    label_to_alias_gold,
    label_to_alias_recall,
    ranked_metrics,
)
from alias_label.search.searchers import dense_searcher, keys_of, lexical_searcher

NAME = "evaluate_student"
log = logging.getLogger(NAME)
SYSTEMS = ("teacher", "student", "hybrid", "student_hybrid", "rerank", "student_rerank", "base", "tfidf",
           "tfidf_translit")
LEXICAL_KEYS = {"tfidf": "label", "tfidf_translit": "transliterated"}
LEXICAL_NAMES = {keys: name for name, keys in LEXICAL_KEYS.items()}
# Bands of the teacher's top-1 minus top-2 score: near-ties (< 0.01) are where a student's small
# errors flip the top-1, so agreement is read per band.
MARGIN_EDGES = (0.0, 0.01, 0.02, 0.05, 0.1, np.inf)
LATENCY_BLOCK = 10  # single lookups a system answers in a row before the next system's turn
# The trained model each fused or reranked system is built on.
HYBRID_OF = {"hybrid": "teacher", "student_hybrid": "student", "rerank": "teacher", "student_rerank": "student"}
# The systems errors.csv lists, the default search first.
ERROR_SYSTEMS = ("rerank", "student_rerank", "teacher", "student")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS,
                        help="systems to compare (default: all); agreement and retention need teacher and student")
    parser.add_argument("--split", default="test", choices=["val", "test"],
                        help="held-out split (default: test); on val, where the rerankers and abstain settings "
                             "were fitted, the report adds the rerankers' out-of-fold figures")
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="the trained teacher folder (default: models/trained/alias_label_teacher/)")
    parser.add_argument("--student", type=Path, default=None,
                        help="the trained student folder (default: models/trained/alias_label_student/)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where reports go (default: logs/metrics/)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the untrained base model's embeddings are cached, encoded once per data and "
                             "base model (default: data/cache/)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="single queries timed per system for p50/p95, the systems taking turns a few "
                             "queries at a time (default: 200)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"],
                        help="where models run; cpu by default, since the latency figures are for CPU serving")
    parser.add_argument("--int8", nargs="+", default=None, choices=["teacher", "student", "none"],
                        help="run these models' Linear layers in int8 (CPU only), their hybrids too; none: all in "
                             "float32 (default: the student on a CPU, as the lookup script and notebooks run it)")
    add_int8_scheme_arg(parser)
    args = parser.parse_args(argv)
    if args.latency_queries < 1:
        parser.error(f"--latency-queries {args.latency_queries}: time at least one single lookup")
    if args.int8 is None:
        models, device = {HYBRID_OF.get(name, name) for name in args.systems}, pick_device(args.device)
        args.int8 = [role for role in ("teacher", "student") if role in models and int8_by_default(role, device)]
    elif "none" in args.int8:
        if len(args.int8) > 1:
            parser.error("--int8 none runs every model in float32; name no model beside it")
        args.int8 = []
    args.output_dir = Path(args.output_dir or paths().metrics)
    args.teacher, args.student = (Path(getattr(args, role) or model_folder(role)) for role in ROLES)
    return args


def model_of(system: str) -> str:
    """The trained model a system reads: its own, or for base the teacher, whose record names its start."""
    return "teacher" if system == "base" else HYBRID_OF.get(system, system)


def require_models(args) -> None:
    """Every model the asked-for systems need is trained; else the command that builds it, and the
    one that scores the systems that can be scored without it."""
    for role in ROLES:
        needing = [name for name in args.systems if model_of(name) == role]
        if needing:
            try:
                require_trained(getattr(args, role), role)
            except UserError as err:
                others = [name for name in args.systems if name not in needing]
                raise UserError(f"{err}, or score the other systems without it: python scripts/evaluate_student.py "
                                f"--systems {' '.join(others)}" if others else str(err)) from None


def build_retrievers(args, split, device: str) -> dict:
    """Each asked-for system; a hybrid reuses its dense model and the TF-IDF index of its label keys.

    The tfidf system is the plain baseline, the labels' own texts; tfidf_translit adds their
    transliterated keys, as a hybrid's lexical side does when its dense index has them.
    """
    retrievers, dense, lexical = {}, {}, {}

    def lexical_for(keys: str) -> Retriever:
        if keys not in lexical:
            candidates = Candidates.from_split(split, keys)
            lexical[keys] = Retriever(LEXICAL_NAMES[keys], lexical_searcher(candidates), candidates, None)
        return lexical[keys]

    for name in args.systems:
        log.info("loading %s", name)
        role = HYBRID_OF.get(name, name)
        if role in ROLES and role not in dense:
            hybrid_too = any(HYBRID_OF.get(other) == role for other in args.systems)
            dense[role] = load_dense(getattr(args, role), device, role in args.int8, args.int8_scheme, hybrid_too)
            check_split(dense[role], split.fingerprint)
        if name in HYBRID_OF:
            combine = as_rerank if name.endswith("rerank") else as_hybrid
            retrievers[name] = combine(dense[role], lexical_for(keys_of(dense[role].searcher)).searcher)
        elif name in dense:
            retrievers[name] = dense[name]
        elif name == "base":
            retrievers[name] = Retriever("base", base_searcher(args, split, device), Candidates.from_split(split), None)
        else:
            retrievers[name] = lexical_for(LEXICAL_KEYS[name])
    return retrievers


def base_searcher(args, split, device: str):
    """The teacher's untrained starting point, loaded with the prompts the teacher was trained with.

    It has no index files, so its embeddings of every label and alias are cached in data/cache/
    (``--cache-dir``) the first time and read back by later evaluations of the same data.
    """
    config = require_trained(args.teacher)
    prompts, max_seq_length = config.get("prompts", {}), config.get("max_seq_length")
    model = load_model(config["base_model"], device, max_seq_length, prompts.get("query", ""),
                       prompts.get("document", ""))
    settings = {"prompts": prompts, "max_seq_length": max_seq_length, "precision": precision_name(device)}
    embeddings, _ = cached_candidates(model, resolve_model(config["base_model"]), split, "base", args.cache_dir,
                                      settings)
    return dense_searcher("base", model, split, embeddings)


def accuracy(retriever, split, split_name: str, kinds: np.ndarray, reverse_gold: tuple[list[str], dict],
             ) -> tuple[dict, np.ndarray, np.ndarray, dict | None]:
    """Metrics of one system, overall and per alias kind, plus its ranked label rows and scores per query,
    and for a system with an abstain setting each top answer's confidence and whether a lookup flags it
    confident.

    Every query is looked up in one batch, so that lookup's pace is also the system's batch
    throughput (``queries_per_s``). ``reverse_gold``: ``label_to_alias_gold`` of the split's pairs.
    """
    pairs = split.pairs(split_name)
    start = time.perf_counter()
    scores, ranked, read = retriever.labels_with_confidence(pairs["alias"], DEPTH)
    metrics = ranked_metrics(split, ranked, pairs["label"])
    metrics["queries_per_s"] = len(pairs) / (time.perf_counter() - start)
    gold = split.label_rows(pairs["label"])
    setting, flags = retriever.abstain, None
    if setting:
        # The setting was fitted on validation; here it meets unseen queries. A query that is its
        # label as written is kept as lookups keep it.
        as_written = retriever.exact_label_answers(pairs["alias"], ranked[:, 0])
        metrics["abstain"] = {"reads": setting.get("reads", "score"), "threshold": setting["threshold"],
                              "margin": setting["margin"], "target_precision": setting["target_precision"],
                              "met_target": setting["met_target"], "val_coverage": setting["val"]["coverage"],
                              "kept_as_written": int(as_written.sum()),
                              **abstain_quality(read, is_right(split, ranked[:, 0], gold), setting, as_written)}
        kept = metrics["abstain"]["kept"]
        metrics["abstain"]["precision_interval95"] = precision_interval(
            round((metrics["abstain"]["precision"] or 0.0) * kept), kept)
        flags = {"confidence": read[:, 0], "confident": retriever.kept_by_setting(read) | as_written}
    ranked_classes, gold_classes = correct_classes(split, ranked, pairs["label"])
    metrics["by_kind"] = {kind: retrieval_metrics(ranked_classes[kinds == kind], gold_classes[kinds == kind])
                          for kind in ALIAS_KINDS if (kinds == kind).any()}
    labels, gold = reverse_gold
    recall = label_to_alias_recall(retriever.aliases_for(labels, 10)[1], gold)
    metrics["label_to_alias_recall10"] = recall["all"]
    for kind, part in metrics["by_kind"].items():
        part["label_to_alias_recall10"] = recall[kind]
    return metrics, ranked, scores, flags


def agreement_by_margin(teacher_scores: np.ndarray, teacher_top1: np.ndarray, student_top1: np.ndarray) -> list[dict]:
    """Teacher/student top-1 agreement within each band of the teacher's own top-1 margin."""
    margin = teacher_scores[:, 0] - teacher_scores[:, 1]
    bands = []
    for low, high in zip(MARGIN_EDGES[:-1], MARGIN_EDGES[1:], strict=True):
        inside = (margin >= low) & (margin < high)
        bands.append({"margin_from": low, "margin_to": None if np.isinf(high) else high, "n": int(inside.sum()),
                      "agreement": float(np.mean(teacher_top1[inside] == student_top1[inside])) if inside.any()
                      else None})
    return bands


def single_lookup_latency(retrievers: dict, queries: list[str], n_single: int) -> dict:
    """Each system's single-query latency (encode + search), the systems taking turns ``LATENCY_BLOCK``
    queries at a time: a drift in the machine's speed then reaches every system alike, while each
    still answers several queries in a row, as a server would."""
    for retriever in retrievers.values():  # warm-up: first calls pay for allocation and kernel selection
        for query in queries[:5]:
            retriever.labels_with_confidence([query], 10)

    def lookup_ms(retriever, query: str) -> float:
        began = time.perf_counter()
        retriever.labels_with_confidence([query], 10)
        return (time.perf_counter() - began) * 1000

    latencies = taking_turns(retrievers, queries[:n_single], lookup_ms, LATENCY_BLOCK)
    return {name: {"p50_ms": statistics.median(values), "p95_ms": float(np.percentile(values, 95))}
            for name, values in latencies.items()}


def index_sizes(retrievers: dict) -> dict:
    """Bytes on disk of each trained model's index files."""
    return {role: {kind: path.stat().st_size for kind, path in index_files(retrievers[role].model_dir, role).items()
                   if path.exists()} for role in ROLES if role in retrievers}


def errors_table(split, pairs, kinds, ranked: dict, flags: dict) -> pd.DataFrame:
    """Every query that a reranked or dense system gets wrong at top-1, with each one's top-3 and,
    where it has an abstain setting, the top answer's confidence and whether a lookup flags it
    confident: a confident wrong answer is the error that reaches a user's table unchecked."""
    texts = split.labels["label"].to_numpy()
    gold = split.label_rows(pairs["label"])
    table = pd.DataFrame({"query": pairs["alias"].to_numpy(), "gold_label": pairs["label"].to_numpy(),
                          "kind": kinds})
    correct = []
    for name in ERROR_SYSTEMS:
        if name in ranked:
            table[f"{name}_top3"] = [" | ".join(texts[row[:3]]) for row in ranked[name]]
            table[f"{name}_correct"] = is_right(split, ranked[name][:, 0], gold)
            correct.append(table[f"{name}_correct"])
            if flags.get(name):
                table[f"{name}_confidence"] = flags[name]["confidence"].round(4)
                table[f"{name}_confident"] = flags[name]["confident"]
    return table[~np.logical_and.reduce(correct)] if correct else table


def assemble_report(split, split_name, pairs, kinds, systems: dict, ranked: dict, scores: dict, args,
                    index_bytes: dict) -> dict:
    both = "teacher" in ranked and "student" in ranked
    # Agreement compares label classes: labels equal up to case and accents are one answer.
    top1 = {role: classes_of(ranked[role][:, 0], split.label_classes) for role in ROLES if role in ranked}
    agreement = float(np.mean(top1["teacher"] == top1["student"])) if both else None
    by_margin = (agreement_by_margin(scores["teacher"], top1["teacher"], top1["student"]) if both
                 else None)
    retention = systems["student"]["top1"] / systems["teacher"]["top1"] if both and systems["teacher"]["top1"] else None
    p50 = {name: s.get("p50_ms") for name, s in systems.items()}
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split_name, "split_fingerprint": split.fingerprint,
        "n_queries": len(pairs), "n_labels": len(split.labels), "n_aliases": len(split.aliases),
        "agreement": agreement, "agreement_by_teacher_margin": by_margin, "retention": retention,
        "student_teacher_latency_ratio": p50["student"] / p50["teacher"] if both else None,
        "kind_counts": {kind: int((kinds == kind).sum()) for kind in ALIAS_KINDS},
        "index_bytes": index_bytes, "device": args.device, "int8": args.int8,
        "int8_scheme": args.int8_scheme if args.int8 else None,
        "int8_activation_bits": default_activation_bits() if args.int8 else None, "cpu_threads": os.cpu_count(),
        "systems": systems,
        "abstain": systems.get("rerank", systems.get("hybrid", {})).get("abstain"),
    }


def out_of_fold(systems: dict, args) -> dict:
    """Each reranked system's validation figures out of fold, from its reranker's sidecar.

    A reranker is fitted on the validation aliases, so evaluated on them it is in sample; these
    come from fold models that never saw each alias's entity, the figures to compare on validation.
    """
    reranked = [name for name in systems if name.endswith("rerank")]
    return {name: read_json(getattr(args, HYBRID_OF[name]) / RERANKER_FILE)["val_out_of_fold"] for name in reranked}


def write_outputs(report: dict, errors: pd.DataFrame, out_dir: Path) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    write_json(out_dir / "evaluation.json", report)
    write_json(out_dir / f"evaluation-{stamp}.json", report)
    tables = markdown_tables(report)
    with atomic_path(out_dir / "evaluation.md") as tmp:
        tmp.write_text(tables, encoding="utf-8")
    with atomic_path(out_dir / "errors.csv") as tmp:
        errors.to_csv(tmp, index=False)
    save_plots(report, out_dir)
    print(tables)
    log.info("wrote %s/{evaluation.json, evaluation-%s.json, evaluation.md, errors.csv, *.png}", out_dir, stamp)


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/evaluate_student.py")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    require_models(args)
    split = load_split(args.processed_dir)
    pairs = split.pairs(args.split)
    kinds = pair_kinds(pairs)
    retrievers = build_retrievers(args, split, pick_device(args.device))
    systems, ranked, scores, flags = {}, {}, {}, {}
    reverse_gold = label_to_alias_gold(split, pairs, kinds)
    for name, retriever in retrievers.items():
        systems[name], ranked[name], scores[name], flags[name] = accuracy(retriever, split, args.split, kinds,
                                                                          reverse_gold)
        log.info("%s: top1=%.4f top10=%.4f mrr=%.4f", name, systems[name]["top1"], systems[name]["top10"],
                 systems[name]["mrr"])
    for name, latency in single_lookup_latency(retrievers, pairs["alias"].tolist(), args.latency_queries).items():
        systems[name].update(latency)
        log.info("%s: single lookups p50=%.1fms p95=%.1fms", name, latency["p50_ms"], latency["p95_ms"])
    report = assemble_report(split, args.split, pairs, kinds, systems, ranked, scores, args, index_sizes(retrievers))
    if args.split == "val":
        report["val_out_of_fold"] = out_of_fold(systems, args)
    write_outputs(report, errors_table(split, pairs, kinds, ranked, flags), args.output_dir)
    return report


if __name__ == "__main__":
    run_main(main, parse_args())
