"""The cross-encoder: its features, its training pairs, the script that trains it and refits the
reranker, and a lookup that refuses a cross-encoder the reranker was not fitted with."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from conftest import CROSS_SMOKE

from alias_label import load_retriever
from alias_label.errors import UserError
from alias_label.io import read_json
from alias_label.models.load import model_fingerprint
from alias_label.search.cross import (
    CROSS_FEATURES,
    STUDENT_CROSS_TOP,
    CrossScorer,
    PairModel,
    cross_dir,
    load_cross_encoder,
    with_cross_features,
)
from alias_label.search.features import COLUMN, FEATURES
from alias_label.search.rerank import RERANKER_FILE
from alias_label.train.cross_encoder import mined_pairs, train_cross_encoder


class LengthModel:
    """A stand-in cross-encoder whose score is the label's length, so each score names its pair."""

    def __init__(self, device: str = "cpu"):
        self.pairs, self.calls, self.device = [], [], device

    def predict(self, pairs, batch_size):
        self.pairs += pairs
        self.calls.append(list(pairs))
        return np.array([len(label) for _, label in pairs], dtype=np.float32)


def fused_matrix(fused: list[float]) -> np.ndarray:
    matrix = np.zeros((len(fused), len(FEATURES)), dtype=np.float32)
    matrix[:, COLUMN["fused"]] = fused
    return matrix


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_only_the_top_candidates_by_fused_score_are_scored_and_the_gap_is_to_the_best(device):
    labels = np.array(["a", "bbb", "cc", "dddd", "eeeee"], dtype=object)
    model = LengthModel(device)
    scorer = CrossScorer(model, labels, top=2)
    rows = [np.array([0, 1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)]
    matrices = [fused_matrix([0.1, 0.9, 0.5, 0.2]), fused_matrix([0.3]), fused_matrix([])]
    extended = scorer.extend(["x", "y", "z"], rows, matrices)
    assert model.pairs == [("x", "bbb"), ("x", "cc"), ("y", "eeeee")]
    # On a CPU each alias's pairs are a batch of their own, as when it is looked up alone, so no
    # other alias's pairs pad or quantise with them; a GPU scores the batch's pairs together.
    expected_calls = [[("x", "bbb"), ("x", "cc")], [("y", "eeeee")]] if device == "cpu" else [model.pairs]
    assert model.calls == expected_calls
    assert [m.shape[1] for m in extended] == [len(FEATURES) + 2] * 3
    score, gap = extended[0][:, -2], extended[0][:, -1]
    assert np.isnan(score[[0, 3]]).all() and np.isnan(gap[[0, 3]]).all()
    assert score[1] == 3 and score[2] == 2 and gap[1] == 0 and gap[2] == -1
    assert extended[1][0, -2] == 5 and extended[1][0, -1] == 0 and len(extended[2]) == 0
    assert np.array_equal(extended[0][:, :len(FEATURES)], matrices[0])


def test_an_alias_with_no_scored_candidate_gets_missing_values_not_an_error():
    (matrix,) = with_cross_features([fused_matrix([0.2, 0.1])], [np.full(2, np.nan, dtype=np.float32)])
    assert np.isnan(matrix[:, -2:]).all()


def test_each_alias_trains_against_its_gold_label_and_its_hardest_wrong_candidates():
    labels = np.array(["Gold", "Near", "Far", "Nearest", "Other gold"], dtype=object)
    rows = [np.array([0, 1, 2, 3])]
    relevance = [np.array([1, 0, 0, 0])]
    table = (rows, [fused_matrix([0.9, 0.5, 0.1, 0.7])], relevance, np.array(["q1"]))
    pairs = mined_pairs(table, ["alias"], ["Gold"], labels, negatives=2)
    assert pairs == {"query": ["alias"] * 3, "passage": ["Gold", "Nearest", "Near"], "label": [1.0, 0.0, 0.0]}


@pytest.fixture()
def crossed(home, pipeline_home):
    for folder in ("data", "models", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    return home / "models/trained/alias_label_teacher"


def test_the_same_pairs_and_seed_train_the_same_cross_encoder(tiny_model):
    import torch

    pairs = {"query": ["UdeG", "MIT", "Oxford"] * 4, "passage": ["Universidad de Guadalajara", "Harvard", "Oxford"] * 4,
             "label": [1.0, 0.0, 1.0] * 4}
    # Other draws from the global generator in between must not change the model.
    first = train_cross_encoder(pairs, str(tiny_model), "cpu", batch_size=4, seed=5)
    torch.rand(7)
    second = train_cross_encoder(pairs, str(tiny_model), "cpu", batch_size=4, seed=5)
    other = train_cross_encoder(pairs, str(tiny_model), "cpu", batch_size=4, seed=6)
    weights = [dict(model.model.named_parameters()) for model in (first, second, other)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not all(torch.equal(weights[0][name], weights[2][name]) for name in weights[0])


def test_the_pipelines_teacher_reranks_with_its_cross_encoder(in_pipeline_home):
    teacher_dir = in_pipeline_home / "models/trained/alias_label_teacher"
    record = read_json(cross_dir(teacher_dir) / "training_config.json")
    sidecar = read_json(teacher_dir / RERANKER_FILE)
    assert sidecar["features"] == FEATURES + CROSS_FEATURES
    assert sidecar["cross_encoder"] == model_fingerprint(cross_dir(teacher_dir))
    assert record["bi_encoder_fingerprint"] == model_fingerprint(teacher_dir)
    assert record["train_pairs"] > record["train_aliases"] == 80
    assert record["layers"] == 2 and record["top"] == 20
    teacher = load_retriever("teacher")
    assert teacher.searcher.cross is not None and teacher.searcher.cross.top == record["top"]
    assert not quantized(teacher.searcher.cross.model.network)
    table = teacher.lookup(["UdeG", "Batman Üniversitesi"], k=3)
    assert len(table) == 6 and table.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()


def quantized(network) -> bool:
    import torch

    return any(isinstance(module, torch.ao.nn.quantized.dynamic.Linear) for module in network.modules())


def test_the_students_cross_encoder_is_its_teachers_with_half_the_layers_run_int8(in_pipeline_home):
    teacher_dir = in_pipeline_home / "models/trained/alias_label_teacher"
    student_dir = in_pipeline_home / "models/trained/alias_label_student"
    record = read_json(cross_dir(student_dir) / "training_config.json")
    assert record["base_model"] == str(cross_dir(teacher_dir))
    assert record["base_model_fingerprint"] == model_fingerprint(cross_dir(teacher_dir))
    assert record["bi_encoder_fingerprint"] == model_fingerprint(student_dir)
    assert record["layers"] == 1 and record["top"] == STUDENT_CROSS_TOP
    assert read_json(cross_dir(student_dir) / "config.json")["num_hidden_layers"] == 1
    assert read_json(student_dir / RERANKER_FILE)["features"] == FEATURES + CROSS_FEATURES
    student = load_retriever("student")
    assert student.int8_scheme == "per-channel" and quantized(student.searcher.cross.model.network)
    assert student.searcher.cross.top == STUDENT_CROSS_TOP and student.searcher.cross.model.traced is not None
    assert not quantized(load_retriever("student", int8=False).searcher.cross.model.network)
    assert student.lookup(["UdeG"], k=3)["rank"].tolist() == [1, 2, 3]


def test_the_direct_forward_pass_scores_as_sentence_transformers_predict_does(in_pipeline_home, capfd):
    from sentence_transformers.cross_encoder import CrossEncoder

    folder = cross_dir(in_pipeline_home / "models/trained/alias_label_teacher")
    pairs = [("UdeG", "Universidad de Guadalajara"), ("MIT", "Massachusetts Institute of Technology"),
             ("a much longer alias of some institution", "x")]
    reference = CrossEncoder(str(folder), device="cpu", max_length=48).predict(pairs, show_progress_bar=False)
    capfd.readouterr()
    scorer = load_cross_encoder(folder.parent, np.array(["x"], dtype=object), "cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert isinstance(scorer.model, PairModel) and scorer.model.traced is not None
    assert np.allclose(scorer.model.predict(pairs, batch_size=2), reference, atol=1e-5)
    # Past one batch, pairs are batched by length; each score still lands at its own pair.
    many = [pairs[i % 3] if i % 4 else (f"alias {i}", "a label of many words " * (i % 5)) for i in range(11)]
    one_by_one = np.concatenate([scorer.model.predict([pair]) for pair in many])
    assert len(set(np.round(one_by_one, 6))) > 3
    np.testing.assert_allclose(scorer.model.predict(many, batch_size=3), one_by_one, atol=1e-5)
    int8 = load_cross_encoder(folder.parent, np.array(["x"], dtype=object), "cpu", int8_scheme="per-channel")
    assert np.allclose(int8.model.predict(pairs), reference, atol=0.05)
    assert len(scorer.model.predict([])) == 0


def test_a_second_run_reuses_the_cross_encoder_and_refits_the_reranker(crossed, tiny_model, caplog):
    import train_cross_encoder

    weights = {p.name: p.stat().st_mtime_ns for p in cross_dir(crossed).iterdir()}
    (crossed / RERANKER_FILE).unlink()
    with caplog.at_level(logging.INFO):
        train_cross_encoder.main(train_cross_encoder.parse_args(["--base", str(tiny_model), *CROSS_SMOKE]))
    assert "reusing" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in cross_dir(crossed).iterdir()} == weights
    assert read_json(crossed / RERANKER_FILE)["features"] == FEATURES + CROSS_FEATURES


def test_a_changed_cross_encoder_is_refused_with_the_command_that_fixes_it(crossed):
    weights = next(cross_dir(crossed).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(UserError, match="not the cross-encoder the reranker.*python scripts/train_cross_encoder.py"):
        load_retriever("teacher")
    shutil.rmtree(cross_dir(crossed))
    with pytest.raises(UserError, match="has no cross-encoder.*python scripts/train_cross_encoder.py --model teacher"):
        load_retriever("teacher")
    # The bi-encoder itself is unchanged by its companion: its indexes and calibration still load.
    assert load_retriever("teacher", mode="hybrid").lookup(["UdeG"], k=1)["rank"].tolist() == [1]


def test_calibrate_without_the_cross_encoder_fits_the_first_stage_features_alone(crossed):
    import calibrate

    calibrate.main(calibrate.parse_args(["--model", "teacher", "--no-cross-encoder"]))
    assert read_json(crossed / RERANKER_FILE)["features"] == FEATURES
    assert load_retriever("teacher").searcher.cross is None


def test_bad_flags_are_refused_with_what_to_pass(capsys):
    import train_cross_encoder

    with pytest.raises(SystemExit):
        train_cross_encoder.parse_args(["--top", "0"])
    assert "--top 0 must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_cross_encoder.parse_args(["--layers", "0"])
    assert "--layers 0 must be at least 1" in capsys.readouterr().err


def test_more_layers_than_the_base_has_are_refused(crossed, tiny_model):
    import train_cross_encoder

    with pytest.raises(UserError, match="--layers 5: the base .* has 2 layers"):
        train_cross_encoder.main(train_cross_encoder.parse_args(["--base", str(tiny_model), "--layers", "5",
                                                                 *CROSS_SMOKE]))
