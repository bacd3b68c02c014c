"""Each benchmark script runs end to end on a tiny setting and writes its JSON (no timings asserted)."""

from __future__ import annotations

import json
import shutil

import distill_sweep
import encode_batch
import encode_memory
import generated_scale
import gpu_throughput
import hnsw_ef_sweep
import index_scale
import int8_schemes
import label_queries
import lookup_overhead
import numpy as np
import other_kind
import pandas as pd
import pytest
import query_latency
import rerank_latency
import serve_load
import torch

from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.io import read_json
from alias_label.search import rerank
from alias_label.search.retriever import load_dense, load_retriever

GPU_KEYS = {"device", "encode_sentences_per_min", "baseline_encode_sentences_per_min", "train_pairs_per_s",
            "baseline_train_pairs_per_s"}


def test_gpu_throughput_smoke_writes_the_required_keys(tmp_path):
    figures = gpu_throughput.main(gpu_throughput.parse_args(["--smoke", "--device", "cpu",
                                                             "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "gpu_throughput_smoke.json")
    assert GPU_KEYS <= set(saved) and saved["device"] == "cpu"
    assert saved["check_top1_agreement"] == 1.0 and saved["check_max_one_minus_cosine"] < 1e-5
    assert {key: saved[key] for key in GPU_KEYS} == {key: figures[key] for key in GPU_KEYS}
    assert saved["command"].startswith("python") and "cpu_count" in saved["machine"]


def test_index_scale_reports_every_type(in_pipeline_home, tmp_path):
    argv = ["--sizes", "real", "3000", "--dims", "32", "64", "--types", "flat", "hnsw", "ivf", "ivfpq", "flat-int8",
            "flat-int4", "--queries", "20", "--results-dir", str(tmp_path)]
    index_scale.main(index_scale.parse_args(argv))
    rows = read_json(tmp_path / "index_scale.json")["rows"]
    assert len(rows) == 2 * 2 * 6
    for row in rows:
        assert 0 <= row["recall_at_10"] <= 1 and row["p95_ms"] >= row["p50_ms"]
    flat = [row for row in rows if row["type"] == "flat"]
    assert all(row["recall_at_10"] == 1.0 and row["memory_vs_flat"] > 0.9 for row in flat)
    assert all(row["memory_vs_flat"] < 0.3 for row in rows if row["type"] == "flat-int8")
    assert all(row["memory_vs_flat"] < 0.2 for row in rows if row["type"] == "flat-int4")


def test_query_latency_profiles_both_models(in_pipeline_home, tmp_path):
    figures = query_latency.main(query_latency.parse_args(["--queries", "5", "--depth-queries", "3",
                                                           "--results-dir", str(tmp_path)]))
    for role in ("teacher", "student", "student_int8"):
        parts = figures[f"{role}_threads1"]
        assert {"tokenize", "forward", "forward_traced", "encode", "search_flat", "search_hnsw",
                "lookup_flat"} <= set(parts)
        assert parts["lookup_flat"]["p50_ms"] >= parts["search_flat"]["p50_ms"]
    for student, mode in (("student", "flat"), ("student_int8", "hnsw")):
        assert figures[f"{student}_speedup_lookup_{mode}_threads1"] == pytest.approx(
            figures["teacher_threads1"][f"lookup_{mode}"]["p50_ms"]
            / figures[f"{student}_threads1"][f"lookup_{mode}"]["p50_ms"])
    # The smoke teacher has 2 layers: one row per depth and precision, each with its speed-up over the teacher.
    depths = figures["depth_sweep"]
    assert set(depths) == {"teacher", "layers2_float32", "layers2_int8", "layers1_float32", "layers1_int8"}
    for row in depths.values():
        assert min(row["lookup_flat_p50_ms"], row["lookup_hnsw_p50_ms"]) >= row["encode_p50_ms"]
    for key in set(depths) - {"teacher"}:
        for step in ("encode", "lookup_flat", "lookup_hnsw"):
            assert depths[key][f"speedup_{step}"] == pytest.approx(
                depths["teacher"][f"{step}_p50_ms"] / depths[key][f"{step}_p50_ms"])
    assert (tmp_path / "query_latency.json").exists()


def test_int8_schemes_reports_quality_and_speed_of_each(in_pipeline_home, tmp_path):
    figures = int8_schemes.main(int8_schemes.parse_args(["--queries", "4", "--results-dir", str(tmp_path)]))
    precisions = int8_schemes.precisions()
    assert precisions["float32"] is None and precisions["per-channel-act7"] == ("per-channel", 7)
    names = {f"{role}_{precision}" for role in ("teacher", "student") for precision in precisions}
    quality, split = figures["quality"], load_split()
    assert set(quality) == names
    for part in ("val", "test"):
        assert quality["teacher_float32"][f"{part}_agreement_with_teacher_float32"] == 1.0
        assert quality["student_float32"][f"{part}_agreement_with_own_float32"] == 1.0
        # The agreement: the float32 student's top-1 against the float32 teacher's, as retrieved here.
        aliases = getattr(split, part)["alias"]
        top1 = {role: load_dense(role, "cpu", int8=False).labels_for(aliases, 1)[1][:, 0]
                for role in ("teacher", "student")}
        assert quality["student_float32"][f"{part}_agreement_with_teacher_float32"] == pytest.approx(
            float(np.mean(top1["student"] == top1["teacher"])))
    assert all(0 <= value <= 1 for row in quality.values() for value in row.values())
    speed = figures["speed"]
    assert set(speed) == {"teacher_float32", *(f"student_{p}" for p in precisions)}
    assert speed["teacher_float32"]["speedup_encode"] == 1.0
    for row in speed.values():
        assert row["speedup_encode"] == pytest.approx(speed["teacher_float32"]["encode_p50_ms"] / row["encode_p50_ms"])
    layers = figures["student_layers"]
    assert read_json(tmp_path / f"int8_schemes_layers{layers}.json")["quality"] == json.loads(json.dumps(quality))


def test_encode_batch_times_each_size_against_the_baseline_with_the_teacher(in_pipeline_home, tmp_path):
    figures = encode_batch.main(encode_batch.parse_args(["--sizes", "4", "16", "--texts", "40", "--rounds", "2",
                                                         "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "encode_batch.json")
    assert saved["sizes"] == figures["sizes"]
    assert saved["model"] == str(in_pipeline_home / "models/trained/alias_label_teacher")
    assert set(saved["sizes"]) == {"4", "16", "128"} and saved["texts"] == 40
    baseline = saved["sizes"]["128"]["texts_per_s"]
    for size in saved["sizes"].values():
        assert len(size["rounds_texts_per_s"]) == 2
        assert size["texts_per_s"] == pytest.approx(np.median(size["rounds_texts_per_s"]))
        assert size["vs_baseline"] == pytest.approx(size["texts_per_s"] / baseline)


def test_cross_encoder_speed_times_both_ways_of_training_and_scoring(in_pipeline_home, tiny_model, tmp_path):
    import cross_encoder_speed

    figures = cross_encoder_speed.main(cross_encoder_speed.parse_args(
        ["--base", str(tiny_model), "--aliases", "8", "--negatives", "2", "--score-aliases", "6", "--batch-size", "4",
         "--rounds", "2", "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "cross_encoder_speed.json")
    assert saved["training"] == figures["training"] and saved["training"]["pairs"] == 8 * 3
    for part, (ours, baseline) in {"training": ("length buckets", "library"),
                                   "scoring": ("sorted by length", "in their order")}.items():
        ways = saved[part]["ways"]
        assert saved[part]["speedup"] == pytest.approx(ways[baseline]["seconds"] / ways[ours]["seconds"])
        for result in ways.values():
            assert len(result["rounds_seconds"]) == 2 and result["seconds"] == min(result["rounds_seconds"])
            assert result["padding_ratio"] >= 1.0
        assert ways[ours]["padding_ratio"] <= ways[baseline]["padding_ratio"]
    # Sorting only regroups the pairs: every pair keeps its score.
    assert saved["scoring"]["pairs"] > 0 and saved["scoring"]["max_score_difference"] < 1e-4


def test_encode_memory_compares_three_approaches(tmp_path):
    figures = encode_memory.main(encode_memory.parse_args(["--labels", "3000", "--results-dir", str(tmp_path)]))
    assert [row["approach"] for row in figures["rows"]] == ["naive", "streamed-flat", "streamed-ivfpq"]
    assert all(row["rows"] == 3000 for row in figures["rows"])
    assert set(figures["streamed_vs_naive"]) == {"streamed-flat", "streamed-ivfpq"}
    assert figures["dim"] == 384


def test_hnsw_ef_sweep_raises_recall_with_ef(in_pipeline_home, tmp_path):
    figures = hnsw_ef_sweep.main(hnsw_ef_sweep.parse_args(["--size", "3000", "--dim", "32", "--ef", "4", "64",
                                                           "--queries", "20", "--results-dir", str(tmp_path)]))
    low, high = figures["rows"]
    assert high["recall_at_10"] >= low["recall_at_10"] and high["recall_at_10"] > 0.9
    assert (tmp_path / "hnsw_ef_sweep.json").exists()


def test_distill_sweep_trains_each_variant_and_part(in_pipeline_home, tmp_path):
    variants = json.dumps([{"epochs": 1, "docs": False, "aug": False, "layers": 2}, {"epochs": 1, "kl": 1, "cand": 3},
                           {"epochs": 1, "seed": 5, "noise": 1, "kept": [1]}])
    figures = distill_sweep.main(distill_sweep.parse_args(["--variants", variants, "--device", "cpu", "--part", "0",
                                                           "--parts", "2", "--results-dir", str(tmp_path)]))
    # Part 0 of 2 runs the first and third variants, with the defaults filled in.
    assert [(row["variant"]["layers"], row["variant"]["kept"], row["variant"]["aug"], row["variant"]["noise"],
             row["variant"]["lr"], row["variant"]["seed"]) for row in figures["results"]] == [
        (2, None, False, 0, 1e-3, 13), (3, [1], True, 1, 1e-3, 5)]
    assert figures["teacher"]["val"]["agreement"] == 1.0
    for row in figures["results"]:
        assert len(row["val_by_epoch"]) == 1 and row["val"] == row["val_by_epoch"][-1]
        assert all(0 <= row[split][key] <= 1 for split in ("val", "test") for key in ("top1", "agreement"))
    assert read_json(tmp_path / "distill_sweep_part0.json")["results"] == figures["results"]


def test_distill_sweep_kl_over_candidates_matches_full_kl_when_they_are_all_labels():
    sweep = distill_sweep.Sweep.__new__(distill_sweep.Sweep)
    sweep.label_vectors = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    teacher, student = (torch.nn.functional.normalize(torch.randn(3, 4), dim=-1) for _ in range(2))
    variant = {**distill_sweep.DEFAULTS, "mse": 0.0, "kl": 1.0}
    every_label = torch.arange(5).repeat(3, 1)
    full = sweep.loss(variant, student, teacher, None)
    assert sweep.loss(variant, student, teacher, every_label) == pytest.approx(full.item(), rel=1e-5)
    assert sweep.loss(variant, teacher, teacher, None) == pytest.approx(0.0, abs=1e-6)


def test_candidate_recall_grows_with_k_and_the_union_holds_every_channel(in_pipeline_home, tmp_path):
    import candidate_recall

    figures = candidate_recall.main(candidate_recall.parse_args(["--ks", "1", "5", "20", "--results-dir",
                                                                 str(tmp_path)]))
    for part in ("val", "test"):
        table = figures[part]["recall"]
        for name in ("dense", "tfidf", "tfidf_query_translit", "acronym", "union"):
            assert table[1][name]["all"] <= table[5][name]["all"] <= table[20][name]["all"]
        for k in (1, 5, 20):
            assert table[k]["union"]["all"] >= max(table[k][c]["all"] for c in ("dense", "tfidf", "acronym"))
            # The readings from the starts of words only add to the initialisms' candidates.
            assert table[k]["acronym"]["all"] >= table[k]["acronym_initialisms"]["all"]
            assert table[k]["union_initialisms"]["all"] >= table[k]["acronym_initialisms"]["all"]
            assert table[k]["union"]["mean_candidates"] >= table[k]["union_initialisms"]["mean_candidates"]
    assert read_json(tmp_path / "candidate_recall.json")["ks"] == [1, 5, 20]


def test_reverse_search_compares_the_lexical_sides_and_its_default_is_the_lookups(in_pipeline_home, tmp_path):
    from dataclasses import replace

    import reverse_search

    from alias_label.data.kinds import pair_kinds
    from alias_label.search.scoring import label_to_alias_gold, label_to_alias_recall

    figures = reverse_search.main(reverse_search.parse_args(["--tag", "other", "--results-dir", str(tmp_path)]))
    assert read_json(tmp_path / "reverse_search_other.json")["test"] == figures["test"]
    sides = ("as written", "aliases transliterated", "both transliterated")
    split = load_split()
    for part in ("val", "test"):
        table = figures[part]["recall10"]
        assert set(table) == {"dense", *(f"{mode}, {side}" for mode in ("tfidf", "hybrid") for side in sides),
                              f"{reverse_search.FORWARD}, both transliterated"}
        assert all(0 <= value <= 1 for row in table.values() for value in row.values())
        # The default row is what a reverse lookup gives.
        pairs = split.pairs(part)
        kinds = pair_kinds(pairs)
        labels, gold = label_to_alias_gold(split, pairs, kinds)
        ranked = load_retriever("teacher").aliases_for(labels, 10)[1]
        assert table["hybrid, both transliterated"] == pytest.approx(label_to_alias_recall(ranked, gold))
        forward = replace(load_retriever("teacher", mode="hybrid").searcher, reverse=None)
        assert table[f"{reverse_search.FORWARD}, both transliterated"] == pytest.approx(
            label_to_alias_recall(forward.aliases_for(labels, 10)[1], gold))


def test_rerank_ablation_refits_without_each_group(in_pipeline_home, tmp_path):
    import rerank_ablation

    from alias_label.search.features import GROUPS

    figures = rerank_ablation.main(rerank_ablation.parse_args(["--latency-queries", "3", "--tag", "other",
                                                               "--results-dir", str(tmp_path)]))
    assert read_json(tmp_path / "rerank_ablation_teacher_other.json")["variants"] == figures["variants"]
    # The pipeline's teacher has a cross-encoder, so its two features are a group of their own.
    assert set(figures["variants"]) == {"all", *(f"without {group}" for group in [*GROUPS, "cross-encoder"])}
    assert figures["variants"]["all"]["val"] == read_json(
        in_pipeline_home / "models/trained/alias_label_teacher/reranker.json")["val_out_of_fold"]
    for row in figures["variants"].values():
        assert 0 <= row["val"]["top1"] <= row["val"]["candidate_recall"] <= 1
        assert row["test"]["n"] == figures["hybrid"]["test"]["n"]
    assert set(figures["p50_ms"]) == {"rerank", "hybrid"}


def test_reranker_fit_compares_fold_models_with_one_refit(in_pipeline_home, tmp_path):
    import reranker_fit

    figures = reranker_fit.main(reranker_fit.parse_args(["--seeds", "1", "2", "--results-dir", str(tmp_path)]))
    assert set(figures["variants"]) == {f"{scheme}, {model}" for scheme in reranker_fit.SCHEMES
                                        for model in ("fold models", "refitted on all")}
    for variant in figures["variants"].values():
        assert len(variant["fits"]) == 2
        top1 = variant["summary"]["test_top1"]
        assert top1["min"] <= top1["mean"] <= top1["max"] <= 1 and variant["summary"]["predict_ms"]["mean"] > 0
    assert read_json(tmp_path / "reranker_fit_teacher.json")["seeds"] == [1, 2]


def test_reranker_rounding_refits_on_perturbed_copies(in_pipeline_home, tmp_path):
    import reranker_rounding

    figures = reranker_rounding.main(reranker_rounding.parse_args(["--copies", "2", "--results-dir", str(tmp_path)]))
    assert set(figures["variants"]) == set(reranker_rounding.VARIANTS)
    saved = read_json(in_pipeline_home / "models/trained/alias_label_teacher/reranker.json")
    default = figures["variants"]["default"]
    # The first fit is on the features as computed: the pipeline's own reranker, figure for figure.
    assert default["fits"][0]["val_top1"] == saved["val_out_of_fold"]["top1"]
    assert default["fits"][0]["threshold"] == saved["abstain"]["threshold"]
    assert figures["variants"]["no row or column sampling"]["params"]["subsample"] == 1.0
    for variant in figures["variants"].values():
        assert len(variant["fits"]) == 2
        coverage = variant["summary"]["val_coverage"]
        assert coverage["min"] <= coverage["mean"] <= coverage["max"] <= 1 and coverage["std"] >= 0
    assert read_json(tmp_path / "reranker_rounding_teacher.json")["copies"] == 2


def test_candidates_per_channel_refits_at_each_k(in_pipeline_home, tmp_path):
    import candidates_per_channel

    figures = candidates_per_channel.main(candidates_per_channel.parse_args(
        ["--ks", "50", "2", "--latency-queries", "4", "--tag", "other", "--results-dir", str(tmp_path)]))
    wide, narrow = figures["ks"]["50"], figures["ks"]["2"]
    # At the default K the refit is the pipeline's own reranker, figure for figure.
    saved = read_json(in_pipeline_home / "models/trained/alias_label_teacher/reranker.json")
    assert wide["val"] == saved["val_out_of_fold"] and wide["abstain"]["threshold"] == saved["abstain"]["threshold"]
    # Each channel's top 2 is part of its top 50, so the narrow union holds fewer labels and no more gold ones.
    for part in ("val", "test"):
        assert narrow[part]["mean_candidates"] < wide[part]["mean_candidates"]
        assert narrow[part]["candidate_recall"] <= wide[part]["candidate_recall"]
        kinds = wide[f"{part}_by_kind"]
        assert sum(kind["n"] for kind in kinds.values()) == wide[part]["n"]
        right = sum(kind["top1"] * kind["n"] for kind in kinds.values())
        assert right == pytest.approx(wide[part]["top1"] * wide[part]["n"])
    assert all(row["lookup"]["p50_ms"] > 0 for row in (wide, narrow)) and figures["latency_queries"] == 4
    assert read_json(tmp_path / "candidates_per_channel_teacher_other.json")["ks"]["2"]["test"] == narrow["test"]


def test_candidates_per_channel_refuses_an_empty_channel(capsys):
    import candidates_per_channel

    with pytest.raises(SystemExit):
        candidates_per_channel.parse_args(["--ks", "50", "0"])
    assert "each channel proposes at least 1 candidate" in capsys.readouterr().err


def test_a_perturbed_copy_moves_every_value_by_about_a_part_in_a_million():
    import reranker_rounding

    matrix = np.array([[0.5, 2.0], [np.nan, -1.0]], dtype=np.float32)
    table = ([np.arange(2)], [matrix], [np.array([1, 0])], np.array([7]))
    assert reranker_rounding.perturbed(table, 0) is table
    _, (copy,), _, _ = reranker_rounding.perturbed(table, 3)
    assert copy.dtype == np.float32 and np.isnan(copy[1, 0])
    finite = np.isfinite(matrix)
    relative = np.abs(copy[finite] / matrix[finite] - 1)
    assert relative.max() < 1e-5 and (copy[finite] != matrix[finite]).any()


def test_the_ceiling_is_the_most_kept_at_the_target_precision():
    import abstain_confidence

    right = np.array([1, 1, 0, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    confidence = np.linspace(1, 0, 10)
    assert abstain_confidence.ceiling(confidence, right, 0.75) == 0.5  # 4 right of the first 5
    assert abstain_confidence.ceiling(confidence, right, 1.0) == 0.2
    assert abstain_confidence.ceiling(confidence[::-1], right, 0.9) == 0.0


def test_the_likelihood_recovers_the_temperature_and_none_score_the_gold_labels_were_drawn_with():
    import abstain_confidence

    rng = np.random.default_rng(0)
    raw = [rng.normal(size=20) for _ in range(4000)]
    temperature, none_score = 0.5, 1.0
    relevance = []
    for scores in raw:
        gold = rng.choice(21, p=abstain_confidence.with_none(scores[None], temperature, none_score)[0])
        relevance.append((np.arange(20) == gold).astype(int))  # gold 20: "none of them", not a candidate
    fitted = abstain_confidence.fit_probability(raw, relevance)
    assert fitted == pytest.approx((temperature, none_score), rel=0.1)
    top = abstain_confidence.top_probabilities(raw[:3], *fitted)
    expected = np.sort(abstain_confidence.with_none(np.array(raw[:3]), *fitted)[:, :-1], axis=1)[:, ::-1][:, :2]
    np.testing.assert_allclose(top, expected, rtol=1e-6)


def test_the_calibration_error_is_the_gap_between_confidence_and_how_often_it_is_right():
    import abstain_confidence

    right = np.array([1] * 9 + [0], dtype=bool)
    assert abstain_confidence.calibration_error(np.full(10, 0.9), right) == pytest.approx(0.0)
    assert abstain_confidence.calibration_error(np.full(10, 0.99), right) == pytest.approx(0.09)
    # Two bins, each weighed by its size: 0.95 right half the time, 0.15 never right.
    confidence = np.array([0.95, 0.95, 0.15, 0.15])
    assert abstain_confidence.calibration_error(confidence, np.array([1, 0, 0, 0], dtype=bool)) == pytest.approx(
        0.5 * 0.45 + 0.5 * 0.15)


def test_abstain_confidence_fits_every_method_out_of_fold(in_pipeline_home, tmp_path):
    import abstain_confidence

    figures = abstain_confidence.main(abstain_confidence.parse_args(["--seeds", "3", "--classifier-repeats", "2",
                                                                     "--results-dir", str(tmp_path)]))
    assert figures["classifier_repeats"] == 2
    methods = figures["fits"]["3"]
    assert set(methods) == {"share and margin", "classifier", "calibrated probability"}
    n_test = len(load_split().test)
    for method in methods.values():
        assert method["test"]["n"] == n_test
        for key in ("val_coverage", "val_ceiling", "test_ceiling", "val_calibration_error", "test_calibration_error"):
            assert 0 <= method[key] <= 1
    assert methods["calibrated probability"]["temperature"] > 0
    # The classifier's setting keeps its most probable answers, so a met target lies under the ceiling.
    classifier = methods["classifier"]
    assert not classifier["met_target"] or classifier["val_coverage"] <= classifier["val_ceiling"]
    assert read_json(tmp_path / "abstain_confidence_teacher.json")["seeds"] == [3]


def test_cross_encoder_refits_with_and_without_the_models_cross_encoder(in_pipeline_home, tmp_path):
    import cross_encoder

    figures = cross_encoder.main(cross_encoder.parse_args(["--latency-queries", "2", "--results-dir", str(tmp_path)]))
    assert set(figures["variants"]) == {"reranker", "reranker with the cross-encoder", "cross-encoder alone"}
    n_test = len(load_split().test)
    for row in figures["variants"].values():
        assert row["test"]["n"] == n_test and 0 <= row["test"]["top1"] <= row["test"]["candidate_recall"] <= 1
        assert 0 <= row["test"]["abstain"]["coverage"] <= 1
    # The refit with every column is the saved reranker's fit, so its out-of-fold figures are the sidecar's.
    saved = read_json(in_pipeline_home / "models/trained/alias_label_teacher/reranker.json")
    assert figures["variants"]["reranker with the cross-encoder"]["val"] == saved["val_out_of_fold"]
    latency = figures["latency"]
    assert 0 < latency["cross_encoder"]["p50_ms"] and latency["cross_encoder_share_of_lookup_p50"] == pytest.approx(
        latency["cross_encoder"]["p50_ms"] / latency["reranked_lookup"]["p50_ms"])
    assert read_json(tmp_path / "cross_encoder_teacher.json")["cross_encoder"]["train_aliases"] == 80


def test_cross_encoder_names_a_students_base_by_its_place_under_the_artifact_root(in_pipeline_home, tmp_path):
    import cross_encoder

    cross_encoder.main(cross_encoder.parse_args(["--model", "student", "--latency-queries", "2",
                                                 "--results-dir", str(tmp_path)]))
    # The student's cross-encoder starts from its teacher's: the record names it as it lies in any run.
    record = read_json(tmp_path / "cross_encoder_student.json")["cross_encoder"]
    assert record["base_model"] == "models/trained/alias_label_teacher/cross_encoder"


def test_cross_encoder_names_the_fix_for_a_model_without_one(home, pipeline_home, tmp_path):
    import cross_encoder

    for folder in ("data", "models", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    shutil.rmtree(home / "models/trained/alias_label_student/cross_encoder")
    with pytest.raises(UserError, match="has no cross-encoder.*train_cross_encoder.py --model student"):
        cross_encoder.main(cross_encoder.parse_args(["--model", "student", "--results-dir", str(tmp_path)]))


def test_serve_load_checks_every_answer_and_reports_the_ratio(in_pipeline_home, tmp_path):
    figures = serve_load.main(serve_load.parse_args(["--clients", "3", "--batches", "2", "--batch-queries", "4",
                                                     "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "serve.json")
    assert saved["errors"] == 0 and saved["batches"] == 6 and saved["clients"] == 3
    assert saved["http_vs_in_process"] == pytest.approx(saved["http_queries_per_s"] / saved["in_process_queries_per_s"])
    assert saved["http_batch_p99_ms"] >= saved["http_batch_p50_ms"] > 0
    assert figures["errors"] == 0


def test_generated_scale_encodes_real_strings_and_measures_each_type(tiny_model, tmp_path):
    labels = generated_scale.generated_labels(5000, seed=3)
    assert len(labels) == 5000 and labels == generated_scale.generated_labels(5000, seed=3)
    assert 2 < np.mean([len(label.split()) for label in labels]) < 8 and len(set(labels)) > 4500
    queries = generated_scale.generated_queries(labels, 50, seed=3)

    def shortened(query: str, label: str) -> bool:
        words = label.split()
        return any(words[:i] + words[i + 1:] == query.split() for i in range(len(words))) or query == label

    assert all(any(shortened(query, label) for label in labels) for query in queries)
    figures = generated_scale.main(generated_scale.parse_args(
        ["--labels", "3000", "--queries", "20", "--types", "flat", "ivf-int8", "--model", str(tiny_model),
         "--device", "cpu", "--chunk-rows", "700", "--workdir", str(tmp_path / "work"), "--results-dir",
         str(tmp_path)]))
    saved = read_json(tmp_path / "generated_scale.json")
    assert saved["labels"] == 3000 and saved["encode_sentences_per_min"] > 0
    assert [row["type"] for row in saved["rows"]] == ["flat", "ivf-int8"] and saved["rows"][0]["recall_at_10"] == 1.0
    assert 0 < saved["rows"][1]["recall_at_10"] <= 1 and figures["rows"][1]["memory_vs_flat"] < 0.5
    assert not list((tmp_path / "work").iterdir())  # the vectors are removed unless kept


def test_student_training_times_both_samplers(in_pipeline_home, tiny_model, tmp_path):
    import student_training

    figures = student_training.main(student_training.parse_args(
        ["--steps", "2", "--warmup-steps", "1", "--rounds", "1", "--texts", "96", "--batch-size", "16",
         "--model", str(tiny_model), "--results-dir", str(tmp_path)]))
    ours, library = figures["samplers"]["length buckets"], figures["samplers"]["library"]
    assert 1 <= ours["padding_ratio"] < library["padding_ratio"]
    assert figures["speedup"] == pytest.approx(library["seconds_per_step"] / ours["seconds_per_step"])
    assert read_json(tmp_path / "student_training.json")["texts"] == {"queries": 96, "documents": 96}


def synthetic_outcomes(rng, n: int) -> tuple[list, np.ndarray]:
    """Queries whose top answer is right nearly always when it stands far out, half the time otherwise."""
    gaps = rng.uniform(0, 6, n)
    raw = [np.array([gap, 0.0, -1.0, -2.0]) for gap in gaps]
    right = rng.random(n) < np.where(gaps > 3, 0.995, 0.5)
    return raw, right


def test_a_stricter_bound_keeps_fewer_validation_aliases_and_reports_test_precision_with_its_interval():
    import abstain_bound

    rng = np.random.default_rng(0)
    (raw_val, right_val), (raw_test, right_test) = synthetic_outcomes(rng, 1000), synthetic_outcomes(rng, 1000)
    loose, strict = abstain_bound.bound_fits(raw_val, right_val, raw_test, right_test, [0.5, 0.99], 0.95)
    assert loose["met_target"] and strict["met_target"]
    assert strict["val_coverage"] <= loose["val_coverage"] and strict["val_precision"] >= 0.95
    for fit in (loose, strict):
        low, high = fit["test_interval"]
        assert low <= fit["test_precision"] <= high and fit["test_precision"] > 0.9
    # Half the aliases stand far out; a setting that meets the target keeps about them, no more.
    assert 0.3 < strict["test_coverage"] <= 0.55


def test_abstain_bound_fits_each_confidence_on_the_same_out_of_fold_scores(in_pipeline_home, tmp_path):
    import abstain_bound

    figures = abstain_bound.main(abstain_bound.parse_args(["--seeds", "3", "5", "--confidences", "0.5", "0.99",
                                                           "--tag", "draw2", "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "abstain_bound_teacher_draw2.json")
    assert saved["summary"] == figures["summary"] and [seed["seed"] for seed in saved["seeds"]] == [3, 5]
    assert saved["split"]["pairs"]["test"] == len(load_split().test)
    for seed in saved["seeds"]:
        assert [fit["confidence"] for fit in seed["fits"]] == [0.5, 0.99]
    for row in saved["summary"].values():
        assert 0 <= row["met_on_val"] <= 2 and 0 <= row["held_on_test"] <= 2
        assert 0 <= row["val_coverage"]["min"] <= row["val_coverage"]["mean"] <= row["val_coverage"]["max"] <= 1


STAGES = {"encode", "tfidf_vectors", "tfidf_search", "dense_search", "acronym", "union", "cosines", "pair_features",
          "cross_encoder", "rankers", "classifiers"}


def test_rerank_latency_splits_each_models_lookups_into_their_stages(in_pipeline_home, tmp_path):
    figures = rerank_latency.main(rerank_latency.parse_args(["--queries", "4", "--results-dir", str(tmp_path)]))
    assert figures["student"]["int8"] and not figures["teacher"]["int8"]
    for role in ("teacher", "student"):
        lookup, stages = figures[role]["lookup"], figures[role]["stages"]
        assert set(stages) == STAGES | {"other"}
        assert sum(stage["share"] for stage in stages.values()) == pytest.approx(1.0)
        assert all(0 < stage["share"] < 1 for stage in stages.values())
        # each stage runs inside its lookup, so no stage's median can pass the lookup's
        assert all(stage["p50_ms"] <= lookup["p50_ms"] for stage in stages.values())
    assert read_json(tmp_path / "rerank_latency.json")["queries"] == 4


def test_label_queries_writes_each_label_three_ways():
    queries = label_queries.label_queries(["Université Laval", "Marmara University"])
    assert queries["as written"] == (["Université Laval", "Marmara University"],) * 2
    assert queries["upper case"][0] == ["UNIVERSITÉ LAVAL", "MARMARA UNIVERSITY"]
    assert queries["without accents"] == (["Universite Laval"], ["Université Laval"])


def test_label_queries_flag_more_confident_with_the_exact_label_rule(in_pipeline_home, tmp_path):
    figures = label_queries.main(label_queries.parse_args(["--models", "student", "--results-dir", str(tmp_path)]))
    labels = load_split().pairs("test")["label"].drop_duplicates()
    student = figures["student"]
    assert student["as written"]["n"] == student["upper case"]["n"] == figures["labels"] == len(labels)
    for row in student.values():
        assert row["lookups"]["kept"] >= row["calibrated"]["kept"]
        assert 0 <= row["top1"] <= 1
    # the smoke student's setting missed its target: only the rule flags anything, and it is right
    assert student["as written"]["calibrated"]["kept"] == 0 and student["as written"]["lookups"]["kept"] > 0
    assert student["as written"]["lookups"]["precision"] == 1.0
    assert read_json(tmp_path / "label_queries.json")["student"] == json.loads(json.dumps(student))


def test_lookup_overhead_times_the_search_and_the_lookup_of_each_model(in_pipeline_home, tmp_path):
    figures = lookup_overhead.main(lookup_overhead.parse_args(["--queries", "4", "--results-dir", str(tmp_path)]))
    for role in ("teacher", "student"):
        row = figures[role]
        assert row["search"]["p50_ms"] > 0 and row["lookup"]["p50_ms"] > 0
        assert row["extra_p50_ms"] == pytest.approx(row["lookup"]["p50_ms"] - row["search"]["p50_ms"])
    assert read_json(tmp_path / "lookup_overhead.json")["queries"] == 4


def test_rerank_latency_refuses_to_time_no_lookups(capsys):
    with pytest.raises(SystemExit):
        rerank_latency.parse_args(["--queries", "0"])
    assert "--queries 0: time at least one lookup" in capsys.readouterr().err


def test_stage_clocks_time_every_stage_and_leave_the_lookup_as_it_was(in_pipeline_home):
    retriever = load_retriever("student")
    first = retriever.searcher.first_stage
    aliases = load_split().pairs("test")["alias"].tolist()[:3]
    functions = {name: getattr(rerank, name) for name in ("encode_alone", "union", "pair_features", "mean_raw",
                                                          "probabilities")}
    before = retriever.labels_with_confidence(aliases, 5)
    seconds = {}
    with rerank_latency.stage_clocks(retriever.searcher, seconds):
        inside = retriever.labels_with_confidence(aliases, 5)
    after = retriever.labels_with_confidence(aliases, 5)
    assert set(seconds) == STAGES and all(value > 0 for value in seconds.values())
    for outcome in (inside, after):
        for got, expected in zip(outcome, before, strict=True):
            np.testing.assert_array_equal(got, expected)
    assert all(getattr(rerank, name) is function for name, function in functions.items())
    for owner, name in ((first, "cosines"), (first.acronym, "search"), (first.label_index, "search"),
                        (first.tfidf, "vectors"), (retriever.searcher.cross, "extend")):
        assert name not in vars(owner)


def test_other_kind_builds_iso_names_and_runs_every_step_on_them(home, tiny_model, tmp_path):
    from conftest import CROSS_SMOKE, STUDENT_SMOKE

    table = other_kind.iso_entities(["ru", "ja"])
    germany = table[table["qid"] == "country:DEU"]
    assert set(germany["label"]) == {"Germany"} and {"DE", "DEU", "Германия", "ドイツ"} <= set(germany["alias"])
    assert "Germany" not in set(germany["alias"])

    teacher = ["--base-model", str(tiny_model), "--rounds", "1", "--epochs", "2", "--batch-size", "16",
               "--max-seq-length", "32"]
    argv = ["--home", str(home), "--languages", "ru", "ja", "--aliased-entities", "60", "--bare-entities", "40",
            "--teacher-args", " ".join(teacher), "--cross-args", " ".join(["--base", str(tiny_model), *CROSS_SMOKE]),
            "--student-cross-args", " ".join(CROSS_SMOKE), "--student-args", " ".join(STUDENT_SMOKE),
            "--eval-args", "--latency-queries 2 --systems rerank student_rerank hybrid tfidf",
            "--results-dir", str(tmp_path)]
    figures = other_kind.main(other_kind.parse_args(argv))
    written = pd.read_csv(home / "data" / "raw" / "iso_names.csv", keep_default_na=False)
    assert written["qid"].nunique() == 100 and written.groupby("qid")["alias"].size().max() <= 2
    saved = read_json(tmp_path / "other_kind.json")
    assert saved["table"]["entities"] == 100 and saved["test"] == figures["test"]
    for split in ("test", "val"):
        systems = saved[split]["systems"]
        assert set(systems) == {"rerank", "student_rerank", "hybrid", "tfidf"}
        assert all(0 <= system["top1"] <= system["top10"] <= 1 for system in systems.values())
        assert saved[split]["aliases"] == sum(saved[split]["kind_counts"].values())
    assert set(saved["val_out_of_fold"]) == {"rerank", "student_rerank"}
    assert saved["val_out_of_fold"]["rerank"]["n"] == saved["val"]["aliases"]


def test_other_kind_refuses_a_language_pycountry_does_not_translate_to(home):
    with pytest.raises(UserError, match="no translations for --languages xx; it has: .*ja"):
        other_kind.main(other_kind.parse_args(["--home", str(home), "--languages", "ru", "xx"]))
    assert not (home / "data").exists()


def test_other_kind_refuses_more_aliased_entities_than_there_are():
    table = pd.DataFrame({"qid": ["a", "b", "c"], "label": ["A", "B", "C"], "alias": ["x", "y", ""],
                          "description": ""})
    with pytest.raises(UserError, match="more than the 2 entities with aliases there are; pass at most 2"):
        other_kind.sampled_table(table, 3, 2, seed=0)


def test_other_kind_resumes_both_trainings_and_evaluates_both_splits(tmp_path):
    args = other_kind.parse_args(["--home", str(tmp_path), "--resume"])
    steps = other_kind.pipeline_steps(tmp_path / "table.csv", args)
    assert [step[0] for step in steps if "--resume" in step] == ["train_alias_label.py", "distill_model.py"]
    evaluations = [step[1:] for step in steps if step[0] == "evaluate_student.py"]
    assert evaluations == [[], ["--split", "val", "--output-dir", str(tmp_path / "logs/metrics/val")]]
    fresh = other_kind.pipeline_steps(tmp_path / "table.csv", other_kind.parse_args(["--home", str(tmp_path)]))
    assert all("--resume" not in step for step in fresh)


def test_batch_alone_times_a_batch_computed_together_and_alone(in_pipeline_home, tmp_path):
    import batch_alone

    figures = batch_alone.main(batch_alone.parse_args(["--runs", "1", "--results-dir", str(tmp_path)]))
    n = len(load_split().pairs("test"))
    assert set(figures) == {"teacher_rerank", "teacher_dense", "student_rerank", "student_dense"} and n > 1
    for row in figures.values():
        assert row["aliases"] == n and row["cost"] > 0 and all(len(times) == 1 for times in row["seconds"].values())
        assert 0 <= row["top1_differs"] <= row["top10_differs"] <= n and 0 <= row["confident_differs"] <= n
    # The baseline really computes the batch together: the int8 student's activations share one
    # scale there, so its top cosines move with the batch.
    assert figures["student_dense"]["max_confidence_diff"] > 0
    assert read_json(tmp_path / "batch_alone.json")["runs"] == 1
    with pytest.raises(SystemExit):
        batch_alone.parse_args(["--runs", "0"])


def test_ranker_batch_scores_a_batch_both_ways_alike(in_pipeline_home, tmp_path):
    import ranker_batch

    figures = ranker_batch.main(ranker_batch.parse_args(["--runs", "2", "--queries", "6",
                                                         "--results-dir", str(tmp_path)]))
    for role in ("teacher", "student"):
        row = figures[role]
        assert row["aliases"] == 6 and row["candidates"] >= 6 and row["models"] > 1
        assert row["max_abs_diff"] == 0.0 and row["speedup"] > 0 and row["batch_lookup_s"] > 0
        assert all(len(times) == 2 for times in row["seconds"].values())
    assert read_json(tmp_path / "ranker_batch.json")["runs"] == 2


def test_ranker_batch_refuses_to_time_nothing(capsys):
    import ranker_batch

    with pytest.raises(SystemExit):
        ranker_batch.parse_args(["--runs", "0"])
    assert "--runs 0: time each way at least once" in capsys.readouterr().err
