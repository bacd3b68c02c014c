"""Every index type: recall against exact search, save/load round trips, streaming, and the script."""

from __future__ import annotations

import shutil

import build_index as build_index_cli
import evaluate_student
import numpy as np
import pytest
from conftest import unit_rows

from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.index import dense as index_module
from alias_label.index.dense import (
    DenseIndex,
    IndexSpec,
    KeyedIndex,
    build_index,
    load_index,
    save_index,
    search_alone,
    vectors_path,
)
from alias_label.index.stream import encode_to_file
from alias_label.io import read_json
from alias_label.models.encode import encode
from alias_label.models.load import load_model
from alias_label.search.retriever import load_dense, load_retriever
from alias_label.search.searchers import keys_of

COMBINATIONS = [("flat", "none"), ("flat", "int8"), ("flat", "int4"), ("flat", "binary"), ("hnsw", "none"),
                ("hnsw", "int8"), ("ivf", "none"), ("ivf", "int4"), ("ivf", "binary"), ("ivfpq", "none")]


def clustered(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    """Unit vectors around 100 centres: the structure real embeddings have, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, d))
    rows = centres[rng.integers(0, 100, n)] + 0.6 * rng.normal(size=(n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def near(vectors: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Queries close to stored rows, as an alias is close to its label."""
    rows = vectors[:n] + 0.05 * np.random.default_rng(seed).normal(size=(n, vectors.shape[1]))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(index, exact, queries) -> float:
    truth = exact.search(queries, 10)[1]
    found = index.search(queries, 10)[1]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))


@pytest.mark.parametrize(("kind", "quantize"), COMBINATIONS)
def test_every_type_finds_what_exact_search_finds(kind, quantize, tmp_path):
    vectors = clustered(6000)
    queries = near(vectors, 100)
    exact = build_index(vectors)
    index = build_index(vectors, IndexSpec.scaled(len(vectors), 128, kind, quantize))
    assert recall_at_10(index, exact, queries) >= (0.8 if quantize == "binary" else 0.9)
    scores = index.search(queries, 10)[0]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    save_index(index, tmp_path / "x.index", {"rows": 6000, "texts": ["t"] * 6000})
    loaded, meta = load_index(tmp_path / "x.index", "python fix.py")
    assert meta["index_type"] == kind and meta["index_spec"] == index.spec.__dict__
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    assert vectors_path(tmp_path / "x.index").exists() == bool(index.spec.rescore)


def test_rescoring_returns_exact_cosines():
    vectors = clustered(3000)
    queries = near(vectors, 20)
    index = build_index(vectors, IndexSpec.scaled(3000, 128, "flat", "binary", rescore=8))
    scores, ids = index.search(queries, 5)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, vectors[ids]), rtol=1e-5)


def test_few_queries_search_on_one_faiss_thread_and_restore_the_count(monkeypatch):
    import faiss

    vectors = unit_rows(500, 16)
    index = build_index(vectors)
    calls = []
    set_threads = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), set_threads(n)))
    before = faiss.omp_get_max_threads()
    few, many = index.search(vectors[:3], 5), index.search(vectors[:40], 5)
    assert calls == [1, before] and faiss.omp_get_max_threads() == before  # the batch of 40 keeps the default
    exact = vectors[:40] @ vectors.T
    np.testing.assert_array_equal(few[1], many[1][:3])
    np.testing.assert_array_equal(many[1], np.argsort(-exact, axis=1, kind="stable")[:, :5])


def test_the_int8_prefilter_answers_as_flat_search_does(monkeypatch):
    monkeypatch.setattr(index_module, "PREFILTER_MIN_ROWS", 5000)
    vectors = clustered(8000, 64)
    vectors[7000] = vectors[5]  # a duplicate row: an exact tie, which comes in row order
    index = build_index(vectors)
    queries = np.concatenate([near(vectors, 60), vectors[[5]], unit_rows(10, 64)])
    few = np.concatenate([index.search(queries[i:i + 3], 10)[1] for i in range(0, len(queries), 3)])
    assert index.prefiltered and index._prefilter is not None and index._prefilter.fallbacks == 0
    exact = queries @ vectors.T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert [set(row) for row in few] == [set(row) for row in truth]
    np.testing.assert_allclose(np.take_along_axis(exact, few, axis=1), np.take_along_axis(exact, truth, axis=1),
                               atol=1e-6)
    assert list(few[60, :2]) == [5, 7000]
    # A batch searches flat, as before, with equal scores in FAISS's own order.
    batch = index.search(queries, 10)[1]
    np.testing.assert_array_equal(np.delete(few, [5, 60], axis=0), np.delete(batch, [5, 60], axis=0))
    assert set(batch[60, :2]) == {5, 7000}


@pytest.mark.parametrize("prefiltered", [False, True])
def test_a_query_searched_among_many_gets_what_it_gets_alone(prefiltered, monkeypatch):
    monkeypatch.setattr(index_module, "PREFILTER_MIN_ROWS", 5000 if prefiltered else 10**9)
    vectors = clustered(8000, 64)
    keyed = KeyedIndex(build_index(vectors), np.arange(8000) // 2)  # two keys a row, as labels' are
    queries = np.concatenate([near(vectors, 50), unit_rows(7, 64, seed=3)])
    for index in (keyed.index, keyed):
        scores, ids = search_alone(index, queries, 10)
        alone = [index.search(queries[i:i + 1], 10) for i in range(len(queries))]
        assert np.array_equal(scores, np.vstack([s for s, _ in alone]))  # to the last bit
        assert np.array_equal(ids, np.vstack([i for _, i in alone]))
    assert keyed.index.prefiltered == prefiltered
    assert [a.shape for a in search_alone(keyed, queries[:0], 10)] == [(0, 10), (0, 10)]


def test_an_unproven_prefilter_answer_is_searched_flat(monkeypatch):
    monkeypatch.setattr(index_module, "PREFILTER_MIN_ROWS", 1000)
    # 20 rows repeated 150 times: the 64 rows fetched score as the 5th does, so nothing left out is proven lower.
    vectors = np.tile(unit_rows(20, 32), (150, 1))
    index = build_index(vectors)
    queries = unit_rows(4, 32, seed=2)
    scores, ids = index.search(queries, 5)
    assert index._prefilter.fallbacks == 4
    np.testing.assert_array_equal(ids, np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5])
    index.add(queries)  # new rows: the int8 copy is rebuilt and finds them
    assert index._prefilter is None and list(index.search(queries[:1], 1)[1][0]) == [3000]


def test_parameters_scale_with_the_table():
    small, large = IndexSpec.scaled(25_000, 384, "ivf"), IndexSpec.scaled(1_000_000, 384, "ivf")
    assert small.nlist == 512 and large.nlist == 4096 and large.nprobe == 1024
    assert IndexSpec.scaled(1_000_000, 1024, "ivfpq").pq_m == 128
    assert IndexSpec.scaled(10, 8, "ivf").nlist == 1
    assert IndexSpec.scaled(50, 8, "hnsw", ef_search=200).ef_search == 200
    assert IndexSpec.scaled(100_000, 8, "hnsw").ef_search == 128
    assert IndexSpec.scaled(1_000_000, 8, "hnsw").ef_search == 1024
    with pytest.raises(UserError, match="already compresses"):
        IndexSpec.scaled(100, 8, "ivfpq", "int8")
    with pytest.raises(UserError, match="unknown index parameter 'nprobes'"):
        IndexSpec.scaled(100, 8, "ivf", nprobes=3)


def test_streamed_encoding_matches_encode_and_fills_the_index(tiny_model, tmp_path):
    model = load_model(tiny_model, "cpu")
    texts = [f"University number {i}" for i in range(300)]
    index = DenseIndex.empty(32, IndexSpec.scaled(300, 32, "ivf", nlist=4))
    vectors = encode_to_file(model, texts, "document", tmp_path / "v.npy", index, chunk_rows=64)
    np.testing.assert_allclose(vectors, encode(model, texts, "document"), atol=1e-5)
    assert index.ntotal == 300 and isinstance(vectors, np.memmap)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file is left behind


def test_build_index_script_switches_type_and_everything_still_searches(home, pipeline_home):
    for folder in ("data", "faiss", "models"):
        shutil.copytree(pipeline_home / folder, home / folder)
    build_index_cli.main(build_index_cli.parse_args(["--model", "teacher", "--index", "hnsw", "--quantize", "int8",
                                                     "--chunk-rows", "16"]))
    meta = read_json(home / "faiss/labels.index.json")
    assert meta["index_type"] == "hnsw" and meta["factory"] == "HNSW32,SQ8" and meta["vectors_file"]
    split = load_split()
    dense = load_dense("teacher", "cpu", int8=False).searcher
    assert dense.label_index.index.spec.kind == "hnsw"  # inside the label keys' KeyedIndex
    _, ids = dense.labels_for(split.test["alias"], 3)
    assert ids.shape == (len(split.test), 3)
    report = evaluate_student.main(evaluate_student.parse_args(["--systems", "teacher", "hybrid",
                                                                "--latency-queries", "3"]))
    assert 0 <= report["systems"]["hybrid"]["top1"] <= 1


def test_label_keys_off_indexes_the_labels_texts_alone(home, pipeline_home):
    for folder in ("data", "faiss", "models"):
        shutil.copytree(pipeline_home / folder, home / folder)
    build_index_cli.main(build_index_cli.parse_args(["--model", "teacher", "--vectors-from", "teacher",
                                                     "--label-keys", "label"]))
    split = load_split()
    meta = read_json(home / "faiss/labels.index.json")
    assert meta["rows"] == len(split.labels) and meta["texts"] == split.labels["label"].tolist()
    assert "label_rows" not in meta and "label_keys" not in meta
    dense = load_dense("teacher", "cpu", int8=False).searcher
    hybrid = load_retriever("teacher", "hybrid", int8=False)
    # The hybrid's TF-IDF follows the dense index: no keys on either side.
    assert keys_of(dense) == "label" and keys_of(hybrid.searcher.lexical) == "label"
    assert isinstance(dense.label_index, DenseIndex)
