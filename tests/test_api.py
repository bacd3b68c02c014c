"""The public Python API: load_retriever and Retriever.lookup, as a user calls them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import test_lookup as lookup_cli
import train_alias_label
from conftest import TEACHER_SMOKE
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from alias_label import Retriever, load_retriever
from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.io import read_json
from alias_label.search.retriever import written_form

THREE_LINES = """
import sys
import alias_label
assert not {"torch", "faiss", "pandas", "sentence_transformers"} & set(sys.modules), "import alias_label is heavy"
from alias_label import load_retriever
retriever = load_retriever("teacher")
table = retriever.lookup(["UdeG", "MIT"], k=5)
print(list(table.columns), len(table), table["query"].unique().tolist())
"""


def bundle_only(home, pipeline_home):
    """A copy of the trained models and their indexes alone, as a user would move them to another machine."""
    for folder in ("models", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    return home


def test_three_lines_in_a_fresh_interpreter_need_only_the_models_and_indexes(home, pipeline_home):
    bundle_only(home, pipeline_home)
    assert not (home / "data").exists()
    result = subprocess.run([sys.executable, "-c", THREE_LINES], capture_output=True, text=True, cwd=home,
                            env={**os.environ, "ALIAS_LABEL_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "['input_row', 'query', 'rank', 'qid', 'label', 'score', 'confidence', 'confident'] 10 ['UdeG', 'MIT']")


def test_defaults_are_the_lookup_scripts(in_pipeline_home):
    teacher, student = load_retriever("teacher"), load_retriever("student")
    assert isinstance(teacher, Retriever) and (teacher.name, student.name) == ("teacher_rerank", "student_rerank")
    calibration = read_json(in_pipeline_home / "models/trained/alias_label_student/calibration.json")
    assert student.abstain == calibration["abstain"]["rerank"]
    assert lookup_cli.parse_args(["x"]).mode == "rerank"
    assert any(isinstance(m, DynamicLinear) for m in student.searcher.first_stage.model.modules())  # int8 on a CPU
    assert not any(isinstance(m, DynamicLinear) for m in teacher.searcher.first_stage.model.modules())
    for role, retriever in (("teacher", teacher), ("student", student)):
        script = lookup_cli.main(lookup_cli.parse_args(["MIT", "--model", role, "-k", "4"]))
        pd.testing.assert_frame_equal(script, retriever.lookup(["MIT"], k=4))


def test_lookup_both_directions_and_a_single_string(in_pipeline_home):
    retriever = load_retriever("teacher", mode="dense")
    labels = retriever.candidates.labels
    forward = retriever.lookup("MIT", k=3)
    assert forward["rank"].tolist() == [1, 2, 3] and forward["score"].is_monotonic_decreasing
    assert set(forward["label"]) <= set(labels["label"])
    label = labels["label"].iloc[0]
    reverse = retriever.lookup([label], k=2, reverse=True)
    assert list(reverse.columns) == ["input_row", "query", "rank", "qid", "alias", "label", "score", "confidence",
                                     "confident"]
    # Each alias comes with the label of the entity it names, as the data pairs them.
    split = load_split()
    pairs = pd.concat([split.train, split.val, split.test])
    for alias, named in zip(reverse["alias"], reverse["label"], strict=True):
        assert set(named.split(" | ")) == set(pairs.loc[pairs["alias"] == alias, "label"])
    assert len(reverse) == 2 and reverse["confidence"].iloc[0] == reverse["score"].iloc[0]
    # no abstain setting was fitted label -> alias, so no alias is confident but by a bar of one's own
    assert not reverse["confident"].any()
    assert retriever.lookup([label], k=2, reverse=True, min_score=-1.0)["confident"].tolist() == [True, False]
    assert not retriever.lookup(["MIT"], k=1, min_score=1.01)["confident"].any()
    with pytest.raises(UserError, match="k=0: ask for at least one match"):
        retriever.lookup(["MIT"], k=0)
    with pytest.raises(UserError, match="mode='sparse': choose one of rerank, hybrid, dense"):
        load_retriever("teacher", mode="sparse")


def test_a_retriever_shows_itself_in_one_line(in_pipeline_home):
    retriever = load_retriever("teacher")
    shown = repr(retriever)
    assert "\n" not in shown and len(shown) < 400  # not the model, the indexes and every label
    assert shown.startswith("Retriever('teacher_rerank', model=")
    assert f"labels={len(retriever.candidates.labels)}" in shown
    setting = {"reads": "probability", "threshold": 0.9371, "margin": 0.0, "met_target": True}
    assert replace(retriever, abstain=setting).confident_when() == (
        "probability right >= 0.937, or the query is its label as written")
    scored = {"threshold": 0.945, "margin": 0.1731}
    assert replace(retriever, abstain=scored).confident_when() == (
        "score >= 0.945, 0.173 above the runner-up, or the query is its label as written")
    assert replace(retriever, abstain={**setting, "met_target": False}).confident_when() == (
        "only when the query is its label as written (the setting missed its precision target on validation)")
    assert replace(retriever, abstain=None).confident_when() == (
        "only when the query is its label as written (no calibrated setting)")


def test_a_query_that_is_its_label_as_written_is_confident(in_pipeline_home):
    # the smoke teacher's setting missed its target: no other answer is flagged confident
    retriever = load_retriever("teacher")
    assert not retriever.vouches
    labels = retriever.candidates.labels
    unique = [label for label, qids in zip(labels["label"], labels["qids"], strict=True)
              if retriever.owners_of_form[written_form(label)] == set(qids)]
    first = retriever.lookup(unique[:100], k=1)
    label = first.loc[first["label"] == first["query"], "label"].iloc[0]
    forms = [label, label.upper(), f"  {label.lower()}\u200b"]
    table = retriever.lookup([*forms, label + " x"], k=2)
    top = table[table["rank"] == 1]
    assert top["label"].tolist()[:3] == [label] * 3
    assert top["confident"].tolist() == [True, True, True, top["label"].iloc[3] == label + " x"]
    assert not table.loc[table["rank"] == 2, "confident"].any()
    assert not retriever.lookup(label, k=1, reverse=True)["confident"].any()  # alias -> label only
    # the same name as another entity's alias could mean that entity: the model decides
    aliases = pd.concat([retriever.candidates.aliases,
                         pd.DataFrame({"alias": [label.upper()], "qids": [["another-entity"]]})], ignore_index=True)
    shared = replace(retriever, candidates=replace(retriever.candidates, aliases=aliases))
    assert not shared.lookup([label], k=1)["confident"].any()
    row = int(np.flatnonzero(labels["label"].to_numpy() == label)[0])
    assert retriever.exact_label_answers([label, label], np.array([row, -1])).tolist() == [True, False]
    assert shared.exact_label_answers([label], np.array([row])).tolist() == [False]


def test_a_lookup_deeper_than_the_candidates_lists_each_candidate_once(in_pipeline_home):
    retriever = load_retriever("teacher")
    n_labels = len(retriever.candidates.labels)
    table = retriever.lookup(["MIT"], k=n_labels + 50)
    assert 0 < len(table) <= n_labels and table["label"].is_unique  # no padding row read as a label
    assert table["rank"].tolist() == list(range(1, len(table) + 1))


def test_a_column_with_gaps_and_repeats_keeps_one_block_a_query_in_input_order(in_pipeline_home):
    retriever = load_retriever("teacher")
    column = pd.Series(["MIT", None, "  MIT ", np.nan, "UdeG", ""], name="name")
    table = retriever.lookup(column, k=2)
    assert table["query"].tolist() == ["MIT", "MIT", "", "  MIT ", "  MIT ", "", "UdeG", "UdeG", ""]
    assert table["rank"].tolist() == [1, 2, pd.NA, 1, 2, pd.NA, 1, 2, pd.NA]
    assert table["input_row"].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5]
    blank = table[table["rank"].isna()]
    assert (blank["label"] == "").all() and (blank["qid"] == "").all() and not blank["confident"].any()
    assert blank["score"].isna().all() and blank["confidence"].isna().all()
    # a padded repeat is the same search: the same rows, and the same rows as the name alone
    ranked = table.dropna(subset=["rank"]).drop(columns=["input_row", "query"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ranked.iloc[0:2].reset_index(drop=True), ranked.iloc[2:4].reset_index(drop=True))
    alone = retriever.lookup(["MIT"], k=2).drop(columns=["input_row", "query"])
    pd.testing.assert_frame_equal(ranked.iloc[0:2].reset_index(drop=True), alone)
    # a column of a table keeps its table's row labels, so the answers join back on them
    people = pd.DataFrame({"name": ["UdeG", None, "MIT"]}, index=["r7", "r3", "r9"])
    matches = retriever.lookup(people["name"], k=2)
    assert matches["input_row"].tolist() == ["r7", "r7", "r3", "r9", "r9"]
    top = people.join(matches[matches["rank"].fillna(1) == 1].set_index("input_row"))
    assert top["query"].tolist() == ["UdeG", "", "MIT"] and pd.isna(top.loc["r3", "rank"])
    assert top.loc["r9", "label"] == alone_label(retriever, "MIT")
    # a long column is searched in batches, to the same rows
    pd.testing.assert_frame_equal(retriever.lookup(column, k=2, batch_size=1), table)
    with pytest.raises(UserError, match="batch_size=0: search at least one query at a time"):
        retriever.lookup(column, batch_size=0)
    empty = retriever.lookup([], k=2)
    assert empty.empty and list(empty.columns) == list(table.columns)
    with pytest.raises(UserError, match=r"query 1 is int 42, not text\. Pass strings \(e\.g\. table\[column\]"
                                        r"\.astype\(str\)\); None or NaN is a blank query"):
        retriever.lookup(["MIT", 42])
    with pytest.raises(UserError, match=r"queries is a table with columns \['name'\]; pass one column of it"):
        retriever.lookup(people[["name"]])


@pytest.mark.parametrize(("model", "mode"), [("teacher", "rerank"), ("student", "rerank"), ("student", "hybrid"),
                                           ("teacher", "dense")])
def test_a_name_gets_the_same_answers_in_any_batch_as_alone(in_pipeline_home, model, mode):
    # Enough names for FAISS's batched search, some in other scripts; the student runs int8, where a
    # batch's activations would share one quantisation scale.
    split = load_split()
    aliases = pd.concat([split.test["alias"], split.val["alias"], split.train["alias"]]).drop_duplicates().tolist()[:30]
    labels = split.labels["label"].tolist()[:25]
    assert len(aliases) == 30 and any(not alias.isascii() for alias in aliases)
    retriever = load_retriever(model, mode=mode)
    batch = retriever.labels_with_confidence(aliases, 5)
    alone = [retriever.labels_with_confidence([alias], 5) for alias in aliases]
    for part, values in enumerate(batch):  # scores, label rows and the confidence read, to the last bit
        assert np.array_equal(values, np.vstack([one[part] for one in alone])), (model, mode, part)
    reverse = retriever.aliases_for(labels, 5)
    for part, values in enumerate(reverse):
        assert np.array_equal(values, np.vstack([retriever.aliases_for([label], 5)[part] for label in labels]))
    mixed = retriever.lookup(aliases[::-1] + labels, k=3).drop(columns="input_row")
    each = pd.concat([retriever.lookup(alias, k=3) for alias in aliases[::-1] + labels]).drop(columns="input_row")
    pd.testing.assert_frame_equal(mixed.reset_index(drop=True), each.reset_index(drop=True))


def test_a_model_named_wrong_gets_the_names_that_work(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=rf"no trained model at {tmp_path / 'Teacher'}\. Did you mean 'teacher'\? "
                                        "Build it with: python scripts/train_alias_label.py --output"):
        load_retriever("Teacher")
    with pytest.raises(UserError, match=r"no trained model at .*giant\. Build it with"):
        load_retriever("giant")  # any other name may be a folder to train into
    with pytest.raises(UserError, match="the model is blank: name teacher, student or a trained model's folder"):
        load_retriever(" ")


def test_text_that_reads_the_same_is_searched_the_same(in_pipeline_home):
    retriever = load_retriever("teacher")
    label = next(text for text in retriever.candidates.labels["label"] if not text.isascii()
                 and unicodedata.normalize("NFD", text) != text)
    forms = [label, unicodedata.normalize("NFD", label), "\ufeff" + label, label.replace(" ", " \u200b", 1)]
    assert len(set(forms)) == 4
    table = retriever.lookup(forms + ["\u200b"], k=2)
    assert table["query"].tolist() == [form for form in forms for _ in range(2)] + ["\u200b"]  # as given
    answers = table.drop(columns=["input_row", "query"])
    blocks = [answers.iloc[start:start + 2].reset_index(drop=True) for start in (0, 2, 4, 6)]
    for block in blocks[1:]:
        pd.testing.assert_frame_equal(block, blocks[0])
    assert pd.isna(table["rank"].iloc[-1]) and table["label"].iloc[-1] == ""  # nothing visible: a blank query


def alone_label(retriever, query: str) -> str:
    return retriever.lookup(query, k=1)["label"].iloc[0]


def test_a_teacher_saved_elsewhere_is_looked_up_by_its_folder(home, tiny_model, swot_slice, tmp_path):
    output, index_dir = tmp_path / "my_teacher", tmp_path / "my_indexes"
    train_alias_label.main(train_alias_label.parse_args(
        ["--data", str(swot_slice), "--base-model", str(tiny_model), *TEACHER_SMOKE, "--rounds", "1", "--epochs", "1",
         "--output", str(output), "--index-dir", str(index_dir)]))
    assert sorted(path.name for path in index_dir.glob("*.index")) == ["aliases.index", "labels.index"]
    assert not (home / "models/trained/alias_label_teacher").exists()
    retriever = load_retriever(output)
    matches = lookup_cli.main(lookup_cli.parse_args(["MIT", "--model", str(output), "-k", "2"]))
    pd.testing.assert_frame_equal(matches, retriever.lookup(["MIT"], k=2))
    # Moved together, the folder and its indexes still find each other.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(output, moved / "my_teacher")
    shutil.move(index_dir, moved / "my_indexes")
    pd.testing.assert_frame_equal(load_retriever(moved / "my_teacher").lookup(["MIT"], k=2), matches)


def test_a_stale_index_is_refused_with_its_fix(home, pipeline_home):
    bundle_only(home, pipeline_home)
    sidecar = home / "faiss/labels.index.json"
    sidecar.write_text(sidecar.read_text().replace('"model_fingerprint": "', '"model_fingerprint": "x', 1))
    with pytest.raises(UserError, match="labels.index was built by another model.*python scripts/train_alias_label"):
        load_retriever("teacher")
    (home / "models/trained/alias_label_teacher/indexes.json").unlink()
    with pytest.raises(UserError, match="names no indexes.*python scripts/train_alias_label.py"):
        load_retriever("teacher")


def test_the_package_exports_few_names():
    import alias_label

    assert alias_label.__all__ == ["Retriever", "load_retriever"]
    with pytest.raises(AttributeError):
        alias_label.trained_retriever  # noqa: B018
