"""The reranker: features, fitting in entity folds on validation, saving and refusing a stale one."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from alias_label.data.split import make_split
from alias_label.data.table import clean_table
from alias_label.errors import UserError
from alias_label.index.tables import Candidates, build_label_index, encode_candidates
from alias_label.io import read_json
from alias_label.models.load import load_model
from alias_label.search.confidence import probabilities, top_answer_features
from alias_label.search.features import FEATURES, GROUPS, LabelTable, aligned_initials, pair_features, site_name
from alias_label.search.folds import check_folds
from alias_label.search.rerank import (
    BOOSTERS_FILE,
    CONFIDENCE_FILE,
    REPEATS,
    RERANKER_FILE,
    FirstStage,
    RerankSearcher,
    booster_params,
    entity_folds,
    fit_abstain_shares,
    fit_boosters,
    fit_out_of_fold,
    fit_reranker,
    load_reranker,
    mean_raw,
    out_of_fold,
    predict_each,
    top_shares,
    training_table,
)
from alias_label.search.searchers import Searcher

SYLLABLES = ["ka", "lo", "mi", "ren", "so", "tu", "vel", "dar", "pe", "qui", "zo", "ban", "fi", "gor", "hu", "jax"]


def synthetic_table(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Entities with three-word labels, each with an acronym alias and a misspelt alias.

    The acronym channel alone answers the acronyms, TF-IDF alone the misspellings: no single
    channel gets both kinds right, a reranker that learns which to trust does.
    """
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    while len(rows) < 2 * n:
        words = ["".join(rng.choice(SYLLABLES, 3)).capitalize() for _ in range(3)]
        initials = "".join(word[0] for word in words)
        if initials in seen:
            continue
        seen.add(initials)
        label = " ".join(words)
        typo = list(label)
        at = int(rng.integers(1, len(label) - 2))
        typo[at], typo[at + 1] = typo[at + 1], typo[at]
        qid = f"e{len(rows)}"
        rows += [{"qid": qid, "label": label, "alias": initials}, {"qid": qid, "label": label, "alias": "".join(typo)}]
    return clean_table(pd.DataFrame(rows).assign(description="", website=""))[0]


@pytest.fixture(scope="module")
def reranked(tmp_path_factory, tiny_model):
    split = make_split(synthetic_table(), seed=1, val_frac=0.3, test_frac=0.3)
    model_dir = tmp_path_factory.mktemp("rerank") / "model"
    shutil.copytree(tiny_model, model_dir)
    model = load_model(model_dir, "cpu")
    embeddings = encode_candidates(model, split)
    dense = Searcher("teacher", build_label_index(embeddings, split, "label"), None, model)
    first_stage = FirstStage.build(dense, Candidates.from_split(split, "label"), {"weight": 0.5, "exponent": 1.0}, k=10)
    sidecar = fit_reranker(first_stage, split, model_dir, "teacher", 0.9, 0.9, folds=3)
    _, boosters, confidence = load_reranker(model_dir, split.fingerprint, "python fix.py")
    searcher = RerankSearcher("teacher_rerank", first_stage, boosters, sidecar["temperature"], sidecar["features"],
                              dense, confidence)
    return split, model_dir, first_stage, sidecar, searcher


def top1_right(split, ids) -> float:
    gold = split.label_rows(split.test["label"])
    return float(np.mean(ids[:, 0] == gold))


def test_the_reranker_beats_every_channel_where_none_suffices(reranked):
    split, _, first_stage, _, searcher = reranked
    aliases = split.test["alias"].tolist()
    channels = {"tfidf": first_stage.lexical.labels_for(aliases, 5)[1],
                "acronym": first_stage.acronym.search(aliases, 5)[1],
                "dense": first_stage.label_index.search(first_stage.model.encode(aliases), 5)[1]}
    best_channel = max(top1_right(split, ids) for ids in channels.values())
    assert best_channel <= 0.6  # each channel gets one kind of alias only
    scores, ids = searcher.labels_for(aliases, 5)
    assert top1_right(split, ids) >= best_channel + 0.3
    assert np.all(np.diff(scores, axis=1) <= 1e-6) and np.all((scores >= 0) & (scores <= 1))


def test_the_sidecar_names_what_it_saw_and_stale_ones_are_refused(reranked):
    split, model_dir, _, sidecar, _ = reranked
    assert sidecar["fitted_on"] == "val" and sidecar["data_fingerprint"] == split.fingerprint
    assert sidecar["features"] == FEATURES and sidecar["folds"] == 3 and sidecar["lightgbm"]
    assert sidecar["repeats"] == REPEATS > 1
    assert read_json(model_dir / RERANKER_FILE) == sidecar
    assert sidecar["val_out_of_fold"]["n"] == len(split.val)
    # The teacher's reranker has more trees than the student's, whose lookups are the fast path.
    assert sidecar["booster_params"] == booster_params("teacher")
    assert booster_params("teacher")["n_estimators"] > booster_params("student")["n_estimators"]
    _, boosters, confidence = load_reranker(model_dir, split.fingerprint, "python fix.py")
    assert len(boosters) == sidecar["folds"] * sidecar["repeats"]
    assert len(confidence) == sidecar["folds"] * sidecar["confidence_repeats"] and sidecar["confidence_repeats"] > 1
    # Each was fitted for the teacher's trees (LightGBM stops adding them once no split gains on data this small).
    assert all(b.params["num_iterations"] == booster_params("teacher")["n_estimators"] >= b.num_trees()
               for b in boosters)
    with pytest.raises(UserError, match="does not match its data.*python fix.py"):
        load_reranker(model_dir, "another split", "python fix.py")
    for name, what in ((BOOSTERS_FILE, "boosters"), (CONFIDENCE_FILE, "confidence")):
        text = (model_dir / name).read_text()
        try:
            (model_dir / name).write_text(text.replace("tree", "tres", 1))
            with pytest.raises(UserError, match=f"does not match its {what}"):
                load_reranker(model_dir, split.fingerprint, "python fix.py")
        finally:
            (model_dir / name).write_text(text)
    for name in (RERANKER_FILE, CONFIDENCE_FILE):
        (model_dir / name).rename(model_dir / "moved.json")
        try:
            with pytest.raises(UserError, match="has no reranker.*python fix.py"):
                load_reranker(model_dir, split.fingerprint, "python fix.py")
        finally:
            (model_dir / "moved.json").rename(model_dir / name)


def test_the_fold_models_that_fit_the_abstain_rank_at_lookup(reranked):
    split, _, first_stage, sidecar, searcher = reranked
    assert len(searcher.boosters) == sidecar["folds"] * sidecar["repeats"] == 3 * REPEATS
    _, matrices, relevance, entities = training_table(first_stage, split, "val")
    columns = list(range(len(FEATURES)))
    raw, boosters = out_of_fold(matrices, relevance, entities, columns, 3, seed=13, params=booster_params("teacher"),
                                repeats=2)
    assert len(boosters) == 6
    cuts = [entity_folds(entities, 3, seed=13), entity_folds(entities, 3, seed=16)]
    assert not np.array_equal(*cuts)  # the second cut puts entities in other folds
    for i in range(0, len(matrices), 7):  # each alias scored by the fold model of each cut that did not see it
        unseen = [boosters[3 * cut + fold[i]].predict(matrices[i]) for cut, fold in enumerate(cuts)]
        assert np.allclose(raw[i], np.mean(unseen, axis=0))
        mean = np.mean([booster.predict(matrices[i]) for booster in searcher.boosters], axis=0)
        assert np.allclose(mean_raw(searcher.boosters, [matrices[i]], searcher.columns)[0], mean)


def test_the_boosters_score_many_aliases_in_one_call_as_they_score_each_alone(reranked):
    split, _, first_stage, _, searcher = reranked
    _, matrices, _, _ = training_table(first_stage, split, "val")
    matrices = [matrices[0], matrices[1][:0], *matrices[1:]]  # an alias with no candidates among them
    booster = searcher.boosters[0]
    each = predict_each(booster, matrices)
    assert [len(scores) for scores in each] == [len(matrix) for matrix in matrices] and len(each[1]) == 0
    for matrix, scores in zip(matrices, each, strict=True):
        if len(matrix):
            np.testing.assert_array_equal(scores, booster.predict(matrix))
    alone = [mean_raw(searcher.boosters, [matrix], searcher.columns)[0] for matrix in matrices]
    for together, by_itself in zip(mean_raw(searcher.boosters, matrices, searcher.columns), alone, strict=True):
        np.testing.assert_array_equal(together, by_itself)
    assert predict_each(booster, [matrices[1]])[0].shape == (0,)


def test_the_shares_a_lookup_returns_are_those_the_temperature_was_fitted_on(reranked):
    split, _, first_stage, sidecar, searcher = reranked
    aliases = split.test["alias"].tolist()
    scores, _ = searcher.labels_for(aliases, 2)
    _, matrices, _, _ = training_table(first_stage, split, "test")
    raw = mean_raw(searcher.boosters, matrices, searcher.columns)
    assert np.array_equal(top_shares(raw, sidecar["temperature"]), scores)
    # A share within float32's rounding of 1 is 1 at lookup, so it must be 1 where the setting is fitted.
    assert top_shares([np.array([0.0, -5.0])], 0.25)[0, 0] == 1.0


CYRILLIC = dict(zip("abdefghiklmnoprstuvz", "абдефгхиклмнопрстувз", strict=True))


def test_a_batch_gets_the_candidates_of_each_alias_alone_and_the_transliterated_channel_reads_cyrillic(reranked):
    split, _, first_stage, _, _ = reranked
    label = next(label for label in split.labels["label"] if set(label.casefold()) <= set(CYRILLIC) | {" "})
    cyrillic = "".join(CYRILLIC.get(ch, ch) for ch in label.casefold())
    aliases = [split.test["alias"].iloc[0], cyrillic, split.test["alias"].iloc[1]]
    rows, features = first_stage.candidates(aliases)
    for alias, batch_rows, batch_features in zip(aliases, rows, features, strict=True):
        alone_rows, alone_features = first_stage.candidates([alias])
        np.testing.assert_array_equal(batch_rows, alone_rows[0])
        # The model encodes a batch with padding, so its scores may differ in the last bit.
        np.testing.assert_allclose(batch_features, alone_features[0], rtol=1e-5)
    at = np.flatnonzero(rows[1] == split.label_rows(np.array([label]))[0])
    columns = {name: FEATURES.index(name) for name in ("rank_tfidf", "rank_tfidf_query_translit")}
    assert features[1][at[0], columns["rank_tfidf_query_translit"]] == 1
    assert np.isnan(features[1][at[0], columns["rank_tfidf"]]) or features[1][at[0], columns["rank_tfidf"]] > 1


def test_of_temperatures_that_keep_as_many_aliases_the_highest_is_chosen():
    # Right answers stand far out, wrong ones barely: every temperature keeps exactly the right ones.
    right = np.arange(60) % 3 != 0
    raw = [np.array([12.0, 0.0, -1.0]) if ok else np.array([0.1, 0.0, -1.0]) for ok in right]
    temperature, abstain = fit_abstain_shares(raw, right, 0.95, 0.9)
    assert temperature == 2.0 and abstain["met_target"]
    assert abstain["val"]["coverage"] == right.mean() and abstain["threshold"] < 1.0


def test_one_entity_cannot_be_cut_into_folds():
    table = ([np.zeros(2)], [np.zeros((2, len(FEATURES)))], [np.array([1, 0])], np.array(["only"]))
    with pytest.raises(UserError, match=r"holds 1 alias\(es\) of 1 entity\(ies\), too few for the reranker"):
        fit_out_of_fold(table, FEATURES, 0.95, 0.9)


@pytest.mark.parametrize("entities, enough", [
    (["a", "a", "b"], False),            # the fold holding out "a" would learn from one alias
    (["a", "b"], False),
    (["a", "a", "a", "b", "c"], True),    # every fold learns from two aliases at least
    (["a", "b", "c"], True),
])
def test_folds_need_two_aliases_to_learn_from_besides_the_largest_entity(entities, enough):
    if enough:
        check_folds(np.array(entities))
    else:
        with pytest.raises(UserError, match=r"needs two entities and at least 2 aliases besides those of the entity "
                                            r"with the most\. Give validation more entities with --val-frac"):
            check_folds(np.array(entities))


def test_a_reranker_fold_without_a_gold_candidate_says_so():
    with pytest.raises(UserError, match="none of the 2 validation aliases a reranker fold learns from has its gold"):
        fit_boosters([np.zeros((3, 2)), np.zeros((3, 2))], [np.zeros(3, int), np.zeros(3, int)], [0, 1], seed=1)


def test_folds_never_split_an_entity():
    entities = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    fold = entity_folds(entities, 3, seed=0)
    for entity in set(entities):
        assert len(set(fold[entities == entity])) == 1
    assert set(fold) == {0, 1, 2}


def test_pair_features_read_the_strings_as_intended():
    labels = ["Massachusetts Institute of Technology", "Manipal Institute of Technology", "Московский университет"]
    table = LabelTable.build(labels, [["mit.edu"], ["manipal.edu"], []])
    channels = {name: np.array([0.5, np.nan, np.nan], dtype=np.float32) for name in
                ("dense", "tfidf", "tfidf_query_translit", "acronym")}
    ranks = {name: np.array([1, 0, 0]) for name in channels}
    cosines = {name: np.array([0.9, 0.8, 0.1]) for name in GROUPS["cosine"]}
    features = pair_features("MIT", np.array([0, 1, 2]), cosines, channels, ranks, table)
    row = dict(zip(FEATURES, features[0], strict=True))
    other = dict(zip(FEATURES, features[1], strict=True))
    assert row["is_initialism"] == other["is_initialism"] == 1 and row["acronym_labels"] == 2
    assert row["site_is_alias"] == 1 and other["site_is_alias"] == 0
    assert row["initials_aligned"] == 1.0 and row["rank_dense"] == 1 and np.isnan(other["rank_dense"])
    assert row["cosine"] == pytest.approx(0.9)
    cyrillic = pair_features("Moskovskii universitet", np.array([2]), {k: v[2:] for k, v in cosines.items()},
                             {k: v[:1] for k, v in channels.items()}, {k: v[:1] for k, v in ranks.items()}, table)
    named = dict(zip(FEATURES, cyrillic[0], strict=True))
    assert named["ratio"] < 0.3 < 0.9 < named["ratio_translit"] and named["same_script"] == 0
    assert site_name("https://www.udg.mx/es") == "udg"
    assert aligned_initials("UdeG", ["Universidad", "de", "Guadalajara"]) == 1.0
    assert aligned_initials("XYZ", ["Universidad", "de", "Guadalajara"]) == 0.0


@pytest.mark.parametrize(("alias", "label"), [
    ("FJM", "Fürst-Johann-Moritz Gymnasium"),  # hyphenated words give their initials one by one
    ("EMSI", "École Marocaine des Sciences de l'Ingénieur"),  # accents and elisions do not break the reading
    ("MGU", "Московский государственный университет"),  # a Latin acronym of a Cyrillic label
])
def test_the_alignment_feature_reads_the_label_as_the_acronym_channel_does(alias, label):
    table = LabelTable.build([label, "Unrelated Name"], [[], []])
    nan = {name: np.array([np.nan, np.nan], dtype=np.float32) for name in ("dense", "tfidf", "tfidf_query_translit",
                                                                            "acronym")}
    cosines = {name: np.array([0.5, 0.5]) for name in GROUPS["cosine"]}
    features = pair_features(alias, np.array([0, 1]), cosines, nan, {name: np.array([0, 0]) for name in nan}, table)
    aligned = features[:, FEATURES.index("initials_aligned")]
    assert aligned[0] == 1.0 and aligned[1] < 0.5


def test_the_abstain_reads_the_classifiers_probability_of_the_top_answer(reranked):
    split, _, first_stage, sidecar, searcher = reranked
    assert sidecar["abstain"]["reads"] == "probability" and sidecar["abstain"]["margin"] == 0.0
    aliases = split.test["alias"].tolist()
    scores, ids, read = searcher.labels_with_confidence(aliases, 3)
    _, matrices, _, _ = training_table(first_stage, split, "test")
    selected = [matrix[:, searcher.columns] for matrix in matrices]
    raw = mean_raw(searcher.boosters, selected, list(range(len(searcher.columns))))
    expected = probabilities(searcher.confidence, top_answer_features(raw, selected, sidecar["temperature"]))
    assert np.allclose(read[:, 0], expected, atol=1e-6) and (read[:, 1] == 0).all()
    assert ((read[:, 0] >= 0) & (read[:, 0] <= 1)).all()
    assert np.array_equal(searcher.labels_for(aliases, 3)[1], ids)
