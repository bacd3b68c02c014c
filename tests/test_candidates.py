"""The first stage: the acronym channel, query transliteration, and the union of channels."""

from __future__ import annotations

import numpy as np
import pytest

from alias_label.search.acronym import (
    PREFIX_SCORE,
    AcronymIndex,
    acronym_key,
    initialisms,
    looks_like_acronym,
    prefix_initialisms,
)
from alias_label.search.candidates import candidates, union
from alias_label.search.lexical import TfidfIndex
from alias_label.search.searchers import Searcher, TransliteratedQueries


@pytest.mark.parametrize(("label", "expected"), [
    ("Universidad de Guadalajara", {"udeg", "udg", "ug"}),
    ("Massachusetts Institute of Technology", {"mit", "miot", "mioft"}),
    ("Московский государственный университет", {"мгу", "mgu"}),
    ("Universität Wien", {"uw"}),
    ("Fürst-Johann-Moritz Gymnasium", {"fg", "fjmg"}),
    ("Harvard", set()),
])
def test_initialisms_in_the_variants_people_write(label, expected):
    assert initialisms(label) == expected


@pytest.mark.parametrize(("label", "expected"), [
    ("Benue State University Makurdi", {"bsu"}),
    ("Bank of America Corporation", {"boa", "bofa"}),
    ("Fürst-Johann-Moritz Gymnasium", {"fjm"}),
    ("Universidad de Guadalajara", set()),  # one word would be left
    ("Massachusetts Institute of Technology", set()),  # "MI": two letters match almost anything
])
def test_prefix_initialisms_leave_out_the_last_word(label, expected):
    assert prefix_initialisms(label) == expected


def test_prefix_initialisms_come_after_full_ones_with_a_lower_score():
    labels = ["Overseas Family School Singapore", "Ohio Fire Service", "Benue State University Makurdi",
              "Ball State University"]
    scores, ids = AcronymIndex(labels).search(["OFS", "BSU", "OFSS"], 3)
    assert ids.tolist() == [[1, 0, -1], [3, 2, -1], [0, -1, -1]]
    assert scores.tolist() == [[1.0, PREFIX_SCORE, 0.0], [1.0, PREFIX_SCORE, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize(("query", "expected"), [
    ("UdeG", True), ("U.D.G.", True), ("mit", True), ("UNAM MX", True),
    ("Marmara University", False), ("x", False), ("Universidad", False),
])
def test_what_looks_like_an_acronym(query, expected):
    assert looks_like_acronym(query) is expected
    assert acronym_key("U.D.G.") == acronym_key("udg") == "udg"


def test_the_acronym_channel_finds_every_label_an_acronym_spells():
    labels = ["Universidad de Guadalajara", "Massachusetts Institute of Technology", "Manipal Institute of Technology",
              "Marmara University", "Московский государственный университет"]
    scores, ids = AcronymIndex(labels).search(["UdeG", "MIT", "U.D.G.", "Marmara University", "MGU", "МГУ"], 4)
    assert ids.tolist() == [[0, -1, -1, -1], [1, 2, -1, -1], [0, -1, -1, -1], [-1, -1, -1, -1], [4, -1, -1, -1],
                            [4, -1, -1, -1]]
    np.testing.assert_array_equal(scores[ids >= 0], 1.0)
    np.testing.assert_array_equal(scores[ids < 0], 0.0)


def test_transliterated_queries_reach_a_latin_label():
    labels = ["Moscow State University", "Moskovskii gosudarstvennyi universitet", "Kyiv University"]
    lexical = Searcher("tfidf", TfidfIndex(labels), TfidfIndex(["x"]))
    query = ["Московский государственный университет"]
    assert lexical.labels_for(query, 1)[0][0, 0] == 0.0  # no character n-gram in common
    scores, ids = TransliteratedQueries(lexical).labels_for(query, 1)
    assert ids[0, 0] == 1 and scores[0, 0] > 0.9


class Fixed:
    """A channel with fixed ranked lists, to check the union against."""

    def __init__(self, scores, ids):
        self.result = (np.array(scores, dtype=np.float32), np.array(ids))

    def labels_for(self, queries, k):
        return self.result[0][:, :k], self.result[1][:, :k]


def test_the_union_holds_each_channels_top_hits_with_their_ranks_and_scores():
    dense = Fixed([[0.9, 0.8, 0.7], [0.5, 0.4, 0.3]], [[3, 1, 2], [0, 5, 6]])
    lexical = Fixed([[0.6, 0.2, 0.1], [0.9, 0.1, 0.0]], [[2, 4, 3], [7, 0, -1]])
    merged = candidates({"dense": dense, "tfidf": lexical}, ["a", "b"], 3)
    assert merged.rows.tolist() == [[3, 1, 2, 4], [0, 5, 6, 7]]
    assert merged.ranks["dense"].tolist() == [[1, 2, 3, 0], [1, 2, 3, 0]]
    assert merged.ranks["tfidf"].tolist() == [[3, 0, 1, 2], [2, 0, 0, 1]]
    np.testing.assert_allclose(merged.scores["tfidf"][0], [0.1, np.nan, 0.6, 0.2])
    assert merged.sizes().tolist() == [4, 4]
    assert merged.recall(np.array([4, 9])) == 0.5
    # Every channel's top hits are in the union, whatever k.
    for k in (1, 2, 3):
        cut = union({"dense": dense.labels_for(None, k), "tfidf": lexical.labels_for(None, k)})
        for _, ids in (dense.labels_for(None, k), lexical.labels_for(None, k)):
            for row, found in zip(ids, cut.rows, strict=True):
                assert set(row[row >= 0]) <= set(found)
