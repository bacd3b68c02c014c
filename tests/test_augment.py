"""Generated aliases: each generator's output, and that none touches a held-out entity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distill_sweep import PERTURBERS, perturbed_labels, word_borrower

from alias_label.data.split import make_split
from alias_label.data.table import clean_table
from alias_label.train.augment import AUGMENTATIONS, GENERATORS, augmentation_candidates, augmented_pairs, generic_words

GENERIC = {"university", "college", "institute", "school"}


@pytest.mark.parametrize(("kind", "label", "alias"), [
    ("acronym", "Massachusetts Institute of Technology", "MIT"),
    ("acronym", "Universidad de Guadalajara", "UG"),
    ("acronym", "Harvard", None),
    ("generic-drop", "Marmara University", "Marmara"),
    ("generic-drop", "University College", None),
    ("transliterate", "Batman Üniversitesi", "Batman Universitesi"),
    ("transliterate", "Московский университет", "Moskovskii universitet"),
    ("transliterate", "Harvard", None),
    ("case-order", "University of Vienna", "Vienna University"),
    ("case-order", "Marmara University", "marmara university"),
])
def test_generators(kind, label, alias):
    assert GENERATORS[kind](label, GENERIC) == alias


def test_generic_words_are_learned_from_the_labels():
    labels = [f"{name} University" for name in "ABCDEFGH"] + ["Alpha College", "Beta College"]
    assert generic_words(labels, top=2) == {"university", "college"}


def _split():
    names = [f"{first}{second}" for first in "ABCDEF" for second in "GHIJK"]
    rows = [{"qid": f"q{i}", "label": f"University of {name}town", "alias": f"alias {i}"}
            for i, name in enumerate(names)]
    rows += [{"qid": f"bare{i}", "label": f"École {name}ville", "alias": ""} for i, name in enumerate(names)]
    table, _ = clean_table(pd.DataFrame(rows).assign(description="", website=""))
    return make_split(table, seed=3, val_frac=0.2, test_frac=0.2)


def test_candidates_never_use_held_out_entities_or_existing_strings():
    split = _split()
    candidates = augmentation_candidates(split, AUGMENTATIONS)
    held_out = set(split.val["qid"]) | set(split.test["qid"])
    assert len(candidates) and not set(candidates["qid"]) & held_out
    existing = set(split.labels["label"].str.casefold()) | set(split.aliases["alias"].str.casefold())
    assert not set(candidates["alias"].str.casefold()) & existing
    assert set(candidates["augmentation"]) == set(AUGMENTATIONS)
    # "UOAT", "UOBT", ... are kept; a string made for more than 5 labels would not be.
    assert candidates["alias"].str.casefold().value_counts().max() <= 5


def test_augmented_pairs_respect_the_ratio_and_split_it_evenly():
    split = _split()
    pairs = augmented_pairs(split, ["acronym", "case-order"], ratio=1.0, seed=0)
    per_kind = len(split.train) // 2
    assert pairs["augmentation"].value_counts().to_dict() == {"acronym": per_kind, "case-order": per_kind}
    assert augmented_pairs(split, [], ratio=1.0, seed=0).empty
    pd.testing.assert_frame_equal(pairs, augmented_pairs(split, ["acronym", "case-order"], ratio=1.0, seed=0))


def test_each_perturbation_changes_one_word():
    words = "Shanxi University of Technology".split()
    rng = np.random.default_rng(0)
    borrowed = word_borrower(["Shanxi University of Technology", "Shanxi Agricultural University"], rng)
    assert PERTURBERS["drop-word"](words, 0, rng, borrowed) == "University of Technology".split()
    # The only label sharing a word lends the only word this label lacks.
    assert PERTURBERS["borrow-word"](words, 3, rng, borrowed) == "Shanxi University of Agricultural".split()
    assert PERTURBERS["abbreviate"](words, 3, rng, borrowed)[3] in {"Tec.", "Tech."}
    assert PERTURBERS["abbreviate"](words, 2, rng, borrowed) is None
    for seed in range(20):
        typo = PERTURBERS["typo"](words, 1, np.random.default_rng(seed), borrowed)[1]
        assert typo != "University" and abs(len(typo) - len("University")) <= 1 and typo[0] == "U"
    assert PERTURBERS["drop-word"](["Harvard"], 0, rng, borrowed) is None


def test_perturbed_labels_leave_out_held_out_entities_and_existing_strings():
    split = _split()
    texts = perturbed_labels(split, per_label=3, seed=0)
    existing = set(split.labels["label"].str.casefold()) | set(split.aliases["alias"].str.casefold())
    assert texts and len(texts) == len(set(texts)) and not {text.casefold() for text in texts} & existing
    # Held-out entities' labels are never a source: each text still names its source town.
    held_out = set(split.val["qid"]) | set(split.test["qid"])
    held_out_towns = {label.split()[-1] for label, qids in zip(split.labels["label"], split.labels["qids"],
                                                             strict=True) if held_out & set(qids)}
    assert not [text for text in texts if text.split()[-1] in held_out_towns]
    assert texts == perturbed_labels(split, per_label=3, seed=0) and perturbed_labels(split, 0, seed=0) == []
