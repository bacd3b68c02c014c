"""The reranker's confidence: a classifier's out-of-fold probability that the top answer is right."""

from __future__ import annotations

import numpy as np

from alias_label.models.load import RECORD_FILES
from alias_label.search.abstain import abstain_quality, fit_abstain
from alias_label.search.confidence import (
    SEED_OFFSET,
    SUMMARY,
    abstain_scores,
    classifier_out_of_fold,
    fit_confidence,
    probabilities,
    top_answer_features,
)
from alias_label.search.folds import entity_folds
from alias_label.search.rerank import BOOSTERS_FILE, CONFIDENCE_FILE, RERANKER_FILE


def test_the_top_answer_features_read_the_best_candidate_and_its_lead():
    raw = [np.array([0.0, 2.0, 1.0]), np.array([3.0]), np.empty(0)]
    matrices = [np.array([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]]), np.array([[5.0, 6.0]]), np.empty((0, 2))]
    out = top_answer_features(raw, matrices, temperature=1.0)
    assert out.shape == (3, len(SUMMARY) + 2)
    share = np.exp([0.0, 2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    assert np.allclose(out[0], [share[1], share[1] - share[2], 2.0, 1.0, 3, 20.0, 21.0], atol=1e-6)
    # A lone candidate has all the share and no runner-up's raw score to lead.
    assert np.allclose(out[1, [0, 1, 2, 4, 5, 6]], [1.0, 1.0, 3.0, 1, 5.0, 6.0]) and np.isnan(out[1, 3])
    assert np.isnan(out[2]).all()


def separable(n: int = 400, seed: int = 0):
    """Top answers whose first feature says how likely they are right, from 40 entities."""
    rng = np.random.default_rng(seed)
    signal = rng.uniform(size=n)
    right = rng.uniform(size=n) < signal
    features = np.c_[signal, rng.normal(size=(n, 3))].astype(np.float32)
    return features, right, np.arange(n) % 40


def test_each_probability_comes_from_the_classifier_that_did_not_see_its_entity():
    features, right, entities = separable()
    probability, boosters = classifier_out_of_fold(features, right, entities, folds=4, seed=7)
    assert len(boosters) == 4
    fold = entity_folds(entities, 4, 7)
    for i in range(0, len(features), 37):
        assert np.isclose(probability[i], boosters[fold[i]].predict(features[i:i + 1])[0])
    # It learns the signal: the right answers' probabilities rank above the wrong ones'.
    pairs = probability[right][:, None] > probability[~right][None, :]
    assert pairs.mean() > 0.75
    assert np.allclose(probabilities(boosters, features[:5]), np.mean([b.predict(features[:5]) for b in boosters], 0))


def test_the_threshold_alone_is_fitted_on_probabilities_and_keeps_what_clears_it():
    probability = np.linspace(0, 1, 200)
    right = probability > 0.4
    setting = fit_abstain(abstain_scores(probability), right, 0.95, margin=False)
    assert setting["margin"] == 0.0 and setting["met_target"]
    assert 0.35 <= setting["threshold"] <= 0.45  # the lowest threshold whose kept answers are 95% right
    quality = abstain_quality(abstain_scores(probability), right, setting)
    assert quality["kept"] == int((probability >= setting["threshold"]).sum())


def test_fit_confidence_fits_on_the_reranker_scores_out_of_fold():
    rng = np.random.default_rng(1)
    # The top candidate's lead over the runner-up decides whether it is right.
    lead = rng.uniform(0, 4, size=300)
    raw = [np.array([lead[i], 0.0, -1.0]) for i in range(300)]
    matrices = [rng.normal(size=(3, 2)) for _ in range(300)]
    right = rng.uniform(size=300) < lead / 4
    entities = np.arange(300) % 30
    fitted = fit_confidence(raw, matrices, right, entities, 1.0, 0.9, 0.9, folds=3, seed=5, repeats=2)
    assert fitted["abstain"]["reads"] == "probability" and fitted["abstain"]["margin"] == 0.0
    assert len(fitted["boosters"]) == 6 and fitted["probability"].shape == (300,)
    assert np.corrcoef(fitted["probability"], lead)[0, 1] > 0.5
    # Each alias's probability is the mean of the two cuts' classifiers that did not see its entity.
    features = top_answer_features(raw, matrices, 1.0)
    cuts = [classifier_out_of_fold(features, right, entities, 3, 5 + SEED_OFFSET + 3 * r)[0] for r in range(2)]
    assert not np.allclose(*cuts) and np.allclose(fitted["probability"], np.mean(cuts, axis=0))


def test_the_reranker_files_are_records_not_part_of_the_model_fingerprint():
    assert {RERANKER_FILE, BOOSTERS_FILE, CONFIDENCE_FILE} <= RECORD_FILES


def test_answers_all_right_or_all_wrong_read_as_such():
    features, _, entities = separable(n=120)
    for right, expected in ((np.ones(120, dtype=bool), 1.0), (np.zeros(120, dtype=bool), 0.0)):
        probability, _ = classifier_out_of_fold(features, right, entities, folds=3, seed=1)
        assert np.allclose(probability, expected, atol=1e-6)
