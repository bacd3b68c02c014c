"""FAISS sidecars, embedding caches, atomic writes, model resolution and precision choice."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import unit_rows

from alias_label.errors import UserError
from alias_label.index.cache import load_embeddings, save_embeddings
from alias_label.index.dense import KeyedIndex, build_index, load_index, save_index
from alias_label.io import atomic_path, read_json
from alias_label.models.encode import encode
from alias_label.models.load import autocast_dtype, bundled_model_path, load_model, model_fingerprint, resolve_model


def test_index_round_trip_and_exact_search(tmp_path):
    embs = unit_rows(20)
    meta = {"rows": 20, "texts": [f"t{i}" for i in range(20)], "data_fingerprint": "abc", "model": "m"}
    save_index(build_index(embs), tmp_path / "labels.index", meta)
    index, sidecar = load_index(tmp_path / "labels.index", "python fix.py", "abc")
    assert sidecar["dim"] == 8 and sidecar["metric"] == "inner_product" and sidecar["normalized"] is True
    scores, ids = index.search(embs[:3], 50)
    assert ids.shape == (3, 20) and ids[:, 0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_keyed_index_returns_each_entry_once_at_its_best_key():
    keys = unit_rows(5, d=8, seed=3)
    # Entry 0 has keys 0 and 3, entry 1 key 1, entry 2 keys 2 and 4.
    keyed = KeyedIndex(build_index(keys), np.array([0, 1, 2, 0, 2]))
    assert keyed.ntotal == 3 and keyed.keys_per_entry == 2
    exact = keys @ keys.T
    scores, entries = keyed.search(keys[[3, 1]], 5)
    assert entries.shape == (2, 3)  # k is capped at the 3 entries
    assert entries[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0)  # found through its second key
    for row, query in enumerate((3, 1)):
        assert sorted(entries[row]) == [0, 1, 2]
        best = {0: max(exact[query, [0, 3]]), 1: exact[query, 1], 2: max(exact[query, [2, 4]])}
        assert scores[row] == pytest.approx([best[e] for e in entries[row]], abs=1e-5)
        assert list(scores[row]) == sorted(scores[row], reverse=True)


def test_label_keys_are_transliterations_that_differ():
    from types import SimpleNamespace

    from alias_label.index.tables import label_keys

    split = SimpleNamespace(labels=pd.DataFrame({"label": ["Université Laval", "MIT", "Московский университет",
                                                          "Oxford  University", "東京大学"]}))
    keys = label_keys(split)
    assert keys["row"].tolist() == [0, 2, 4]
    assert keys["text"].tolist()[:2] == ["Universite Laval", "Moskovskii universitet"]
    assert keys["text"].iloc[2].strip() != ""


def test_index_for_another_split_names_the_fix(tmp_path):
    embs = unit_rows(4)
    save_index(build_index(embs), tmp_path / "x.index", {"rows": 4, "texts": list("abcd"), "data_fingerprint": "old"})
    with pytest.raises(UserError, match="built for data split old.*python fix.py"):
        load_index(tmp_path / "x.index", "python fix.py", "new")
    with pytest.raises(UserError, match="index not found.*python fix.py"):
        load_index(tmp_path / "missing.index", "python fix.py")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "sidecar"])
def test_a_damaged_index_names_the_file_and_the_fix(tmp_path, damage):
    target = tmp_path / "x.index"
    save_index(build_index(unit_rows(40)), target, {"rows": 40, "texts": [str(i) for i in range(40)]})
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "garbage":
        target.write_bytes(b"not a faiss index at all")
    else:
        Path(f"{target}.json").write_text('{"rows": 40, "dim"')
    with pytest.raises(UserError, match=r"x.index(.json)? is damaged.*Rebuild (it|the index) with: python fix.py"):
        load_index(target, "python fix.py")


def test_sidecar_must_match_rows(tmp_path):
    with pytest.raises(ValueError, match="sidecar describes 3 rows"):
        save_index(build_index(unit_rows(4)), tmp_path / "x.index", {"rows": 3, "texts": list("abc")})


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_path_gives_the_file_the_umask_mode_not_mkstemps_private_one(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        with atomic_path(tmp_path / "shared.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(before)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == mode


def test_embedding_cache_hit_and_stale(tmp_path):
    embs = unit_rows(5)
    save_embeddings(tmp_path / "e.npy", embs, {"model_fingerprint": "m1", "data_fingerprint": "d1"})
    hit, reason = load_embeddings(tmp_path / "e.npy", {"model_fingerprint": "m1", "data_fingerprint": "d1"})
    np.testing.assert_array_equal(hit, embs)
    assert reason == "cache hit"
    stale, reason = load_embeddings(tmp_path / "e.npy", {"model_fingerprint": "m2", "data_fingerprint": "d1"})
    assert stale is None and "model_fingerprint is 'm1', expected 'm2'" in reason
    assert read_json(tmp_path / "e.npy.json")["rows"] == 5


def test_resolve_model_default_local_and_missing(tiny_model):
    assert resolve_model(None) == str(bundled_model_path())
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(bundled_model_path())
    assert resolve_model(tiny_model) == str(tiny_model.resolve())
    assert resolve_model("intfloat/e5-large-v2") == "intfloat/e5-large-v2"
    with pytest.raises(UserError, match="model folder not found"):
        resolve_model("./no/such/model")


def test_unreachable_hub_model_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="(?s)cannot load model 'someone/not-cached-model'.*local model folder"):
        load_model("someone/not-cached-model", "cpu")


def test_loading_a_model_draws_no_progress_bar_and_keeps_the_setting(tiny_model, capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    load_model(tiny_model, "cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        load_model(tiny_model, "cpu")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


def test_prompts_for_e5_and_overrides(tiny_model):
    model = load_model(tiny_model, "cpu", query_prompt="q: ", doc_prompt="d: ")
    assert model.prompts == {"query": "q: ", "document": "d: "}
    plain = encode(load_model(tiny_model, "cpu"), ["q: MIT"], kind="query")
    prompted = encode(model, ["MIT"], kind="query")
    np.testing.assert_allclose(plain, prompted, atol=1e-5)


def test_encode_is_normalised_float32(tiny_model):
    embs = encode(load_model(tiny_model, "cpu"), ["UdeG", "Universidad de Guadalajara", "MIT"])
    assert embs.dtype == np.float32 and embs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(embs, axis=1), 1.0, atol=1e-5)


def test_one_batch_path_equals_the_library_encode(tiny_model):
    model = load_model(tiny_model, "cpu", query_prompt="q: ", doc_prompt="d: ")
    texts = ["UdeG", "Universidad de Guadalajara en Jalisco, México", "MIT", "Batman Üniversitesi"]
    for kind, prompt in (("query", "q: "), ("document", "d: ")):
        library = model.encode(texts, prompt=prompt, normalize_embeddings=True, convert_to_numpy=True)
        np.testing.assert_allclose(encode(model, texts, kind=kind), library, atol=1e-6)
        np.testing.assert_allclose(encode(model, texts[:1], kind=kind), library[:1], atol=1e-6)
    # Past one batch the library's own loop runs; both paths agree.
    np.testing.assert_allclose(encode(model, texts, batch_size=3), encode(model, texts, batch_size=4), atol=1e-6)
    assert encode(model, []).size == 0


def test_one_batch_path_turns_dropout_off_as_encode_does(tiny_model):
    model = load_model(tiny_model, "cpu")
    expected = encode(model, ["UdeG", "MIT"])
    model.train()  # as a trainer leaves it between steps
    np.testing.assert_allclose(encode(model, ["UdeG", "MIT"]), expected, atol=1e-6)
    assert not model.training


def test_precision_choice(monkeypatch):
    assert autocast_dtype("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype("cuda:0") is torch.float16


def test_model_fingerprint_tracks_weights_not_records(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    before = model_fingerprint(copy)
    (copy / "metrics.json").write_text("{}")
    assert model_fingerprint(copy) == before
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"\x00")
    assert model_fingerprint(copy) != before
    assert model_fingerprint("intfloat/e5-large-v2") == "hub:intfloat/e5-large-v2"
