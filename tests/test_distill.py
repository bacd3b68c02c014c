"""Distillation: the teacher cache, hard-negative mining, pair targets, bad input, end-to-end runs."""

from __future__ import annotations

import json

import distill_model
import numpy as np
import pandas as pd
import pytest
from conftest import unit_rows

import alias_label.train.mining as mining
from alias_label.data.split import load_split, make_split
from alias_label.data.table import clean_table
from alias_label.errors import UserError
from alias_label.index.dense import load_index
from alias_label.io import read_json
from alias_label.models.encode import encode
from alias_label.models.load import embedding_dim, load_model, model_fingerprint
from alias_label.paths import paths
from alias_label.train.distill import (
    default_student_layers,
    distillation_pairs,
    generated_embeddings,
    layer_indices,
    reduce_layers,
    teacher_embeddings,
)
from alias_label.train.mining import forbidden_rows, mine_hard_negatives


def toy_split():
    rows = [{"qid": f"q{i}", "label": f"Label {i}", "alias": f"alias {i}"} for i in range(12)]
    rows += [{"qid": "q99", "label": "label 0", "alias": ""},  # case variant of q0's label
             {"qid": "q5", "label": "Label 5", "alias": "alias 0"}]  # one alias string, two entities
    table, _ = clean_table(pd.DataFrame(rows).assign(description="", website=""))
    return make_split(table, seed=3, val_frac=0.2, test_frac=0.2)


def test_mined_negatives_are_the_top_k_non_gold(monkeypatch):
    labels, aliases = unit_rows(50, d=16, seed=1), unit_rows(30, d=16, seed=2)
    forbidden = [np.array([i, (i + 7) % 50]) for i in range(30)]
    monkeypatch.setattr(mining, "CHUNK_BYTES", 4 * 50 * 4)  # 4 aliases per chunk: exercise chunking
    rows, scores = mine_hard_negatives(aliases, labels, forbidden, k=5)
    full = aliases @ labels.T
    for i in range(30):
        assert not set(rows[i]) & set(forbidden[i].tolist())
        allowed = np.delete(np.arange(50), forbidden[i])
        expected = allowed[np.argsort(-full[i, allowed])[:5]]
        assert rows[i].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[i], full[i, rows[i]], rtol=1e-5)


def test_gold_strings_never_negatives():
    split = toy_split()
    train = split.train.drop_duplicates(["alias", "label"])
    forbidden = forbidden_rows(split, train["alias"])
    labels = split.labels["label"].tolist()
    for alias, rows in zip(train["alias"], forbidden, strict=True):
        gold = {label.casefold() for label in split.train.loc[split.train["alias"] == alias, "label"]}
        gold |= {label.casefold() for label in pd.concat([split.val, split.test]).query("alias == @alias")["label"]}
        assert {labels[r].casefold() for r in rows} == gold
    # Gold made the most similar label of all: mining must still skip it and its case variants.
    embeddings = {"labels": unit_rows(len(split.labels)), "aliases": unit_rows(len(split.aliases), seed=5)}
    embeddings["aliases"][split.alias_rows(train["alias"])] = embeddings["labels"][split.label_rows(train["label"])]
    pairs = distillation_pairs(split, embeddings, k=3)
    negatives = pairs[~pairs["gold"]]
    for alias, label in zip(negatives["alias"], negatives["label"], strict=True):
        assert label.casefold() not in {g.casefold() for g in split.train.loc[split.train["alias"] == alias, "label"]}


def test_pair_targets_equal_teacher_cosines():
    split = toy_split()
    embeddings = {"labels": unit_rows(len(split.labels)), "aliases": unit_rows(len(split.aliases), seed=5)}
    pairs = distillation_pairs(split, embeddings, k=4)
    assert pairs["gold"].sum() == len(split.train.drop_duplicates(["alias", "label"]))
    assert (~pairs["gold"]).sum() == 4 * pairs["gold"].sum()
    expected = np.einsum("ij,ij->i", embeddings["aliases"][split.alias_rows(pairs["alias"])],
                         embeddings["labels"][split.label_rows(pairs["label"])])
    np.testing.assert_allclose(pairs["score"], expected, rtol=1e-5, atol=1e-6)


def test_too_few_labels_for_k():
    split = toy_split()
    embeddings = {"labels": unit_rows(len(split.labels)), "aliases": unit_rows(len(split.aliases), seed=5)}
    with pytest.raises(UserError, match="--hard-negatives 20 needs at least .* labels, but there are 13"):
        distillation_pairs(split, embeddings, k=20)


def test_layer_indices():
    assert layer_indices(6, 2) == [0, 5]
    assert layer_indices(6, 3) == [0, 2, 5]
    assert layer_indices(6, 6) == list(range(6))
    with pytest.raises(UserError, match="between 1 and the teacher's 6 layers"):
        layer_indices(6, 7)


def test_the_default_student_keeps_half_the_teachers_layers(tmp_path):
    from conftest import make_tiny_model

    assert distill_model.parse_args([]).student_layers is None
    assert [default_student_layers(n) for n in (1, 2, 3, 6, 12, 24)] == [1, 1, 2, 3, 6, 12]
    for layers, kept in ((6, [0, 2, 5]), (3, [0, 2])):
        model = load_model(make_tiny_model(tmp_path / f"l{layers}", layers=layers), "cpu")
        assert reduce_layers(model, None) == kept and len(model[0].auto_model.encoder.layer) == len(kept)


def test_reduce_layers_keeps_the_named_layers(in_pipeline_home):
    student = load_model(paths().teacher, "cpu")  # the tiny teacher has 2 layers
    second = student[0].auto_model.encoder.layer[1]
    assert reduce_layers(student, 2, kept=[1]) == [1]
    assert list(student[0].auto_model.encoder.layer) == [second]  # the very module, weights and all
    assert student[0].auto_model.config.num_hidden_layers == 1
    teacher = load_model(paths().teacher, "cpu")
    for wrong in ([], [1, 0], [0, 0], [2]):
        with pytest.raises(UserError, match=r"must be increasing indices from 0 to 1"):
            reduce_layers(teacher, 1, kept=wrong)
    assert len(teacher[0].auto_model.encoder.layer) == 2  # refused before anything was dropped


def test_teacher_cache_hit_miss_and_stale(in_pipeline_home, caplog, tmp_path):
    home = in_pipeline_home
    teacher_dir = home / "models/trained/alias_label_teacher"
    split = load_split()
    teacher = load_model(teacher_dir, "cpu")
    caplog.set_level("INFO")
    # The teacher run wrote the cache: nothing is encoded twice.
    embeddings, status = teacher_embeddings(teacher, teacher_dir, split)
    assert status == "hit" and embeddings["labels"].shape == (len(split.labels), 32)
    # An empty cache folder: miss, then hit on the second call.
    assert teacher_embeddings(teacher, teacher_dir, split, tmp_path)[1] == "miss"
    again, status = teacher_embeddings(teacher, teacher_dir, split, tmp_path)
    assert status == "hit"
    # The smoke teacher ran on this machine's device (bf16 on a GPU); this re-encode runs in fp32 on CPU.
    np.testing.assert_allclose(again["aliases"], embeddings["aliases"], atol=2e-3)
    # A cache from another teacher is stale and says why.
    sidecar = tmp_path / "teacher_label_embs.npy.json"
    sidecar.write_text(json.dumps({**read_json(sidecar), "model_fingerprint": "other"}))
    caplog.clear()
    assert teacher_embeddings(teacher, teacher_dir, split, tmp_path)[1] == "miss"
    assert "stale cache teacher_label_embs.npy: model_fingerprint is 'other'" in caplog.text
    assert teacher_embeddings(teacher, teacher_dir, split, tmp_path, refresh=True)[1] == "miss"


def test_generated_alias_cache_hit_miss_and_stale(in_pipeline_home, caplog, tmp_path):
    teacher_dir = in_pipeline_home / "models/trained/alias_label_teacher"
    split = load_split()
    teacher = load_model(teacher_dir, "cpu")
    texts = ["Univ. of Somewhere", "UoS", "Somewhere University"]
    caplog.set_level("INFO")
    first, status = generated_embeddings(teacher, teacher_dir, split, texts, tmp_path)
    assert status == "miss" and first.shape == (3, 32)
    np.testing.assert_allclose(first, encode(teacher, texts, kind="query"), atol=1e-6)
    again, status = generated_embeddings(teacher, teacher_dir, split, texts, tmp_path)
    assert status == "hit"
    np.testing.assert_array_equal(again, first)
    # Other texts (another --augment) are a miss, and the log says why.
    caplog.clear()
    other, status = generated_embeddings(teacher, teacher_dir, split, texts[:2], tmp_path)
    assert status == "miss" and other.shape == (2, 32)
    assert "stale cache teacher_generated_alias_embs.npy: texts_fingerprint" in caplog.text
    assert generated_embeddings(teacher, teacher_dir, split, texts[:2], tmp_path, refresh=True)[1] == "miss"


def test_student_smoke_run_outputs(in_pipeline_home):
    home = in_pipeline_home
    student_dir = home / "models/trained/alias_label_student"
    config = read_json(student_dir / "training_config.json")
    split = load_split()
    assert config["cache"] == "hit" and config["kept_layers"] == [0]
    assert config["teacher_fingerprint"] == model_fingerprint(home / "models/trained/alias_label_teacher")
    assert load_model(student_dir, "cpu")[0].auto_model.config.num_hidden_layers == 1
    metrics = read_json(student_dir / "metrics.json")
    assert 0 <= metrics["val"]["agreement"] <= 1 and metrics["val"]["n"] == len(split.val) and "test" not in metrics
    assert read_json(student_dir / "indexes.json")["labels"] == "../../../faiss/labels_distilled.index"
    for kind in ("labels", "aliases"):
        index, sidecar = load_index(home / f"faiss/{kind}_distilled.index", "fix", split.fingerprint)
        assert sidecar["model_role"] == "student" and index.ntotal == sidecar["rows"]
    epochs = [json.loads(line) for line in (home / "logs/metrics/student.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1.0, 2.0, 3.0] and all("val_agreement" in e for e in epochs)


def test_missing_teacher_names_the_command(home, swot_slice):
    from train_alias_label import parse_args as teacher_args

    from alias_label.data.split import ensure_split

    ensure_split(teacher_args(["--data", str(swot_slice), "--limit", "20"]))
    with pytest.raises(UserError, match="no trained model at .*_teacher. Build it with: python scripts/train_alias"):
        distill_model.main(distill_model.parse_args([]))


def test_teacher_of_another_split_names_the_command(home, pipeline_home, swot_slice):
    import shutil

    from train_alias_label import parse_args as teacher_args

    from alias_label.data.split import ensure_split

    shutil.copytree(pipeline_home / "models", home / "models")
    ensure_split(teacher_args(["--data", str(swot_slice), "--limit", "30"]))
    with pytest.raises(UserError, match="was trained on split .* Retrain it on this split with: python scripts/train"):
        distill_model.main(distill_model.parse_args([]))


def test_student_resume_and_embedding_mse_with_projection(home, pipeline_home, tmp_path):
    import shutil

    from conftest import make_tiny_model

    for folder in ("models", "data", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    other_shape = make_tiny_model(tmp_path / "narrow", hidden=16, layers=1)
    base = ["--epochs", "1", "--batch-size", "8", "--save-steps", "2", "--objective", "embedding-mse",
            "--student-base", str(other_shape)]
    assert distill_model.main(distill_model.parse_args([*base, "--stop-after-steps", "2"])) == {"stopped_at_step": 2}
    with pytest.raises(UserError, match="belong to another run.*training_texts"):  # other texts to imitate
        distill_model.main(distill_model.parse_args([*base, "--resume", "--augment", "case-order"]))
    metrics = distill_model.main(distill_model.parse_args([*base, "--resume"]))
    assert metrics["val"]["n"] == len(load_split().val)
    student = load_model(home / "models/trained/alias_label_student", "cpu")
    assert embedding_dim(student) == 32  # projected up to the teacher's dimension


def test_student_augment_imitates_the_teacher_on_generated_aliases(in_pipeline_home):
    from alias_label.models.encode import encode

    split = load_split()
    teacher_dir = in_pipeline_home / "models/trained/alias_label_teacher"
    teacher = load_model(teacher_dir, "cpu")
    args = distill_model.parse_args(["--augment", "acronym", "case-order"])
    texts, targets = distill_model.generated_queries(args, split, teacher)
    assert texts and len(set(texts)) == len(texts)
    assert not {text.casefold() for text in texts} & set(split.aliases["alias"].str.casefold())
    np.testing.assert_allclose(targets, encode(teacher, texts, kind="query"), atol=1e-5)
    embeddings, _ = teacher_embeddings(teacher, teacher_dir, split)
    queries = distill_model.training_dataset(args, split, embeddings, (texts, targets), "cpu")["queries"]
    assert queries["text"][-len(texts):] == texts
    np.testing.assert_allclose(np.array(queries["label"][-len(texts):]), targets, atol=1e-6)
    assert distill_model.parse_args([]).augment == ["acronym", "generic-drop", "transliterate", "case-order"]
    assert distill_model.parse_args(["--augment", "none"]).augment == []
    assert distill_model.parse_args(["--objective", "cosine"]).augment == []
    for wrong in (["--augment", "acronym", "--objective", "cosine"], ["--augment", "none", "acronym"]):
        with pytest.raises(SystemExit):
            distill_model.parse_args(wrong)


def test_student_queries_over_the_teachers_vectors(home, pipeline_home):
    import shutil

    import build_index as build_index_cli

    from alias_label.index.cache import cache_paths
    from alias_label.search.retriever import load_dense
    from alias_label.search.scoring import score_split

    for folder in ("models", "data", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    small = ["--epochs", "1", "--batch-size", "8"]
    with pytest.raises(SystemExit):
        distill_model.parse_args(["--objective", "cosine", "--index-vectors", "teacher"])  # its own space
    cosine = distill_model.parse_args([*small, "--objective", "cosine"])
    assert cosine.index_vectors == "student"
    distill_model.main(cosine)
    with pytest.raises(UserError, match="distilled with --objective cosine.*--objective embedding-mse"):
        build_index_cli.main(build_index_cli.parse_args(["--model", "student", "--vectors-from", "teacher"]))
    defaults = distill_model.parse_args(small)
    assert (defaults.objective, defaults.index_vectors) == ("embedding-mse", "teacher")
    metrics = distill_model.main(defaults)
    # The label index holds the teacher's label vectors, then those of the labels' transliterated keys.
    teacher_rows = np.vstack([np.load(cache_paths()[kind]) for kind in ("labels", "label_keys")])
    index, _ = load_index(home / "faiss/labels_distilled.index", "fix")
    np.testing.assert_allclose(index.index.reconstruct_n(0, index.ntotal), teacher_rows, atol=1e-6)
    split = load_split()
    # The figure the script logs is the one scorer's on the saved model.
    val_metrics, _, ranked = score_split(load_dense("student", "cpu", int8=False), split, "val")
    assert metrics["val"]["top1"] == pytest.approx(val_metrics["top1"])
    # A cache without the label keys' file: re-indexing re-encodes it with the teacher.
    cache_paths()["label_keys"].unlink()
    build_index_cli.main(build_index_cli.parse_args(["--model", "student", "--vectors-from", "teacher"]))
    np.testing.assert_allclose(np.load(cache_paths()["label_keys"]), teacher_rows[len(split.labels):], atol=1e-5)
    assert load_dense("student", "cpu", int8=False).labels_for(split.val["alias"], 100)[1].tolist() == ranked.tolist()
