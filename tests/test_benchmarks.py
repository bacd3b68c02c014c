"""Each benchmark script runs end to end on a tiny setting and writes its JSON (no timings asserted)."""

from __future__ import annotations

import encode_memory
import gpu_throughput
import hnsw_ef_sweep
import index_scale
import query_latency

from alias_label.common import read_json

GPU_KEYS = {"device", "encode_sentences_per_min", "baseline_encode_sentences_per_min", "train_pairs_per_s",
            "baseline_train_pairs_per_s"}


def test_gpu_throughput_smoke_writes_the_required_keys(tmp_path):
    figures = gpu_throughput.main(gpu_throughput.parse_args(["--smoke", "--device", "cpu",
                                                             "--results-dir", str(tmp_path)]))
    saved = read_json(tmp_path / "gpu_throughput_smoke.json")
    assert GPU_KEYS <= set(saved) and saved["device"] == "cpu"
    assert saved["check_top1_agreement"] == 1.0 and saved["check_max_one_minus_cosine"] < 1e-5
    assert all(figures[key] > 0 for key in GPU_KEYS - {"device"})
    assert saved["command"].startswith("python") and saved["machine"]["cpu_count"] >= 1


def test_index_scale_reports_every_type(in_pipeline_home, tmp_path):
    argv = ["--sizes", "real", "3000", "--dims", "32", "64", "--types", "flat", "hnsw", "ivf", "ivfpq", "flat-int8",
            "flat-int4", "--queries", "20", "--results-dir", str(tmp_path)]
    index_scale.main(index_scale.parse_args(argv))
    rows = read_json(tmp_path / "index_scale.json")["rows"]
    assert len(rows) == 2 * 2 * 6
    for row in rows:
        assert 0 <= row["recall_at_10"] <= 1 and row["p95_ms"] >= row["p50_ms"] > 0
        assert row["index_mb"] > 0 and row["build_s"] >= 0
    flat = [row for row in rows if row["type"] == "flat"]
    assert all(row["recall_at_10"] == 1.0 and row["memory_vs_flat"] > 0.9 for row in flat)
    assert all(row["memory_vs_flat"] < 0.3 for row in rows if row["type"] == "flat-int8")
    assert all(row["memory_vs_flat"] < 0.2 for row in rows if row["type"] == "flat-int4")


def test_query_latency_profiles_both_models(in_pipeline_home, tmp_path):
    figures = query_latency.main(query_latency.parse_args(["--queries", "5", "--results-dir", str(tmp_path)]))
    for role in ("teacher", "student"):
        parts = figures[f"{role}_threads1"]
        assert {"tokenize", "forward", "encode", "search_flat", "search_hnsw", "lookup_flat"} <= set(parts)
        assert parts["lookup_flat"]["p50_ms"] >= parts["search_flat"]["p50_ms"] > 0
    assert figures["student_speedup_lookup_flat_threads1"] > 0
    assert (tmp_path / "query_latency.json").exists()


def test_encode_memory_compares_three_approaches(tmp_path):
    figures = encode_memory.main(encode_memory.parse_args(["--labels", "3000", "--results-dir", str(tmp_path)]))
    assert [row["approach"] for row in figures["rows"]] == ["naive", "streamed-flat", "streamed-ivfpq"]
    assert all(row["rows"] == 3000 and row["peak_rss_mb"] > 0 for row in figures["rows"])
    assert set(figures["streamed_vs_naive"]) == {"streamed-flat", "streamed-ivfpq"}
    assert figures["dim"] == 384


def test_hnsw_ef_sweep_raises_recall_with_ef(in_pipeline_home, tmp_path):
    figures = hnsw_ef_sweep.main(hnsw_ef_sweep.parse_args(["--size", "3000", "--dim", "32", "--ef", "4", "64",
                                                           "--queries", "20", "--results-dir", str(tmp_path)]))
    low, high = figures["rows"]
    assert high["recall_at_10"] >= low["recall_at_10"] and high["recall_at_10"] > 0.9
    assert (tmp_path / "hnsw_ef_sweep.json").exists()
