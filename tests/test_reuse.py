"""A rerun of a training step reuses what is current: the whole step, its trained model, or nothing."""

from __future__ import annotations

import logging
import shutil

import distill_model
import pytest
import train_alias_label
import train_cross_encoder
from conftest import CROSS_SMOKE, STUDENT_SMOKE, TEACHER_SMOKE

from alias_label.io import read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.search.calibration import fitted_as
from alias_label.search.rerank import RERANKER_FILE

TEACHER = "models/trained/alias_label_teacher"
STUDENT = "models/trained/alias_label_student"


@pytest.fixture()
def finished(home, pipeline_home):
    """A private copy of the finished smoke pipeline."""
    for folder in ("models", "data", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    return home


def forbid(monkeypatch, module, *names):
    """Make each named step of a script fail the test when it runs."""
    for name in names:
        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"{name} ran")
        monkeypatch.setattr(module, name, refuse)


def teacher_args(tiny_model, *extra):
    return train_alias_label.parse_args(["--base-model", str(tiny_model), *TEACHER_SMOKE, *extra])


def test_a_rerun_of_a_finished_teacher_reuses_it_whole(finished, tiny_model, monkeypatch, caplog):
    model_dir = finished / TEACHER
    before = {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir() if path.is_file()}
    forbid(monkeypatch, train_alias_label, "train_rounds", "index_and_validate")
    with caplog.at_level(logging.INFO):
        metrics = train_alias_label.main(teacher_args(tiny_model))
    assert "is up to date with these flags and data" in caplog.text
    assert metrics == read_json(model_dir / "metrics.json")
    assert {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir() if path.is_file()} == before


def test_a_teacher_stopped_after_saving_its_model_goes_on_from_it(finished, tiny_model, monkeypatch, caplog):
    model_dir = finished / TEACHER
    fingerprint = model_fingerprint(model_dir)
    (model_dir / "metrics.json").unlink()  # as when a run stops while indexing or calibrating
    (model_dir / RERANKER_FILE).unlink()
    forbid(monkeypatch, train_alias_label, "train_rounds")
    with caplog.at_level(logging.INFO):
        metrics = train_alias_label.main(teacher_args(tiny_model))
    assert "reusing the trained model" in caplog.text
    assert model_fingerprint(model_dir) == fingerprint
    assert read_json(model_dir / "metrics.json")["val"] == metrics["val"]
    assert read_json(model_dir / RERANKER_FILE)["model_fingerprint"] == fingerprint


def test_changed_flags_or_retrain_train_the_teacher_anew_and_say_what_changed(finished, tiny_model, monkeypatch,
                                                                              caplog):
    trained = []
    monkeypatch.setattr(train_alias_label, "train_rounds", lambda *args: trained.append(1) or (None, {"stub": 1}))
    with caplog.at_level(logging.INFO):
        assert train_alias_label.main(teacher_args(tiny_model, "--lr", "1e-2")) == {"stub": 1}
    assert "trained otherwise (--lr 0.003 -> 0.01)" in caplog.text
    assert train_alias_label.main(teacher_args(tiny_model, "--retrain")) == {"stub": 1}
    # A data flag changes the data, which its fingerprint says.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train_alias_label.main(teacher_args(tiny_model, "--split-seed", "5"))
    assert "data_fingerprint" in caplog.text
    assert len(trained) == 3


def test_a_calibration_fitted_otherwise_is_refitted_but_the_teacher_is_kept(finished, tiny_model, monkeypatch,
                                                                            caplog):
    model_dir = finished / TEACHER
    sidecar = read_json(model_dir / RERANKER_FILE)
    assert fitted_as(model_dir, "teacher", sidecar["data_fingerprint"], 0.95, 50, cross_encoder=True)
    assert not fitted_as(model_dir, "teacher", sidecar["data_fingerprint"], 0.95, 100, cross_encoder=True)
    assert not fitted_as(model_dir, "teacher", sidecar["data_fingerprint"], 0.95, 50, cross_encoder=False)
    write_json(model_dir / RERANKER_FILE, {**sidecar, "booster_params": {**sidecar["booster_params"],
                                                                         "n_estimators": 7}})
    forbid(monkeypatch, train_alias_label, "train_rounds")
    with caplog.at_level(logging.INFO):
        train_alias_label.main(teacher_args(tiny_model))
    assert "reusing the trained model" in caplog.text
    assert read_json(model_dir / RERANKER_FILE)["booster_params"]["n_estimators"] == 100


def test_a_rerun_of_a_finished_student_reuses_it_and_a_changed_one_trains(finished, monkeypatch, caplog):
    model_dir = finished / STUDENT
    forbid(monkeypatch, distill_model, "train_student", "index_and_validate")
    with caplog.at_level(logging.INFO):
        assert distill_model.main(distill_model.parse_args(STUDENT_SMOKE)) == read_json(model_dir / "metrics.json")
    assert "is up to date" in caplog.text
    trained = []
    monkeypatch.setattr(distill_model, "train_student", lambda *args: trained.append(1) or (None, {"stub": 1}))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert distill_model.main(distill_model.parse_args([*STUDENT_SMOKE, "--epochs", "2"])) == {"stub": 1}
    assert "--epochs 3.0 -> 2.0" in caplog.text
    # Another teacher in the same place is another teacher.
    monkeypatch.setattr(distill_model, "model_fingerprint", lambda path: "another teacher")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        distill_model.main(distill_model.parse_args(STUDENT_SMOKE))
    assert "teacher_fingerprint" in caplog.text and len(trained) == 2


def test_a_rerun_of_a_finished_cross_encoder_step_keeps_its_reranker(finished, tiny_model, monkeypatch, caplog):
    model_dir = finished / TEACHER
    before = (model_dir / RERANKER_FILE).stat().st_mtime_ns
    forbid(monkeypatch, train_cross_encoder, "train", "calibrate")
    with caplog.at_level(logging.INFO):
        train_cross_encoder.main(train_cross_encoder.parse_args(["--base", str(tiny_model), *CROSS_SMOKE]))
    assert "already fitted with it and these flags; nothing to do" in caplog.text
    assert (model_dir / RERANKER_FILE).stat().st_mtime_ns == before
    # Another target refits it, with the cross-encoder as it is.
    refits = []
    monkeypatch.setattr(train_cross_encoder, "calibrate", lambda *args, **kwargs: refits.append(args[4]) or {})
    train_cross_encoder.main(train_cross_encoder.parse_args(["--base", str(tiny_model), *CROSS_SMOKE,
                                                             "--target-precision", "0.9"]))
    assert refits == [0.9]


def test_a_teacher_stopped_in_its_last_round_reuses_the_earlier_rounds_trained_alike(finished, tiny_model):
    shutil.rmtree(finished / TEACHER)  # as when a run stops before the teacher is saved
    stop = ["--stop-after-steps", "1"]
    assert train_alias_label.main(teacher_args(tiny_model, *stop)) == {"stopped_at_step": 1, "round": 3}
    assert train_alias_label.main(teacher_args(tiny_model, *stop, "--lr", "1e-2")) == {"stopped_at_step": 1,
                                                                                       "round": 1}
    assert train_alias_label.main(teacher_args(tiny_model, *stop, "--retrain")) == {"stopped_at_step": 1, "round": 1}


def test_a_rerun_goes_on_from_the_checkpoints_of_a_run_like_it(home, tiny_model, swot_slice, caplog):
    base = ["--data", str(swot_slice), "--base-model", str(tiny_model), "--limit", "40", "--batch-size", "8",
            "--save-steps", "2", "--rounds", "1"]

    def run(*extra) -> dict:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            return train_alias_label.main(train_alias_label.parse_args([*base, *extra]))

    assert run("--stop-after-steps", "2") == {"stopped_at_step": 2, "round": 1}
    # Other flags start over, and say which; --resume would refuse those checkpoints.
    assert run("--lr", "1e-3", "--stop-after-steps", "2") == {"stopped_at_step": 2, "round": 1}
    assert "starting over" in caplog.text and "'--lr': (0.0001, 0.001)" in caplog.text
    with pytest.raises(Exception, match="belong to another run.*--lr"):
        run("--resume", "--stop-after-steps", "4")
    # The same flags as the stopped run go on from its checkpoint, without --resume; --retrain starts over.
    assert run("--lr", "1e-3", "--stop-after-steps", "4") == {"stopped_at_step": 4, "round": 1}
    assert "resuming from the last checkpoint" in caplog.text
    assert run("--lr", "1e-3", "--stop-after-steps", "2", "--retrain") == {"stopped_at_step": 2, "round": 1}
    assert "resuming" not in caplog.text
    run("--lr", "1e-3")
    assert "resuming from the last checkpoint" in caplog.text
    assert (home / TEACHER / "metrics.json").exists()


def test_an_interrupted_training_run_says_that_a_rerun_goes_on(caplog):
    from alias_label.errors import run_main

    def interrupted(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_main(interrupted, None, resumable=True)
    assert exit_info.value.code == 130
    assert "interrupted; rerun the same command to go on from what was saved" in caplog.text
