"""The evaluation report, the lookup CLI and both notebooks, on the shared smoke pipeline."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import evaluate_student
import numpy as np
import pandas as pd
import pytest
import test_lookup as lookup_cli
import torch

from alias_label import load_retriever
from alias_label.data.kinds import alias_kind
from alias_label.data.split import load_split
from alias_label.data.text import fold
from alias_label.errors import UserError, run_main
from alias_label.io import read_json, spreadsheet_safe
from alias_label.models import quantize
from alias_label.models.encode import encode
from alias_label.models.quantize import INT8_SCHEMES, FullRangeDynamicLinear, cpu_has_vnni, quantize_int8
from alias_label.paths import REPO_ROOT
from alias_label.search.batch import done_starts, partial_dir, prepare_parts, save_part
from alias_label.search.lexical import TfidfIndex
from alias_label.search.retriever import Retriever, load_dense, no_match
from alias_label.search.scoring import label_to_alias_gold, label_to_alias_recall


@pytest.fixture(scope="module")
def evaluation(pipeline_home):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIAS_LABEL_HOME", str(pipeline_home))
        return evaluate_student.main(evaluate_student.parse_args(["--latency-queries", "10"]))


def test_report_keys_and_ranges(evaluation, pipeline_home):
    report = read_json(pipeline_home / "logs/metrics/evaluation.json")
    assert report == evaluation
    split = load_split(pipeline_home / "data/processed")
    assert report["n_queries"] == len(split.test) and report["n_labels"] == len(split.labels)
    assert set(report["systems"]) == {"teacher", "student", "hybrid", "student_hybrid", "rerank", "student_rerank",
                                      "base", "tfidf", "tfidf_translit"}
    # Every system reports the same keys, reranked ones included.
    assert len({frozenset(set(system) - {"abstain"}) for system in report["systems"].values()}) == 1
    for name, system in report["systems"].items():
        for key in ("top1", "top5", "top10", "mrr", "label_to_alias_recall10"):
            assert 0 <= system[key] <= 1, (name, key)
        assert system["top1"] <= system["top5"] <= system["top10"]
        assert system["p95_ms"] >= system["p50_ms"]
        assert system["queries_per_s"] > 0
    assert 0 <= report["agreement"] <= 1
    bands = report["agreement_by_teacher_margin"]
    assert sum(band["n"] for band in bands) == report["n_queries"]
    agreed = sum(band["agreement"] * band["n"] for band in bands if band["n"])
    assert agreed == pytest.approx(report["agreement"] * report["n_queries"])
    systems = report["systems"]
    if systems["teacher"]["top1"]:
        assert report["retention"] == pytest.approx(systems["student"]["top1"] / systems["teacher"]["top1"])
    else:
        assert report["retention"] is None
    assert sum(report["kind_counts"].values()) == report["n_queries"]
    assert report["index_bytes"]["teacher"]["labels"] == (pipeline_home / "faiss/labels.index").stat().st_size
    # Calibrated systems carry their abstain result on test; the top-level one is the reranker's.
    assert report["abstain"] == report["systems"]["rerank"]["abstain"]
    for name in ("teacher", "student", "hybrid", "student_hybrid", "rerank", "student_rerank"):
        abstain = report["systems"][name]["abstain"]
        assert {"threshold", "margin", "precision", "coverage", "target_precision", "met_target"} <= set(abstain)
        assert 0 <= abstain["coverage"] <= 1 and abstain["kept"] == round(abstain["coverage"] * abstain["n"])
        assert 0 < abstain["val_coverage"] <= 1
        assert abstain["reads"] == ("probability" if name.endswith("rerank") else "score")
        # no held-out alias of the smoke split is its label as written, so the rule keeps none
        assert abstain["kept_as_written"] == 0
    assert "abstain" not in report["systems"]["tfidf"] and "abstain" not in report["systems"]["tfidf_translit"]
    for system in report["systems"].values():
        assert all(0 <= part["label_to_alias_recall10"] <= 1 for part in system["by_kind"].values())


def test_label_to_alias_recall_by_kind_counts_each_labels_aliases_of_that_kind():
    from types import SimpleNamespace

    rows = {"MIT": 0, "Massachusetts Tech": 1, "МТИ": 2, "UdeG": 3, "U de Guadalajara": 4}
    split = SimpleNamespace(alias_rows=lambda aliases: np.array([rows[alias] for alias in aliases], dtype=np.int64))
    pairs = pd.DataFrame({"label": ["Massachusetts Institute of Technology"] * 3 + ["Universidad de Guadalajara"] * 2,
                          "alias": list(rows)})
    kinds = np.array(["acronym", "same_script", "cross_script", "acronym", "same_script"])
    labels, gold = label_to_alias_gold(split, pairs, kinds)
    assert labels == ["Massachusetts Institute of Technology", "Universidad de Guadalajara"]
    assert gold["all"] == [{0, 1, 2}, {3, 4}] and gold["cross_script"] == [{2}, set()]
    # The first label finds its acronym and its other-script alias, the second only its acronym.
    ranked = np.array([[0, 2, 9, 9], [3, 9, 9, 9]])
    assert label_to_alias_recall(ranked, gold) == pytest.approx(
        {"all": (2 / 3 + 1 / 2) / 2, "acronym": 1.0, "same_script": 0.0, "cross_script": 1.0})


def test_the_abstain_table_says_which_settings_missed_the_target_on_validation():
    from alias_label.evaluate.report import markdown_tables

    def system(met: bool, reads: str) -> dict:
        return {"top1": 0.5, "top5": 0.6, "top10": 0.7, "mrr": 0.55, "by_kind": {},
                "abstain": {"reads": reads, "threshold": 0.4, "margin": 0.0, "target_precision": 0.95,
                            "met_target": met, "val_coverage": 0.221, "precision": 0.98, "coverage": 0.2,
                            "precision_interval95": [0.94, 0.99]}}

    report = {"n_queries": 10, "n_labels": 20, "agreement": None, "retention": None, "kind_counts": {},
              "systems": {"rerank": system(True, "probability"), "hybrid": system(False, "score")}}
    table = markdown_tables(report)
    assert "| rerank | probability | 0.400 | 0.000 | 22.10% | 98.00% (94.0%–99.0%) | 20.00% |" in table
    assert "| hybrid | score | 0.400 | 0.000 | 22.10% (target not met) | 98.00% (94.0%–99.0%) | 20.00% |" in table


class RecordingSystem:
    """A stand-in system that records which query it was asked, and in what order, among all systems."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def labels_with_confidence(self, queries, k):
        self.calls.append((self.name, list(queries)))


def test_single_lookups_take_turns_a_block_at_a_time():
    calls = []
    systems = {name: RecordingSystem(name, calls) for name in ("a", "b")}
    queries = [f"q{i}" for i in range(30)]
    latency = evaluate_student.single_lookup_latency(systems, queries, 25)
    timed = calls[10:]  # after each system's five warm-up lookups
    assert calls[:10] == [(name, [q]) for name in ("a", "b") for q in queries[:5]]
    block = evaluate_student.LATENCY_BLOCK
    expected = [(name, [q]) for start in range(0, 25, block) for name in ("a", "b")
                for q in queries[start:min(start + block, 25)]]
    assert timed == expected
    assert set(latency) == {"a", "b"}
    assert all(0 < row["p50_ms"] <= row["p95_ms"] for row in latency.values())


def test_evaluator_refuses_to_time_no_single_lookups(capsys):
    with pytest.raises(SystemExit):
        evaluate_student.parse_args(["--latency-queries", "0"])
    assert "--latency-queries 0: time at least one single lookup" in capsys.readouterr().err


def test_agreement_by_margin_bands():
    # Margins 0.005, 0.015, 0.03 (twice), 0.5: the near-tie disagrees, one of the 0.03 pair too.
    scores = np.array([[0.9, 0.895], [0.8, 0.785], [0.7, 0.67], [0.6, 0.57], [0.9, 0.4]])
    teacher, student = np.array([1, 2, 3, 4, 5]), np.array([9, 2, 3, 9, 5])
    bands = evaluate_student.agreement_by_margin(scores, teacher, student)
    assert [(b["margin_from"], b["margin_to"], b["n"], b["agreement"]) for b in bands] == [
        (0.0, 0.01, 1, 0.0), (0.01, 0.02, 1, 1.0), (0.02, 0.05, 2, 0.5), (0.05, 0.1, 0, None), (0.1, None, 1, 1.0)]


def test_report_files(evaluation, pipeline_home):
    out = pipeline_home / "logs/metrics"
    table = (out / "evaluation.md").read_text()
    assert table.startswith("Test aliases: ") and "in sample" not in table
    assert "| teacher |" in table and "| tfidf |" in table and "| hybrid |" in table and "Top-1 by alias kind" in table
    assert "Abstain at the setting fitted on validation (target precision 95%)" in table
    assert "| rerank | probability |" in table and "| hybrid | score |" in table
    assert "Agreement teacher/student by the teacher's top-1 minus top-2 score" in table
    assert len(list(out.glob("evaluation-*.json"))) >= 1
    for png in ("accuracy_at_k.png", "latency_vs_top1.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_errors_list_each_systems_wrong_answers_with_the_flag_a_lookup_gives(evaluation, in_pipeline_home):
    errors = pd.read_csv(in_pipeline_home / "logs/metrics/errors.csv", keep_default_na=False)
    systems = ("rerank", "student_rerank", "teacher", "student")
    assert list(errors.columns) == ["query", "gold_label", "kind"] + [
        f"{name}_{column}" for name in systems for column in ("top3", "correct", "confidence", "confident")]
    # A query is listed when one system is wrong, and each system's wrong answers are all listed.
    correct = errors[[f"{name}_correct" for name in systems]]
    assert not correct.all(axis=1).any()
    n = evaluation["n_queries"]
    for name in systems:
        assert (~errors[f"{name}_correct"]).sum() == round((1 - evaluation["systems"][name]["top1"]) * n)
    # The flag is the one a lookup gives the same query, with the same confidence.
    retriever = load_retriever("teacher")
    found = retriever.lookup(errors["query"], k=1)
    assert found["confident"].tolist() == errors["rerank_confident"].tolist()
    np.testing.assert_allclose(found["confidence"], errors["rerank_confidence"], atol=1e-4)
    assert found["label"].tolist() == [top3.split(" | ")[0] for top3 in errors["rerank_top3"]]


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_evaluation_agrees_with_the_training_scripts_validation(in_pipeline_home, tmp_path, role):
    logged = read_json(in_pipeline_home / f"models/trained/alias_label_{role}/metrics.json")["val"]
    report = evaluate_student.main(evaluate_student.parse_args(
        ["--systems", role, "--split", "val", "--int8", "none", "--latency-queries", "2", "--output-dir",
         str(tmp_path)]))
    for key in ("top1", "top5", "top10", "mrr", "n"):
        assert report["systems"][role][key] == pytest.approx(logged[key], abs=1e-9)


def test_on_validation_the_report_says_what_is_in_sample_and_gives_the_out_of_fold_figures(in_pipeline_home,
                                                                                          tmp_path):
    report = evaluate_student.main(evaluate_student.parse_args(
        ["--systems", "rerank", "student_rerank", "tfidf", "--split", "val", "--latency-queries", "2",
         "--output-dir", str(tmp_path)]))
    for name, role in (("rerank", "teacher"), ("student_rerank", "student")):
        sidecar = read_json(in_pipeline_home / f"models/trained/alias_label_{role}/reranker.json")
        assert report["val_out_of_fold"][name] == sidecar["val_out_of_fold"]
    tables = (tmp_path / "evaluation.md").read_text(encoding="utf-8")
    assert tables.startswith(f"Validation aliases: {report['n_queries']},")
    top1 = report["val_out_of_fold"]["rerank"]["top1"]
    assert "in sample; the rerankers' top-1 out of fold" in tables and f"rerank {top1:.2%}" in tables


def test_the_base_models_embeddings_are_encoded_once_and_a_stale_cache_is_encoded_again(
        evaluation, in_pipeline_home, tmp_path, caplog):
    import shutil

    split = load_split()
    cache = in_pipeline_home / "data/cache"
    meta = read_json(cache / "base_label_embs.npy.json")
    assert (meta["rows"], meta["data_fingerprint"], meta["precision"]) == (len(split.labels), split.fingerprint,
                                                                          "fp32")
    # The module's evaluation wrote the cache; the next one reads it, encodes nothing, scores alike.
    caplog.set_level("INFO")
    again = evaluate_student.main(evaluate_student.parse_args(
        ["--systems", "base", "--latency-queries", "1", "--output-dir", str(tmp_path / "hit")]))
    assert "base cache hit" in caplog.text and "encoding" not in caplog.text
    scores = ("top1", "top5", "top10", "mrr", "label_to_alias_recall10")
    assert {key: again["systems"]["base"][key] for key in scores} == {
        key: evaluation["systems"]["base"][key] for key in scores}
    # A cache of other data says why it is stale, and is encoded again and rewritten.
    other = tmp_path / "cache"
    shutil.copytree(cache, other)
    sidecar = other / "base_alias_embs.npy.json"
    sidecar.write_text(json.dumps({**read_json(sidecar), "data_fingerprint": "other"}))
    caplog.clear()
    fresh = evaluate_student.main(evaluate_student.parse_args(
        ["--systems", "base", "--latency-queries", "1", "--output-dir", str(tmp_path / "miss"), "--cache-dir",
         str(other)]))
    assert "base cache miss (stale cache base_alias_embs.npy: data_fingerprint is 'other'" in caplog.text
    assert read_json(sidecar)["data_fingerprint"] == split.fingerprint
    np.testing.assert_array_equal(np.load(other / "base_alias_embs.npy"), np.load(cache / "base_alias_embs.npy"))
    assert fresh["systems"]["base"]["top1"] == evaluation["systems"]["base"]["top1"]


def test_evaluator_names_the_fix_for_a_missing_student(home, pipeline_home):
    import shutil

    for folder in ("data", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    shutil.copytree(pipeline_home / "models/trained/alias_label_teacher", home / "models/trained/alias_label_teacher")
    with pytest.raises(UserError, match="no trained model at .*_student. Build it with: python scripts/distill_model"):
        evaluate_student.main(evaluate_student.parse_args(["--systems", "student"]))
    # by default, the systems the teacher alone can score are named too
    with pytest.raises(UserError, match=r"distill_model.py, or score the other systems without it: python "
                                        r"scripts/evaluate_student.py --systems teacher hybrid rerank base tfidf "
                                        r"tfidf_translit$"):
        evaluate_student.main(evaluate_student.parse_args([]))
    (home / "faiss/labels.index").unlink()
    with pytest.raises(UserError, match="index not found: .*labels.index.* python scripts/train_alias_label.py"):
        evaluate_student.main(evaluate_student.parse_args(["--systems", "teacher"]))


@pytest.mark.parametrize(("alias", "label", "kind"), [
    ("MIT", "Massachusetts Institute of Technology", "acronym"),
    ("UdeG", "Universidad de Guadalajara", "acronym"),
    ("Marmara University", "Marmara Üniversitesi", "same_script"),
    ("University of Alkafeel", "جامعة الكفيل", "cross_script"),
    ("Samonta High School", "সামন্তা মাধ্যমিক বিদ্যালয়", "cross_script"),
])
def test_alias_kind(alias, label, kind):
    assert alias_kind(alias, label) == kind


def test_tfidf_index_ranks_by_character_overlap():
    index = TfidfIndex(["University of Guadalajara", "Massachusetts Institute", "Universidad de Guadalajara"])
    scores, ids = index.search(["Guadalajara University", "massachusets"], 3)
    assert ids[0, 0] == 0 and ids[1, 0] == 1
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_tfidf_cosines_are_the_sparse_products_values_exactly():
    labels = ["University of Guadalajara", "Massachusetts Institute", "Universidad de Guadalajara", "МГУ"]
    index = TfidfIndex(labels)
    queries = index.vectors(["Guadalajara University", "massachusets", "", "МГУ", "Universidad Guadalajara"])
    # Bit for bit what the product of the queries and the whole matrix gives, an empty query all 0.
    assert np.array_equal(index.all_cosines(queries), (queries @ index.term_by_text).toarray())
    assert not index.all_cosines(queries)[2].any()
    scores, ids = index.search(queries, 2)
    assert ids[3, 0] == 3 and scores[3, 0] == pytest.approx(1.0, abs=1e-6)


def test_lookup_forward_reverse_and_min_score(in_pipeline_home, capsys):
    split = load_split()
    alias, label = split.train["alias"].iloc[0], split.train["label"].iloc[0]
    matches = lookup_cli.main(lookup_cli.parse_args([alias, "-k", "3"]))
    assert matches["rank"].tolist() == [1, 2, 3] and matches["label"].iloc[0] == label
    assert list(matches.columns) == ["input_row", "query", "rank", "qid", "label", "score", "confidence",
                                     "confident"]
    assert matches["input_row"].tolist() == [0, 0, 0]
    assert matches["score"].is_monotonic_decreasing
    assert 0 <= matches["confidence"].iloc[0] <= 1 and matches["confidence"].iloc[1:].isna().all()
    printed = capsys.readouterr().out
    assert f"1. {lookup_cli.shown(matches['score'].iloc[0])}  {label}" in printed
    # sentence-transformers' note of the model it loads goes to the log file, not before the answer.
    assert "Loading SentenceTransformer model" not in printed
    assert "Loading SentenceTransformer model" in (in_pipeline_home / "logs/test_lookup.log").read_text()
    if not matches["confident"].iloc[0]:
        met = read_json(in_pipeline_home / "models/trained/alias_label_teacher/reranker.json")["abstain"]["met_target"]
        note = "" if met else "; the setting missed its target on validation"
        read = lookup_cli.shown(matches["confidence"].iloc[0])
        assert f"no confident match (probability right {read}{note})" in printed
    reverse = lookup_cli.main(lookup_cli.parse_args(["--reverse", "--model", "student", label, "-k", "2"]))
    assert "alias" in reverse.columns and len(reverse) == 2
    printed = capsys.readouterr().out
    assert "no confident match" not in printed  # nothing judges label -> alias answers
    first = reverse.iloc[0]
    assert f"1. {lookup_cli.shown(first['score'])}  {first['alias']}  (alias of {first['label']})  [{first['qid']}]" \
        in printed
    unsure = lookup_cli.main(lookup_cli.parse_args([alias, "--min-score", "1.01"]))
    assert not unsure["confident"].any()
    # a runner-up is never a confident match, even where its score clears the setting
    sure = lookup_cli.main(lookup_cli.parse_args([alias, "-k", "3", "--min-score", "0"]))
    assert sure["confident"].tolist() == [True, False, False]
    assert "no confident match (best score" in capsys.readouterr().out


def test_a_printed_score_below_1_never_reads_as_1():
    assert lookup_cli.shown(0.5) == "0.500" and lookup_cli.shown(1.0) == "1.000"
    assert lookup_cli.shown(0.99998) == "0.99998" and lookup_cli.shown(0.9996) == "0.9996"
    assert lookup_cli.shown(0.99949) == "0.999"


def test_int8_student_runs_int8_linears_and_ranks_like_float32(in_pipeline_home):
    split = load_split()
    float32 = load_dense("student", "cpu", int8=False)
    int8 = load_dense("student", "cpu", int8=True)
    linears = [m for m in int8.searcher.model.modules() if isinstance(m, torch.nn.Linear)]
    assert not linears and is_int8(int8.searcher.model)
    # The float32 model is untouched.
    assert any(isinstance(m, torch.nn.Linear) for m in float32.searcher.model.modules())
    aliases = split.test["alias"].tolist()
    cosines = np.sum(encode(float32.searcher.model, aliases) * encode(int8.searcher.model, aliases), axis=1)
    assert cosines.min() > 0.95
    assert int8.abstain == float32.abstain  # the float32 model's calibration: only the query encoder changed
    assert int8.labels_for(aliases, 5)[1].shape == (len(aliases), 5)


def test_int8_is_refused_on_a_gpu_with_the_fix(in_pipeline_home, monkeypatch):
    model = load_dense("student", "cpu", int8=False).searcher.model
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda", 0)))
    with pytest.raises(UserError, match="int8 runs on a CPU only .* drop --int8, or pass --device cpu"):
        quantize_int8(model)


def test_int8_schemes_quantise_as_named(in_pipeline_home):
    model = load_dense("student", "cpu", int8=False).searcher.model

    def layer0(quantized, part: str):
        return dict(quantized.named_modules())[f"0.model.encoder.layer.0.{part}"]

    def weight_error(quantized) -> float:
        weight = layer0(quantized, "intermediate.dense").weight()
        return float((weight.dequantize() - layer0(model, "intermediate.dense").weight.detach()).abs().mean())

    schemes = {scheme: quantize_int8(model, scheme) for scheme in INT8_SCHEMES}
    assert layer0(schemes["per-channel"], "output.dense").weight().qscheme() == torch.per_channel_affine
    assert layer0(schemes["per-tensor"], "output.dense").weight().qscheme() == torch.per_tensor_affine
    mixed = schemes["per-channel-ffn-float32"]
    assert type(layer0(mixed, "output.dense")) is torch.nn.Linear  # the feed-forward output stays float32
    assert layer0(mixed, "attention.output.dense").weight().qscheme() == torch.per_channel_affine
    # A scale per output row fits each row's range, so its weights come back closer than one scale per matrix.
    assert weight_error(schemes["per-channel"]) < weight_error(schemes["per-tensor"])
    with pytest.raises(UserError, match="unknown int8 scheme 'int4'; choose one of per-channel, per-tensor"):
        quantize_int8(model, "int4")


def test_int8_activations_take_8_bits_where_the_cpu_has_vnni(in_pipeline_home, monkeypatch):
    model = load_dense("student", "cpu", int8=False).searcher.model
    aliases = load_split().test["alias"].tolist()
    reference = encode(model, aliases)

    def error(quantized) -> float:
        return float(np.mean(1 - np.sum(encode(quantized, aliases) * reference, axis=1)))

    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: True)
    full, reduced = quantize_int8(model), quantize_int8(model, activation_bits=7)
    assert {type(m) for m in full.modules()} >= {FullRangeDynamicLinear}
    assert FullRangeDynamicLinear not in {type(m) for m in reduced.modules()} and is_int8(reduced)
    if cpu_has_vnni():  # the 8-bit kernel is only safe, so only run, where the CPU has VNNI
        assert error(full) < error(reduced)  # half the activations' rounding step
    monkeypatch.setattr(quantize, "cpu_has_vnni", lambda: False)
    assert FullRangeDynamicLinear not in {type(m) for m in quantize_int8(model).modules()}
    with pytest.raises(UserError, match="8-bit int8 activations need a CPU with AVX-512 VNNI .* use 7"):
        quantize_int8(model, activation_bits=8)
    with pytest.raises(UserError, match="int8 activations take 7 or 8 bits, not 4"):
        quantize_int8(model, activation_bits=4)


def test_vnni_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_has_vnni(cpuinfo) == (torch.backends.quantized.engine in ("x86", "fbgemm"))
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx_vnni\n")
    assert not cpu_has_vnni(cpuinfo)
    assert not cpu_has_vnni(tmp_path / "missing")


def is_int8(model) -> bool:
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def test_the_student_runs_int8_on_a_cpu_by_default(in_pipeline_home):
    assert is_int8(load_dense("student", "cpu").searcher.model)
    assert not is_int8(load_dense("teacher", "cpu").searcher.model)
    # Artifacts (indexes, calibration) are made by the float32 model.
    assert not is_int8(load_dense("student", "cpu", int8=False).searcher.model)
    assert lookup_cli.parse_args(["x"]).int8 is None and lookup_cli.parse_args(["x", "--no-int8"]).int8 is False
    assert evaluate_student.parse_args([]).int8 == ["student"]
    assert evaluate_student.parse_args(["--systems", "student_hybrid"]).int8 == ["student"]
    assert evaluate_student.parse_args(["--systems", "teacher", "tfidf"]).int8 == []
    assert evaluate_student.parse_args(["--int8", "none"]).int8 == []
    assert evaluate_student.parse_args(["--int8", "teacher", "student"]).int8 == ["teacher", "student"]


def test_evaluator_refuses_none_beside_a_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_student.parse_args(["--int8", "none", "student"])
    assert exit_info.value.code == 2 and "--int8 none runs every model in float32" in capsys.readouterr().err


def test_lookup_and_evaluator_take_int8(in_pipeline_home, capsys):
    alias = load_split().train["alias"].iloc[0]
    for flags in (["--int8"], ["--no-int8"], ["--int8-scheme", "per-channel-ffn-float32"]):
        matches = lookup_cli.main(lookup_cli.parse_args([alias, "--model", "student", *flags, "-k", "2"]))
        assert len(matches) == 2 and matches["score"].is_monotonic_decreasing
    report = evaluate_student.main(evaluate_student.parse_args(
        ["--systems", "teacher", "student", "--latency-queries", "3", "--int8-scheme", "per-tensor",
         "--output-dir", str(in_pipeline_home / "int8_eval")]))
    assert report["int8"] == ["student"] and report["int8_scheme"] == "per-tensor" and 0 <= report["agreement"] <= 1
    bits = report["int8_activation_bits"]
    assert bits == (8 if cpu_has_vnni() else 7)
    assert f"In int8 (per-tensor, {bits}-bit activations): student." in (
        in_pipeline_home / "int8_eval/evaluation.md").read_text()


def test_a_query_without_a_match_prints_so(capsys):
    lookup_cli.print_matches(pd.DataFrame([no_match("x", "label")]), "label")
    assert capsys.readouterr().out == "\n'x'\n  no match\n"


def test_lookup_batch_keeps_every_input_row_in_order_and_writes_no_formulas(in_pipeline_home, tmp_path):
    queries = tmp_path / "q.csv"
    names = ["UdeG", " ", "MIT", None, "=HYPERLINK(\"x\")", "UdeG"]
    pd.DataFrame({"name": names}).to_csv(queries, index=False)
    out = tmp_path / "out.csv"
    lookup_cli.main(lookup_cli.parse_args(["--batch", str(queries), "--query-col", "name", "-k", "2",
                                           "--output", str(out), "--batch-size", "4"]))
    result = pd.read_csv(out, keep_default_na=False)
    assert list(result.columns) == ["input_row", "query", "rank", "qid", "label", "score", "confidence", "confident"]
    assert (result["confidence"] == "").tolist() == [False, True, True, False, True, True, False, True, False, True]
    assert result["input_row"].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 5]
    blank = result[result["input_row"].isin([1, 3])]
    assert blank["query"].tolist() == ["", ""] and blank["rank"].tolist() == ["", ""]
    assert not blank["confident"].any() and (blank["label"] == "").all()
    assert result.loc[result["input_row"] == 4, "query"].tolist() == ["'=HYPERLINK(\"x\")"] * 2
    assert not result.drop(columns="score").map(lambda cell: str(cell).startswith(("=", "+", "-", "@"))).any().any()
    first, last = (result[result["input_row"] == row].drop(columns="input_row").reset_index(drop=True)
                   for row in (0, 5))
    pd.testing.assert_frame_equal(first, last)  # the same query in another batch gets the same rows
    # the rows of the Python API's lookup of the whole column: each distinct text searched once
    api = load_retriever("teacher").lookup(pd.Series(names).fillna("").str.strip(), k=2, batch_size=4)
    assert result["input_row"].tolist() == api["input_row"].tolist()
    assert result["label"].tolist() == api["label"].tolist() and result["qid"].tolist() == api["qid"].tolist()
    assert result["confident"].tolist() == api["confident"].tolist()
    with pytest.raises(UserError, match="has no column 'query'; found \\['name'\\]"):
        lookup_cli.main(lookup_cli.parse_args(["--batch", str(queries)]))


def test_a_batch_lookup_keeps_input_columns_and_writes_the_format_its_output_names(in_pipeline_home, tmp_path):
    queries = tmp_path / "q.csv"
    pd.DataFrame({"id": ["a7", "b2", "c9"], "label": ["x", "y", "z"],
                  "name": ["=MIT", "UdeG", ""]}).to_csv(queries, index=False)
    flags = ["--batch", str(queries), "--query-col", "name", "-k", "2", "--keep-columns", "id", "label"]
    tables = {}
    for suffix in ("parquet", "tsv", "csv", "xlsx"):
        lookup_cli.main(lookup_cli.parse_args([*flags, "--output", str(tmp_path / f"out.{suffix}")]))
    tables["parquet"] = pd.read_parquet(tmp_path / "out.parquet")
    tables["tsv"] = pd.read_csv(tmp_path / "out.tsv", sep="\t", keep_default_na=False)
    tables["csv"] = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    tables["xlsx"] = pd.read_excel(tmp_path / "out.xlsx", dtype=object).fillna("")
    for table in tables.values():
        # a kept column named like an output column gets an input_ prefix
        assert list(table.columns[:4]) == ["input_row", "id", "input_label", "query"]
        assert table["id"].tolist() == ["a7", "a7", "b2", "b2", "c9"]
        assert table["input_label"].tolist() == ["x", "x", "y", "y", "z"]
    assert tables["parquet"]["query"].iloc[0] == "=MIT"  # as it is: no spreadsheet reads a parquet file
    assert {tables[kind]["query"].iloc[0] for kind in ("csv", "tsv", "xlsx")} == {"'=MIT"}
    # a batch in an Excel file reads as the same batch in a CSV
    plain = pd.read_csv(queries).replace({"=MIT": "MIT"})  # pandas would write "=MIT" to Excel as a formula
    plain.to_csv(tmp_path / "plain.csv", index=False)
    plain.to_excel(tmp_path / "plain.xlsx", index=False)
    for name in ("plain.csv", "plain.xlsx"):
        lookup_cli.main(lookup_cli.parse_args(["--batch", str(tmp_path / name), *flags[2:],
                                               "--output", str(tmp_path / f"from_{name}.csv")]))
    assert (tmp_path / "from_plain.xlsx.csv").read_text() == (tmp_path / "from_plain.csv.csv").read_text()
    assert tables["parquet"]["label"].tolist() == tables["csv"]["label"].tolist()
    missing = r"q\.csv has no column\(s\) \['country'\] to keep; found \['id', 'label', 'name'\]"
    with pytest.raises(UserError, match=missing):
        lookup_cli.main(lookup_cli.parse_args([*flags[:4], "--keep-columns", "country"]))


def test_an_excel_output_that_could_overflow_a_sheet_is_refused_before_any_lookup(tmp_path):
    args = lookup_cli.parse_args(["--batch", "q.csv", "--output", str(tmp_path / "out.xlsx"), "-k", "5"])
    lookup_cli.check_output_fits(args, 1000)
    with pytest.raises(UserError, match=r"209716 queries with -k 5 can give more rows than an Excel sheet holds "
                                        r"\(1048576 with the header\); write .*out\.csv or \.parquet"):
        lookup_cli.check_output_fits(args, 209_716)


def test_an_interrupted_batch_lookup_resumes_where_it_stopped(in_pipeline_home, tmp_path, monkeypatch, caplog):
    queries = tmp_path / "q.csv"
    pd.DataFrame({"name": ["UdeG", "MIT", "", "Batman Universitesi", "MIT", "Uni Wien", "Harvard"]}).to_csv(
        queries, index=False)
    flags = ["--batch", str(queries), "--query-col", "name", "-k", "2", "--batch-size", "2"]
    whole = tmp_path / "whole.csv"
    lookup_cli.main(lookup_cli.parse_args([*flags, "--output", str(whole)]))
    assert not (tmp_path / "whole.csv.partial").exists()  # the parts go once the CSV is written

    output, parts = tmp_path / "out.csv", tmp_path / "out.csv.partial"
    save_part = lookup_cli.save_part

    def stop_after_two(folder, start, block):
        if len(list(folder.glob("rows-*.parquet"))) == 2:
            raise KeyboardInterrupt
        save_part(folder, start, block)

    monkeypatch.setattr(lookup_cli, "save_part", stop_after_two)
    with pytest.raises(SystemExit) as exit_info:  # Ctrl-C, as the script reports it
        run_main(lookup_cli.main, lookup_cli.parse_args([*flags, "--output", str(output)]), resumable=True)
    assert exit_info.value.code == 130
    assert "interrupted; rerun the same command to go on from what was saved" in caplog.text
    # each distinct text is looked up once: UdeG, MIT | Batman Universitesi, Uni Wien | Harvard
    assert not output.exists() and sorted(path.name for path in parts.glob("rows-*")) == [
        "rows-000000000.parquet", "rows-000000002.parquet"]
    monkeypatch.setattr(lookup_cli, "save_part", save_part)

    # another lookup's flags do not continue these parts
    with pytest.raises(UserError, match=r"the parts in .*out.csv.partial belong to another lookup \(\{'k': \(2, 3\)\}"):
        lookup_cli.main(lookup_cli.parse_args([*flags, "-k", "3", "--output", str(output), "--resume"]))

    looked_up = []
    lookup = Retriever.lookup
    monkeypatch.setattr(Retriever, "lookup", lambda self, texts, *a, **kw: looked_up.append(list(texts))
                        or lookup(self, texts, *a, **kw))
    with caplog.at_level(logging.INFO):
        lookup_cli.main(lookup_cli.parse_args([*flags, "--output", str(output)]))  # the same command again
    assert "resuming: 2 of 3 batches already looked up" in caplog.text
    assert looked_up == [["Harvard"]]  # only the batch without a part
    assert output.read_bytes() == whole.read_bytes() and not parts.exists()


def test_a_batch_lookup_keeps_the_parts_of_one_like_it_and_clears_those_of_another(tmp_path, caplog):
    folder = partial_dir(tmp_path / "out.csv")
    assert folder == tmp_path / "out.csv.partial"
    prepare_parts(folder, resume=False, identity={"k": 2}, is_main=True)
    save_part(folder, 0, pd.DataFrame({"input_row": [0], "query": ["MIT"]}))
    assert done_starts(folder) == {0}
    prepare_parts(folder, resume=True, identity={"k": 2}, is_main=True)  # the same lookup: its parts are kept
    assert done_starts(folder) == {0}
    prepare_parts(folder, resume=False, identity={"k": 2}, is_main=True)  # without --resume too
    assert done_starts(folder) == {0}
    prepare_parts(folder, resume=False, identity={"k": 5}, is_main=False)  # another process leaves them be
    assert done_starts(folder) == {0}
    with caplog.at_level(logging.INFO):
        prepare_parts(folder, resume=False, identity={"k": 5}, is_main=True)
    assert "starting over: the parts in" in caplog.text and "{'k': (2, 5)}" in caplog.text
    assert done_starts(folder) == set() and read_json(folder / "run.json") == {"k": 5}
    with caplog.at_level(logging.WARNING):
        prepare_parts(folder, resume=True, identity={"k": 5}, is_main=True)
    assert "--resume given but" in caplog.text and "holds no part of a lookup; starting fresh" in caplog.text


def test_resume_is_for_a_batch_lookup(capsys):
    with pytest.raises(SystemExit) as exit_info:
        lookup_cli.parse_args(["MIT", "--resume"])
    assert exit_info.value.code == 2 and "--resume continues an interrupted --batch lookup" in capsys.readouterr().err


@pytest.mark.parametrize(("file", "content", "message"), [
    ("nope.csv", None, r"query file not found: .*nope\.csv\. Check the --batch path"),
    ("empty.csv", "", r"empty\.csv is empty: it needs a header row and at least one row of queries"),
    ("header.csv", "query\n", r"header\.csv is empty: it needs at least one row of queries"),
    ("names.xls", "", r"unsupported file type '\.xls'; use \.parquet, \.csv, \.tsv or \.xlsx \(save an older"),
    ("names.csv", "name\nMIT\n", r"has no column 'query'; found \['name'\]\. Name the right one with --query-col"),
    ("gold.csv", "query\nMIT\n", r"has no column 'label'; found \['query'\]\. Name the right one with --gold-col"),
])
def test_a_wrong_batch_file_is_told_before_any_model_loads(home, tmp_path, file, content, message):
    path = tmp_path / file
    if content is not None:
        path.write_text(content)
    # ``home`` holds no model: the file's problem is what the user hears first
    with pytest.raises(UserError, match=message):
        lookup_cli.main(lookup_cli.parse_args(["--batch", str(path), "--gold-col", "label"]))


def test_a_batch_with_its_gold_labels_is_scored_as_the_evaluator_scores_test(evaluation, in_pipeline_home, tmp_path,
                                                                             caplog):
    test = load_split().test.reset_index(drop=True)
    n = len(test)
    # Two more rows, left out of the figures: one without a gold label, one without a query.
    table = pd.DataFrame({"name": [*test["alias"], "MIT", ""], "expected": [*test["label"].str.upper(), "", "x"]})
    table.to_csv(tmp_path / "checked.csv", index=False)
    out = tmp_path / "out.csv"
    caplog.set_level("INFO")
    lookup_cli.main(lookup_cli.parse_args(["--batch", str(tmp_path / "checked.csv"), "--query-col", "name",
                                           "--gold-col", "expected", "-k", "5", "--output", str(out)]))
    result = pd.read_csv(out)
    assert list(result.columns)[-1] == "correct"
    assert result.loc[result["input_row"] >= n, "correct"].isna().all()
    scored = result[result["input_row"] < n]
    assert scored["correct"].notna().all()
    assert (scored["correct"] == [fold(label) == fold(gold) for label, gold in
                                  zip(scored["label"], table["expected"][scored["input_row"]], strict=True)]).all()
    top = scored[scored["rank"] == 1]
    rerank = evaluation["systems"]["rerank"]
    assert top["correct"].astype(bool).mean() == pytest.approx(rerank["top1"])
    assert scored.groupby("input_row")["correct"].any().mean() == pytest.approx(rerank["top5"])
    kept = top["confident"].astype(bool)
    if rerank["abstain"]["met_target"]:
        assert kept.mean() == pytest.approx(rerank["abstain"]["coverage"])
        assert top.loc[kept, "correct"].astype(bool).mean() == pytest.approx(rerank["abstain"]["precision"])
    else:  # the evaluator reports a setting that missed its target; lookups let it vouch for nothing
        assert not kept.any() and "; none flagged confident" in caplog.text
    assert (f"against --gold-col 'expected', {n} rows (2 without a query or a gold label left out): "
            f"top-1 {rerank['top1']:.1%}, the gold label in the top 5 {rerank['top5']:.1%}") in caplog.text


def test_gold_figures_count_the_confident_answers_and_leave_out_rows_without_a_label():
    from alias_label.search.batch import against_gold

    # Four input rows, two candidates each, then a blank query's one row.
    table = pd.DataFrame({"input_row": [0, 0, 1, 1, 2, 2, 3, 3, 4], "rank": pd.array([1, 2] * 4 + [None], "Int64"),
                          "label": ["Ab", "Cd", "Ef", "Ab", "Gh", "Ij", "Kl", "Mn", ""],
                          "confident": [True, False, True, False, False, False, True, False, False]})
    scored, figures = against_gold(table, ["ab", "Ab", "Ïj", "", "Ab"])
    assert scored["correct"].tolist() == [True, False, False, True, False, True, pd.NA, pd.NA, pd.NA]
    # Rows 0-2 are scored (3 has no gold label, 4 no query): right at top-1 only row 0, found in rows
    # 0-2; rows 0 and 1 confident, one of them right.
    assert figures == {"rows": 3, "left_out": 2, "top1": pytest.approx(1 / 3), "found": 1.0,
                       "confident": pytest.approx(2 / 3), "confident_right": 0.5,
                       "interval95": pytest.approx([0.0945, 0.9055], abs=1e-4)}


def test_spreadsheet_safe_quotes_formula_cells_only():
    table = pd.DataFrame({"text": ["=1+1", "+44", "-x", "@SUM", "plain", "\tTAB"], "score": [-0.5, 1, 2, 3, 4, 5]})
    safe = spreadsheet_safe(table)
    assert safe["text"].tolist() == ["'=1+1", "'+44", "'-x", "'@SUM", "plain", "'\tTAB"]
    assert safe["score"].tolist() == table["score"].tolist()
    assert table["text"].iloc[0] == "=1+1"  # the input is left as it was


def test_lookup_interactive(in_pipeline_home, monkeypatch, capsys):
    answers = iter(["MIT", ""])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    lookup_cli.main(lookup_cli.parse_args(["-k", "1"]))
    assert "'MIT'" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    ([""], "the query is empty"),
    (["\u200b "], "the query is empty"),
    (["--batch", "q.csv", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch", "q.csv", "--output", "out.json"], "--output out.json: name a .csv, .tsv, .xlsx, .parquet file"),
    (["MIT", "--keep-columns", "id"], "--keep-columns copies columns of a --batch file; give one"),
    (["MIT", "--gold-col", "label"], "--gold-col scores the alias -> label answers of a --batch file"),
    (["--batch", "q.csv", "--gold-col", "label", "--reverse"], "give one, without --reverse"),
])
def test_lookup_cli_rejects_an_empty_query_or_batch(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        lookup_cli.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_lookup_cli_names_the_fix_for_a_folder_with_no_model(home, caplog):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lookup_cli.main, lookup_cli.parse_args(["--model", str(home / "giant"), "x"]))
    assert exit_info.value.code == 2
    assert f"no trained model at {home / 'giant'}. Build it with: python scripts/train_alias_label.py --output" in (
        caplog.text)


def test_lookup_cli_missing_model_exits_2_without_a_traceback(home, pipeline_home):
    import shutil

    shutil.copytree(pipeline_home / "data", home / "data")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts/test_lookup.py"), "MIT"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no trained model at" in result.stdout
    assert "Build it with: python scripts/train_alias_label.py" in result.stdout


def test_lookup_cli_names_the_fix_for_a_damaged_index(home, pipeline_home, caplog):
    import shutil

    for folder in ("data", "faiss", "models"):
        shutil.copytree(pipeline_home / folder, home / folder)
    index_file = home / "faiss/labels.index"
    index_file.write_bytes(index_file.read_bytes()[:64])
    with pytest.raises(SystemExit) as exit_info:
        run_main(lookup_cli.main, lookup_cli.parse_args(["MIT"]))
    assert exit_info.value.code == 2
    assert f"{index_file} is damaged" in caplog.text and "Rebuild it with: python scripts/train_alias_label.py" in (
        caplog.text)


@pytest.mark.parametrize("name", ["alias-label-inference-teacher", "alias-label-inference-distilled"])
def test_notebooks_execute(evaluation, in_pipeline_home, name):
    import nbformat
    from nbclient import NotebookClient

    path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "clear outputs in git"
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                   ).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "labels" in text and "aliases indexed" in text and "top-1 on these" in text and "confident: " in text
    assert "answers to test aliases are confident and wrong" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)
