"""Hybrid fusion, the fitted weight and exponent, and calibrated abstain, on hand-made rankings."""

from __future__ import annotations

import numpy as np
import pytest

from alias_label.search.abstain import abstain_quality, confident, fit_abstain, margins, rounded
from alias_label.search.hybrid import HybridSearcher, fit_fusion_weight, fit_reverse_fusion, fuse


def ranked(scores, ids):
    return np.array(scores, dtype=np.float32), np.array(ids)


def test_fuse_sums_weighted_scores_over_the_union():
    dense = ranked([[0.9, 0.5, 0.1]], [[1, 2, 3]])
    lexical = ranked([[0.8, 0.6, 0.2]], [[3, 4, 1]])
    scores, ids = fuse(dense, lexical, 0.5, 5)
    # Row 1: dense 0.9, lexical 0.2. Row 3: 0.1 and 0.8. Row 2 is absent from the lexical list and
    # row 4 from the dense one, so each takes that list's lowest score (0.2 and 0.1).
    expected = {1: 0.55, 3: 0.45, 2: 0.35, 4: 0.35}
    # k is capped at the longest list, so no slot is left for the second copy of a row both lists found.
    assert ids.shape == (1, 3) and ids[0, :2].tolist() == [1, 3] and ids[0, 2] in (2, 4)
    assert dict(zip(ids[0].tolist(), scores[0].tolist(), strict=True)) == pytest.approx(
        {row: expected[row] for row in ids[0].tolist()})


@pytest.mark.parametrize(("weight", "first"), [(1.0, 1), (0.0, 3)])
def test_fuse_at_the_ends_of_the_weight_is_one_list(weight, first):
    dense = ranked([[0.9, 0.5, 0.1]], [[1, 2, 3]])
    lexical = ranked([[0.8, 0.6, 0.2]], [[3, 4, 1]])
    assert fuse(dense, lexical, weight, 1)[1][0, 0] == first


def test_fit_fusion_weight_finds_the_mix_that_beats_both_lists():
    # Query 0: only dense ranks the gold row 1 first; query 1: only lexical ranks row 7 first. Fused,
    # both are right for any weight between 0.11 and 0.97.
    dense = ranked([[0.9, 0.5], [0.62, 0.6]], [[1, 2], [6, 7]])
    lexical = ranked([[0.35, 0.3], [0.9, 0.1]], [[2, 1], [7, 6]])
    fitted = fit_fusion_weight(dense, lexical, np.array([1, 7]))
    curve = fitted["val_top1_by_weight"]
    assert curve["1.00"] == 0.5 and curve["0.00"] == 0.5 and curve["0.50"] == 1.0
    assert fitted["val_top1"] == 1.0 and 0.11 < fitted["weight"] < 0.97
    assert fitted["exponent"] == 1.0  # the plain sum already gets both right, and ties keep it


def test_fuse_raises_the_lexical_score_to_the_exponent():
    dense = ranked([[0.7, 0.6]], [[1, 2]])
    lexical = ranked([[0.81, 0.49]], [[2, 1]])
    scores, ids = fuse(dense, lexical, 0.5, 2, exponent=0.5)
    # Row 1: 0.5 * 0.7 + 0.5 * sqrt(0.49) = 0.70; row 2: 0.5 * 0.6 + 0.5 * sqrt(0.81) = 0.75.
    assert ids[0].tolist() == [2, 1] and scores[0].tolist() == pytest.approx([0.75, 0.70])


def test_fit_fusion_weight_takes_an_exponent_when_no_plain_weight_gets_both_right():
    # Query 0: lexical prefers the wrong row 2 by a large gap between high cosines (0.81 / 0.49);
    # query 1: it prefers the gold row 7 by a smaller gap between low ones (0.25 / 0.01). Dense
    # prefers the other row by 0.1 each time. A plain weighted sum that fixes query 1 breaks query 0;
    # lexical ** 0.5 narrows the high gap (0.2) and widens the low one (0.4), so a weight fixes both.
    dense = ranked([[0.7, 0.6], [0.7, 0.6]], [[1, 2], [6, 7]])
    lexical = ranked([[0.81, 0.49], [0.25, 0.01]], [[2, 1], [7, 6]])
    fitted = fit_fusion_weight(dense, lexical, np.array([1, 7]))
    assert fitted["val_top1_by_exponent"]["1.00"] == 0.5
    assert fitted["val_top1"] == 1.0 and fitted["exponent"] < 1.0
    scores, ids = fuse(dense, lexical, fitted["weight"], 1, fitted["exponent"])
    assert ids[:, 0].tolist() == [1, 7]


def test_fit_reverse_fusion_reads_how_many_of_each_labels_aliases_come_back():
    # Label 0 has aliases 1 and 2; dense finds 1 first and 2 nowhere, lexical finds both. Label 1
    # has alias 7, which both find. At k=10 lexical alone recalls everything, dense half of label 0.
    dense = ranked([[0.9, 0.5], [0.8, 0.3]], [[1, 3], [7, 8]])
    lexical = ranked([[0.6, 0.5], [0.7, 0.2]], [[2, 1], [7, 9]])
    fitted = fit_reverse_fusion(dense, lexical, [{1, 2}, {7}])
    curve = fitted["val_recall10_by_weight"]
    assert curve["1.00"] == pytest.approx(0.75) and curve["0.00"] == 1.0
    assert fitted["val_recall10"] == 1.0 and fitted["weight"] < 1.0


class Lists:
    """A searcher returning fixed ranked lists in both directions."""

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward

    def labels_for(self, queries, k):
        return tuple(a[:, :k] for a in self.forward)

    def aliases_for(self, queries, k):
        return tuple(a[:, :k] for a in self.backward)


def test_the_hybrid_fuses_each_direction_at_its_own_weight():
    dense = Lists(ranked([[0.9, 0.5]], [[1, 2]]), ranked([[0.9, 0.5]], [[1, 2]]))
    lexical = Lists(ranked([[0.8, 0.6]], [[2, 1]]), ranked([[0.8, 0.6]], [[2, 1]]))
    hybrid = HybridSearcher("h", dense, lexical, 1.0, reverse=(0.0, 1.0))
    assert hybrid.labels_for(["q"], 1)[1][0, 0] == 1  # dense alone
    assert hybrid.aliases_for(["q"], 1)[1][0, 0] == 2  # lexical alone
    assert HybridSearcher("h", dense, lexical, 1.0).aliases_for(["q"], 1)[1][0, 0] == 1  # no reverse: the same weight


def test_margins_and_confident():
    scores = np.array([[0.9, 0.5], [0.9, 0.85], [0.4, 0.1]])
    assert margins(scores).round(2).tolist() == [0.4, 0.05, 0.3]
    assert confident(scores, {"threshold": 0.5, "margin": 0.1}).tolist() == [True, False, False]
    assert confident(scores, None).all()


def test_fit_abstain_reaches_the_target_with_the_most_coverage():
    rng = np.random.default_rng(0)
    top = rng.uniform(0, 1, 400)
    scores = np.stack([top, top - rng.uniform(0, 0.2, 400)], axis=1)
    correct = top > 0.6  # right exactly when the score is high
    fitted = fit_abstain(scores, correct, target_precision=0.95)
    assert fitted["met_target"] and fitted["val"]["precision"] >= 0.95
    assert fitted["val"]["coverage"] == pytest.approx(correct.mean(), abs=0.03)
    assert abstain_quality(scores, correct, fitted) == fitted["val"]


def test_fit_abstain_says_when_the_target_is_out_of_reach():
    scores = np.array([[0.9, 0.1]] * 20)
    correct = np.array([True, False] * 10)
    fitted = fit_abstain(scores, correct, target_precision=0.95)
    assert not fitted["met_target"] and fitted["val"]["precision"] == 0.5


def test_a_rounded_score_below_1_stays_below_1():
    assert rounded(0.123456, 4) == 0.1235 and rounded(1.0, 4) == 1.0
    assert rounded(0.9999737, 4) == 0.99997 < 1  # not 1.0, which would look confident
    assert rounded(99.9974, 2, top=100.0) == 99.997
    assert rounded(0.99999999999, 4) == 1.0  # beyond six more digits it gives up
