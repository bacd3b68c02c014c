"""The fitted fusion weight and abstain setting: saved with each model, used by every search path."""

from __future__ import annotations

import shutil

import calibrate as calibrate_cli
import numpy as np
import pytest
import test_lookup as lookup_cli

from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.index.tables import Candidates, label_keys
from alias_label.io import read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.search.abstain import confident
from alias_label.search.hybrid import EXPONENT_GRID, WEIGHT_GRID, fuse
from alias_label.search.retriever import load_retriever
from alias_label.search.searchers import keys_of, lexical_searcher


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_training_saves_a_calibration_that_matches_its_model(in_pipeline_home, role):
    model_dir = in_pipeline_home / f"models/trained/alias_label_{role}"
    calibration = read_json(model_dir / "calibration.json")
    assert calibration["model_fingerprint"] == model_fingerprint(model_dir)
    assert calibration["data_fingerprint"] == load_split().fingerprint
    assert calibration["fusion"]["weight"] in WEIGHT_GRID.tolist()
    assert calibration["fusion"]["exponent"] in EXPONENT_GRID
    assert calibration["fusion"]["val_top1"] == max(calibration["fusion"]["val_top1_by_weight"].values())
    reverse = calibration["reverse_fusion"]
    assert reverse["weight"] in WEIGHT_GRID.tolist() and reverse["exponent"] in EXPONENT_GRID
    assert reverse["val_recall10"] == max(reverse["val_recall10_by_weight"].values())
    for mode in ("dense", "hybrid"):
        assert calibration["abstain"][mode]["target_precision"] == 0.95
        assert calibration["abstain"][mode]["val"]["n"] == len(load_split().val)


def test_label_to_alias_search_fuses_at_the_reverse_weight(in_pipeline_home):
    split = load_split()
    hybrid = load_retriever("teacher", mode="hybrid")
    dense = load_retriever("teacher", mode="dense")
    reverse = read_json(in_pipeline_home / "models/trained/alias_label_teacher/calibration.json")["reverse_fusion"]
    labels = split.test["label"].unique().tolist()
    expected = fuse(dense.searcher.aliases_for(labels, 100), hybrid.searcher.lexical.aliases_for(labels, 100),
                    reverse["weight"], 5, reverse["exponent"])
    scores, ids = hybrid.searcher.aliases_for(labels, 5)
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0])


def test_a_calibration_without_the_reverse_weight_warns_and_fuses_at_the_other(in_pipeline_home, caplog):
    from dataclasses import replace

    from alias_label.search.retriever import as_hybrid

    dense = load_retriever("teacher", mode="dense")
    older = {key: value for key, value in dense.calibration.items() if key != "reverse_fusion"}
    hybrid = as_hybrid(replace(dense, calibration=older))
    assert "has no label -> alias fusion weight" in caplog.text and "scripts/calibrate.py" in caplog.text
    assert hybrid.searcher.reverse is None
    fusion = older["fusion"]
    assert (hybrid.searcher.weight, hybrid.searcher.exponent) == (fusion["weight"], fusion["exponent"])
    reverse = dense.calibration["reverse_fusion"]
    assert as_hybrid(dense).searcher.reverse == (reverse["weight"], reverse["exponent"])


def test_hybrid_retriever_fuses_dense_and_tfidf_at_the_calibrated_weight(in_pipeline_home):
    split = load_split()
    hybrid = load_retriever("teacher", mode="hybrid")
    dense = load_retriever("teacher", mode="dense")
    fusion = read_json(in_pipeline_home / "models/trained/alias_label_teacher/calibration.json")["fusion"]
    queries = split.test["alias"].tolist()
    # Both sides index the labels under their transliterated keys too, as the teacher's index records.
    lexical = lexical_searcher(Candidates.from_split(split, "transliterated"))
    assert keys_of(dense.searcher) == "transliterated" and keys_of(lexical) == "transliterated"
    expected = fuse(dense.labels_for(queries, 100), lexical.labels_for(queries, 100), fusion["weight"], 5,
                    fusion["exponent"])
    scores, ids = hybrid.labels_for(queries, 5)
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_allclose(scores, expected[0])
    assert hybrid.abstain["threshold"] != dense.abstain["threshold"] or fusion["weight"] == 1.0


def test_keyed_tfidf_finds_a_label_by_its_transliteration(in_pipeline_home):
    split = load_split()
    keys = label_keys(split)
    plain = lexical_searcher(Candidates.from_split(split, "label"))
    keyed = lexical_searcher(Candidates.from_split(split, "transliterated"))
    assert keys_of(plain) == "label"
    scores, rows = keyed.labels_for(keys["text"], 3)
    # Each key finds its own label first, at an exact match, and no label twice.
    np.testing.assert_array_equal(rows[:, 0], keys["row"].to_numpy())
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert all(len(set(row)) == len(row) for row in rows.tolist())
    assert plain.label_index.ntotal == keyed.label_index.ntotal == len(split.labels)


def test_a_setting_that_missed_its_target_flags_no_match_and_says_so(home, pipeline_home, caplog, capsys):
    shutil.copytree(pipeline_home / "models", home / "models")
    shutil.copytree(pipeline_home / "faiss", home / "faiss")
    sidecar = home / "models/trained/alias_label_teacher/reranker.json"
    reranker = read_json(sidecar)
    # every answer clears the threshold; only whether the target was met differs
    for met in (True, False):
        write_json(sidecar, {**reranker, "abstain": {**reranker["abstain"], "threshold": 0.0, "met_target": met}})
        caplog.clear()
        retriever = load_retriever("teacher")
        matches = retriever.lookup(["MIT", "UdeG"], k=2)
        assert matches["confident"].tolist() == [met, False, met, False]
        warned = ("did not reach 95% precision on validation, so a lookup is flagged confident only where the query "
                  "is its label") in caplog.text
        assert warned == (not met) and ("python scripts/calibrate.py --model teacher --target-precision 0.9" in
                                        caplog.text) == (not met)
        capsys.readouterr()
        lookup_cli.main(lookup_cli.parse_args(["MIT", "-k", "1"]))
        printed = capsys.readouterr().out
        assert ("; the setting missed its target on validation)" in printed) == (not met)
        assert ("no confident match" in printed) == (not met)
    assert retriever.lookup(["MIT"], k=1, min_score=0.0)["confident"].tolist() == [True]  # a bar of your own
    # a model without a calibration answers in dense mode, flagging nothing, and says how to fit one
    (home / "models/trained/alias_label_teacher/calibration.json").unlink()
    caplog.clear()
    assert not load_retriever("teacher", mode="dense").lookup(["MIT", "UdeG"], k=1)["confident"].any()
    assert ("the dense model has no calibrated abstain setting, so a lookup is flagged confident only where the "
            "query is its label as written. Fit one with: "
            "python scripts/calibrate.py --model teacher") in caplog.text


def test_lookup_flags_matches_below_the_calibrated_setting(in_pipeline_home):
    split = load_split()
    queries = split.test["alias"].tolist()
    for mode in ("dense", "hybrid", "rerank"):
        retriever = load_retriever("teacher", mode=mode)
        scores, _, read = retriever.labels_with_confidence(queries, 2)
        matches = lookup_cli.main(lookup_cli.parse_args([queries[0], "--mode", mode, "-k", "2"]))
        assert matches["confident"].iloc[0] == (confident(read[:1], retriever.abstain)[0] and retriever.vouches)
        assert matches["score"].iloc[0] == pytest.approx(scores[0, 0], abs=1e-4)
        assert matches["confidence"].iloc[0] == pytest.approx(read[0, 0], abs=1e-4)
        assert matches["confidence"].iloc[1:].isna().all()  # one per query, on its top match
        if mode == "rerank":  # the probability that the top answer is right, thresholded alone
            assert retriever.abstain["reads"] == "probability" and retriever.abstain["margin"] == 0.0
            cleared = read[0, 0] >= retriever.abstain["threshold"]
            assert matches["confident"].iloc[0] == (cleared and retriever.vouches)
        else:  # the score itself, with a margin to the runner-up
            assert np.array_equal(read, scores[:, :2])


def test_missing_or_stale_calibration_names_the_fix(home, pipeline_home):
    import shutil

    for folder in ("data", "faiss", "models"):
        shutil.copytree(pipeline_home / folder, home / folder)
    calibration_path = home / "models/trained/alias_label_teacher/calibration.json"
    saved = read_json(calibration_path)
    write_json(calibration_path, {**saved, "model_fingerprint": "another"})
    with pytest.raises(UserError, match="fitted for another model.*python scripts/calibrate.py --model teacher"):
        load_retriever("teacher", mode="hybrid")
    assert load_retriever("teacher", mode="dense").abstain is None  # dense search ignores a stale one
    calibration_path.unlink()
    with pytest.raises(UserError, match="has no calibration.json.*python scripts/calibrate.py --model teacher"):
        load_retriever("teacher", mode="hybrid")
    refitted = calibrate_cli.main(calibrate_cli.parse_args(["--model", "teacher", "--target-precision", "0.8"]))
    assert read_json(calibration_path) == refitted and refitted["abstain"]["hybrid"]["target_precision"] == 0.8
    assert refitted["fusion"] == saved["fusion"]


def test_a_refit_at_another_number_of_candidates_says_so_and_lookups_read_it(home, pipeline_home, caplog):
    import shutil

    for folder in ("data", "faiss", "models"):
        shutil.copytree(pipeline_home / folder, home / folder)
    calibrate_cli.main(calibrate_cli.parse_args(["--model", "teacher", "--rerank-candidates", "3"]))
    assert "with 3 candidates a channel; the one it replaces had 50 (pass --rerank-candidates 50" in caplog.text
    assert read_json(home / "models/trained/alias_label_teacher/reranker.json")["candidates_per_channel"] == 3
    assert load_retriever("teacher").searcher.first_stage.k == 3
    caplog.clear()
    calibrate_cli.main(calibrate_cli.parse_args(["--model", "teacher", "--rerank-candidates", "3"]))
    assert "candidates a channel" not in caplog.text


def test_calibrate_rejects_an_impossible_target(capsys):
    with pytest.raises(SystemExit) as exit_info:
        calibrate_cli.parse_args(["--target-precision", "1.5"])
    assert exit_info.value.code == 2 and "must lie strictly between 0 and 1" in capsys.readouterr().err

