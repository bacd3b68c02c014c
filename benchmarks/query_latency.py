"""Single-alias lookup latency on this CPU, teacher vs student, and where the time goes.

Each held-out alias is looked up alone (encode + search), as a user's request would be. The
encode is split into its parts, timed separately: tokenising, the transformer forward pass,
eager and traced (``alias_label.models.traced``, as lookups run it), and the whole encode, ours
(one batch straight through the traced model) beside sentence-transformers' ``encode``, which
repeats its bookkeeping on every call; search is timed against the flat index the scripts write
by default and an HNSW index over the same vectors. The student is timed as trained and with its
Linear layers in int8 (how the scripts run it on a CPU by default), each against the float32
teacher. Everything is timed twice: with torch's default intra-op threads and with one thread,
since a one-query forward pass is too small to split across cores.

Then the speed a student of each depth would have: the teacher cut to 1..N layers (untrained
copies: weights do not change the time), in float32 and with torch's dynamic int8 quantisation
of its Linear layers, each timed on encode, encode + flat search and encode + HNSW search
against the float32 teacher, every model traced as lookups run it, the models taking turns ten
aliases at a time. What int8 costs in quality is benchmarks/int8_schemes.py's to measure.

Reads   data/processed/, models/trained/alias_label_{teacher,student}/, faiss/ (flat indexes)
Writes  benchmarks/results/query_latency.json

Example:
    python benchmarks/query_latency.py --queries 300
"""

from __future__ import annotations

import argparse
import copy
import itertools
from pathlib import Path

import numpy as np
import torch
from harness import percentiles, save_results, taking_turns, timed_ms

from alias_label.data.split import load_split
from alias_label.index.dense import IndexSpec, KeyedIndex, build_index
from alias_label.models.encode import encode
from alias_label.models.load import prompt_for
from alias_label.models.quantize import quantize_int8
from alias_label.models.traced import sentence_embeddings, trace_encoder
from alias_label.search.retriever import load_dense
from alias_label.train.distill import reduce_layers


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300, help="test aliases timed one by one (default: 300)")
    parser.add_argument("--depth-queries", type=int, default=300,
                        help="test aliases timed for each student depth and precision (default: 300)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def hnsw_over(label_index):
    """An HNSW index over the same rows as a flat label index, keyed the same way."""
    keyed = isinstance(label_index, KeyedIndex)
    flat = label_index.index if keyed else label_index
    vectors = np.asarray(flat.index.reconstruct_n(0, flat.ntotal))
    hnsw = build_index(vectors, IndexSpec.scaled(flat.ntotal, flat.d, "hnsw"))
    return KeyedIndex(hnsw, label_index.entry_of_key) if keyed else hnsw


def depth_models(teacher) -> dict:
    """The float32 teacher, then its copy cut to each depth in float32 and in int8, each traced as
    the teacher is for lookups."""
    models = {"teacher": teacher}
    for layers in range(len(teacher[0].auto_model.encoder.layer), 0, -1):
        student = copy.deepcopy(teacher)
        reduce_layers(student, layers)
        models[f"layers{layers}_float32"], models[f"layers{layers}_int8"] = student, quantize_int8(student)
    for model in list(models.values())[1:]:
        trace_encoder(model)
    return models


def depth_sweep(teacher, flat, hnsw, aliases: list[str], block: int = 10) -> dict:
    """Encode and lookup p50 (flat, HNSW) of the teacher cut to each depth, and its speed-up."""
    def lookups(model, alias: str) -> dict:
        ms, query = timed_ms(encode, model, [alias], "query")
        return {"encode": ms, "lookup_flat": ms + timed_ms(flat.search, query, 10)[0],
                "lookup_hnsw": ms + timed_ms(hnsw.search, query, 10)[0]}

    models = depth_models(teacher)
    rows = taking_turns(models, aliases, lookups, block)
    times = {name: {step: [row[step] for row in rows[name]] for step in ("encode", "lookup_flat", "lookup_hnsw")}
             for name in models}
    p50 = {name: {f"{step}_p50_ms": percentiles(values)["p50_ms"] for step, values in steps.items()}
           for name, steps in times.items()}
    figures = {"teacher": p50["teacher"]}
    for name in list(models)[1:]:
        speedups = {f"speedup_{step}": p50["teacher"][f"{step}_p50_ms"] / p50[name][f"{step}_p50_ms"]
                    for step in times[name]}
        figures[name] = {**p50[name], **speedups}
        print(f"{name}: " + ", ".join(f"{step} {figures[name][f'speedup_{step}']:.2f}x" for step in times[name])
              + " the teacher")
    return figures


def profile(retriever, aliases: list[str]) -> dict:
    """p50/p95 of each step of a one-alias lookup."""
    model, flat = retriever.model, retriever.label_index
    hnsw = hnsw_over(flat)
    prompt = prompt_for(model, "query") or None
    parts = {name: [] for name in ("tokenize", "forward", "forward_traced", "encode", "encode_library", "search_flat",
                                   "search_hnsw", "lookup_flat", "lookup_hnsw")}
    for alias in aliases[:5]:  # warm-up
        retriever.labels_for([alias], 10)
    for alias in aliases:
        ms, features = timed_ms(model.preprocess, [alias], prompt=prompt)
        parts["tokenize"].append(ms)
        with torch.inference_mode():
            # each on its own copy: the model's forward adds its outputs to the features it is given
            parts["forward"].append(timed_ms(model, dict(features))[0])
            parts["forward_traced"].append(timed_ms(sentence_embeddings, model, dict(features), prompt)[0])
        ms, query = timed_ms(encode, model, [alias], "query")
        parts["encode"].append(ms)
        parts["encode_library"].append(timed_ms(model.encode, [alias], prompt=prompt, normalize_embeddings=True)[0])
        parts["search_flat"].append(timed_ms(flat.search, query, 10)[0])
        parts["search_hnsw"].append(timed_ms(hnsw.search, query, 10)[0])
        parts["lookup_flat"].append(parts["encode"][-1] + parts["search_flat"][-1])
        parts["lookup_hnsw"].append(parts["encode"][-1] + parts["search_hnsw"][-1])
    return {name: percentiles(values) for name, values in parts.items()}


def main(args) -> dict:
    split = load_split()
    aliases = split.test["alias"].tolist()[:args.queries]
    retrievers = {role: load_dense(role, "cpu", int8=False).searcher for role in ("teacher", "student")}
    # The student as the scripts run it on a CPU by default (int8), against the float32 teacher.
    timed = {**retrievers, "student_int8": load_dense("student", "cpu", int8=True).searcher}
    default_threads = torch.get_num_threads()
    figures = {"queries": len(aliases), "labels": len(split.labels), "default_threads": default_threads}
    for threads in dict.fromkeys((default_threads, 1)):
        torch.set_num_threads(threads)
        for role, retriever in timed.items():
            figures[f"{role}_threads{threads}"] = profile(retriever, aliases)
            print(f"{role}, {threads} thread(s):",
                  {name: round(value["p50_ms"], 2) for name, value in figures[f"{role}_threads{threads}"].items()})
        for student, mode in itertools.product(("student", "student_int8"), ("flat", "hnsw")):
            ratio = (figures[f"teacher_threads{threads}"][f"lookup_{mode}"]["p50_ms"]
                     / figures[f"{student}_threads{threads}"][f"lookup_{mode}"]["p50_ms"])
            figures[f"{student}_speedup_lookup_{mode}_threads{threads}"] = ratio
            print(f"{threads} thread(s): {student} vs teacher, encode + {mode} search p50: {ratio:.2f}x faster")
    torch.set_num_threads(default_threads)
    teacher = retrievers["teacher"]
    figures["depth_sweep"] = depth_sweep(teacher.model, teacher.label_index, hnsw_over(teacher.label_index),
                                         aliases[:args.depth_queries])
    save_results("query_latency", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
