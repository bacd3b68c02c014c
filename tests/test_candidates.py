"""The first stage: the acronym channel, query transliteration, and the union of channels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alias_label.index.tables import Candidates
from alias_label.search.acronym import (
    ALIGNED_SCORE,
    PREFIX_SCORE,
    AcronymIndex,
    acronym_key,
    anchors,
    initialisms,
    looks_like_acronym,
    prefix_initialisms,
    word_readings,
)
from alias_label.search.candidates import candidates, union
from alias_label.search.lexical import TfidfIndex
from alias_label.search.searchers import Searcher, TransliteratedQueries, lexical_searcher


@pytest.mark.parametrize(("label", "expected"), [
    ("Universidad de Guadalajara", {"udeg", "udg", "ug"}),
    ("Massachusetts Institute of Technology", {"mit", "miot", "mioft"}),
    ("Московский государственный университет", {"мгу", "mgu"}),
    ("Universität Wien", {"uw"}),
    ("Fürst-Johann-Moritz Gymnasium", {"fg", "fjmg"}),
    ("Harvard", set()),
    ("Università dell'Aquila", {"ua", "ud"}),  # the elided "dell'" dropped, or the word read whole
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


def test_elided_articles_leave_the_initial_of_the_word_they_join():
    assert "emsi" in initialisms("École Marocaine des Sciences de l'Ingénieur")
    assert initialisms("O'Brien Institute") == {"oi"}  # "O'" is not an elision: the name is read whole


def test_word_readings_fold_split_and_start_at_the_first_content_word():
    assert word_readings("The École Nationale Supérieure d'Électronique") == [
        ["ecole", "nationale", "superieure", "electronique"]]
    assert word_readings("Fürst-Johann-Moritz Gymnasium") == [["furst", "johann", "moritz", "gymnasium"]]
    assert word_readings("МГУ им. Ломоносова")[1][0] == "mgu"  # the transliteration is a second reading


@pytest.mark.parametrize(("key", "words", "expected"), [
    ("espol", ["escuela", "superior", "politecnica", "del", "litoral"], 4),  # E S P(o) L: four words start it
    ("norsu", ["negros", "oriental", "state", "university"], 4),
    ("mit", ["massachusetts", "institute", "of", "technology"], 3),
    ("mass", ["massachusetts", "institute"], 1),  # one word's start spells it all
    ("xyz", ["escuela", "superior"], 0),
    ("sp", ["escuela", "superior", "politecnica"], 0),  # the first letter must start the first word
    ("ep", ["escuela", "superior"], 0),  # every letter must be read
])
def test_anchors_count_the_words_an_acronym_is_read_from(key, words, expected):
    assert anchors(key, words) == expected


def test_the_acronym_channel_reads_longer_acronyms_from_the_starts_of_words():
    labels = ["Escuela Superior Politécnica de Chimborazo", "Escuela superior politecnica del litoral", "Espolon",
              "Negros Oriental State University", "Norsu Academy", "Escuela Politécnica Nacional"]
    scores, ids = AcronymIndex(labels).search(["ESPOL", "NORSU", "EPN", "espol university"], 3)
    # Every content word read ranks before three of four; one-word labels are TF-IDF's to find.
    assert ids[0].tolist() == [1, 0, 5]  # "ESPOL" reads E(s) P(o)(l) from "Escuela Politécnica Nacional" too
    np.testing.assert_allclose(scores[0], [ALIGNED_SCORE, ALIGNED_SCORE * 3 / 4, ALIGNED_SCORE * 2 / 3])
    assert ids[1].tolist() == [3, 4, -1]  # "Norsu Academy" reads it from one of its two words
    np.testing.assert_allclose(scores[1], [ALIGNED_SCORE, ALIGNED_SCORE / 2, 0.0])
    assert ids[2].tolist() == [5, -1, -1] and scores[2, 0] == 1.0  # three letters: initialisms only
    assert ids[3].tolist() == [-1, -1, -1]  # not the shape of an acronym


def test_aligned_matches_come_after_initialisms_and_stop_at_k():
    labels = ["Escuela superior politecnica del litoral", "Escuela Superior Politecnica Oriental Lima"]
    scores, ids = AcronymIndex(labels).search(["ESPOL", "ESPOL"], 1)
    assert ids.tolist() == [[1], [1]] and scores[0, 0] == 1.0  # the initialism first; k=1 leaves the reading out
    scores, ids = AcronymIndex(labels[:1]).search(["ESPOL"], 2)
    assert ids.tolist() == [[0, -1]] and scores[0, 0] == ALIGNED_SCORE
    assert AcronymIndex(labels[:1], aligned=False).search(["ESPOL"], 2)[1].tolist() == [[-1, -1]]


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


def test_label_to_alias_search_compares_both_sides_transliterated():
    labels = pd.DataFrame({"label": ["Moscow State University", "Московский государственный университет",
                                     "Université de Genève"], "qids": [["Q1"], ["Q2"], ["Q3"]],
                           "websites": [[], [], []]})
    aliases = pd.DataFrame({"alias": ["Московский государственный университет имени Ломоносова",
                                      "Moskovskii gosudarstvennyi universitet imeni Lomonosova",
                                      "Universite de Geneve", "Unrelated College"],
                            "qids": [["Q1"], ["Q2"], ["Q3"], ["Q4"]]})
    lexical = lexical_searcher(Candidates(labels, aliases, labels["label"].tolist(), None, "fp"))
    queries = ["Moskovskii gosudarstvennyi universitet", "Московский государственный университет",
               "Université de Genève"]
    scores, rows = lexical.aliases_for(queries, 4)
    # A Latin label finds the Cyrillic alias at its transliteration, and the Cyrillic label the Latin
    # alias, each alias once; accents are folded on both sides.
    assert set(rows[0, :2].tolist()) == set(rows[1, :2].tolist()) == {0, 1}
    assert rows[2, 0] == 2 and scores[2, 0] == pytest.approx(1.0, abs=1e-5)
    assert all(len(set(row)) == len(row) for row in rows.tolist())
    # As written, the Latin label and the Cyrillic alias share no character n-gram.
    plain_scores, plain_rows = Searcher("tfidf", None, TfidfIndex(aliases["alias"])).aliases_for(queries[:1], 4)
    assert plain_scores[0, plain_rows[0].tolist().index(0)] == 0.0


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
