"""What each int8 scheme costs the trained teacher and student in quality, and buys in speed.

Each model is run in float32 and in each of ``alias_label.models.quantize.INT8_SCHEMES`` (torch's
dynamic quantisation of the Linear layers: one weight scale per output channel, one per matrix,
or per channel with each layer's feed-forward output kept in float32), each with activations
quantised to torch's 7 bits and, where the CPU has VNNI, to 8 (``-act7``, ``-act8``). Quality, on the validation
and test aliases against the flat label index the scripts wrote: top-1, top-1 agreement with the
float32 teacher (the student's agreement) and with the same model in float32. Speed: one-alias encode
p50 of the student in each precision against the float32 teacher, the models taking turns ten
aliases at a time so that a drift in the machine's speed reaches them alike.

The results file is named after the student's depth, so that students of several depths (each in
its own ALIAS_LABEL_HOME) keep their own.

Reads   data/processed/, models/trained/alias_label_{teacher,student}/, faiss/ (flat indexes)
Writes  benchmarks/results/int8_schemes_layers<N>.json (N: the student's transformer layers)

Example:
    python benchmarks/int8_schemes.py --queries 300
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from harness import percentiles, save_results, taking_turns, timed_ms

from alias_label.data.split import load_split
from alias_label.metrics import retrieval_metrics
from alias_label.models.encode import encode
from alias_label.models.quantize import INT8_SCHEMES, cpu_has_vnni, quantize_int8
from alias_label.models.traced import trace_encoder
from alias_label.search.retriever import load_dense


def precisions() -> dict[str, tuple[str, int] | None]:
    """Each precision's name and its (int8 scheme, activation bits); float32 is None."""
    bits = (7, 8) if cpu_has_vnni() else (7,)
    return {"float32": None, **{f"{scheme}-act{b}": (scheme, b) for scheme in INT8_SCHEMES for b in bits}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300,
                        help="test aliases encoded one by one for the speed figures (default: 300)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def variants(retriever) -> dict:
    """The retriever with its model in float32 and in each int8 scheme, each traced as lookups run it
    (``load_dense`` traced the float32 one); the indexes stay the float32 model's."""
    return {precision: retriever if how is None
            else dataclasses.replace(retriever, model=traced_copy(quantize_int8(retriever.model, *how)))
            for precision, how in precisions().items()}


def traced_copy(model):
    trace_encoder(model)
    return model


def quality(runs: dict, split) -> dict:
    """Top-1 and agreement of every (model, precision) on validation and test."""
    figures = {}
    for part in ("val", "test"):
        pairs = getattr(split, part)
        gold = split.label_rows(pairs["label"])
        top1 = {name: retriever.labels_for(pairs["alias"], 1)[1][:, 0] for name, retriever in runs.items()}
        for name, ranked in top1.items():
            own_float32 = top1[f"{name.split('_')[0]}_float32"]
            figures.setdefault(name, {}).update({
                f"{part}_top1": retrieval_metrics(ranked[:, None], gold)["top1"],
                f"{part}_agreement_with_teacher_float32": float(np.mean(ranked == top1["teacher_float32"])),
                f"{part}_agreement_with_own_float32": float(np.mean(ranked == own_float32))})
    for name, row in figures.items():
        print(f"{name}: test top-1 {row['test_top1']:.2%}, agreement with the float32 teacher "
              f"{row['test_agreement_with_teacher_float32']:.2%} (val {row['val_agreement_with_teacher_float32']:.2%}),"
              f" with its own float32 {row['test_agreement_with_own_float32']:.2%}")
    return figures


def speed(models: dict, aliases: list[str]) -> dict:
    """One-alias encode p50 of each model, and the float32 teacher's p50 over it."""
    times = taking_turns(models, aliases, lambda model, alias: timed_ms(encode, model, [alias], "query")[0])
    p50 = {name: percentiles(values)["p50_ms"] for name, values in times.items()}
    figures = {name: {"encode_p50_ms": ms, "speedup_encode": p50["teacher_float32"] / ms} for name, ms in p50.items()}
    for name, row in figures.items():
        print(f"{name}: encode p50 {row['encode_p50_ms']:.2f} ms, {row['speedup_encode']:.2f}x the float32 teacher")
    return figures


def main(args) -> dict:
    split = load_split()
    runs = {f"{role}_{precision}": retriever for role in ("teacher", "student")
            for precision, retriever in variants(load_dense(role, "cpu", int8=False).searcher).items()}
    student = runs["student_float32"].model
    layers = len(student[0].auto_model.encoder.layer)
    timed = {name: runs[name].model for name in ("teacher_float32", *(f"student_{p}" for p in precisions()))}
    figures = {"student_layers": layers, "queries": args.queries, "quality": quality(runs, split),
               "speed": speed(timed, split.test["alias"].tolist()[:args.queries])}
    save_results(f"int8_schemes_layers{layers}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
