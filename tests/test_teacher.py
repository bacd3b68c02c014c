"""End-to-end teacher runs on a tiny random BERT and a slice of swot: files, sidecars, retrieval, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import train_alias_label

from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.index.bundle import load_bundle_indexes
from alias_label.index.dense import load_index
from alias_label.index.tables import label_keys
from alias_label.io import read_json
from alias_label.models.encode import encode
from alias_label.models.load import load_model, model_fingerprint, precision_name


def test_teacher_writes_model_indexes_caches_and_logs(pipeline_home):
    home = pipeline_home
    model_dir = home / "models/trained/alias_label_teacher"
    metrics = read_json(model_dir / "metrics.json")
    for name in ("model.safetensors", "modules.json", "training_config.json", "metrics.json", "calibration.json"):
        assert (model_dir / name).exists(), name
    config = read_json(model_dir / "training_config.json")
    split = load_split(home / "data/processed")
    assert config["data_fingerprint"] == split.fingerprint
    assert config["precision"] == precision_name(config["device"])
    # Test figures come from the evaluator alone; training reports validation.
    assert "test" not in metrics and metrics["val"]["n"] == len(split.val)
    assert set(metrics["timings_s"]) == {"data", *(f"{phase}_round{r}" for r in (1, 2, 3)
                                                   for phase in ("training_data", "train")), "index_and_validate"}
    assert read_json(model_dir / "indexes.json") == {"labels": "../../../faiss/labels.index",
                                                     "aliases": "../../../faiss/aliases.index"}
    # Each round validates all 4 of its epochs: an earlier round's last when the next starts, the last
    # round's with the final index.
    epochs = [json.loads(line) for line in (home / "logs/metrics/teacher.jsonl").read_text().splitlines()]
    assert [(e["round"], e["epoch"]) for e in epochs] == [(r, float(e)) for r in (1, 2, 3) for e in range(1, 5)]
    assert all(0 <= e["val_top1"] <= 1 for e in epochs)
    assert metrics["val"]["top1"] == epochs[-1]["val_top1"]
    assert config["args"]["rounds"] == 3 and config["args"]["hard_negatives"] == 1
    for earlier in ("alias_label_teacher_round1", "alias_label_teacher_round2"):
        assert config["base_model"] == read_json(model_dir.with_name(earlier) / "training_config.json")["base_model"]
    for folder in ("alias_label_teacher", "alias_label_teacher_round1", "alias_label_teacher_round2"):
        assert not (home / "models/trained/checkpoints" / folder).exists()
    assert (home / "logs/train_alias_label_args.json").exists()

    keys = label_keys(split)
    assert len(keys) > 0  # the slice has accented and non-Latin labels
    for kind, table, extra in (("labels", split.labels, keys), ("aliases", split.aliases, keys[:0])):
        index, sidecar = load_index(home / f"faiss/{kind}.index", "fix", split.fingerprint)
        # The label index holds every label, then each transliterated key, mapped back to its label.
        assert index.ntotal == len(table) + len(extra) == sidecar["rows"]
        assert sidecar["texts"] == table.iloc[:, 0].tolist() + extra["text"].tolist()
        assert sidecar["model_fingerprint"] == model_fingerprint(model_dir)
        assert sidecar["dim"] == 32 and sidecar["normalized"] is True
        cache = np.load(home / f"data/cache/teacher_{kind[:-1] if kind == 'labels' else 'alias'}_embs.npy")
        assert cache.shape == (len(table), 32)
    _, sidecar = load_index(home / "faiss/labels.index", "fix", split.fingerprint)
    assert sidecar["label_keys"] == "transliterated"
    assert sidecar["label_rows"] == list(range(len(split.labels))) + keys["row"].tolist()
    assert np.load(home / "data/cache/teacher_label_key_embs.npy").shape == (len(keys), 32)


def test_training_alias_retrieves_its_own_label(in_pipeline_home):
    home = in_pipeline_home
    split = load_split(home / "data/processed")
    model = load_model(home / "models/trained/alias_label_teacher", "cpu")
    index = load_bundle_indexes(home / "models/trained/alias_label_teacher", "teacher")[0]
    pairs = split.train
    _, ids = index.search(encode(model, pairs["alias"]), 1)
    predicted = split.labels["label"].to_numpy()[ids[:, 0]]
    hits = np.mean(np.array(predicted) == pairs["label"].to_numpy())
    assert hits >= 0.8, f"only {hits:.0%} of training aliases retrieve their label"


def test_resume_continues_an_interrupted_run(home, tiny_model, swot_slice, caplog):
    base = ["--data", str(swot_slice), "--base-model", str(tiny_model), "--limit", "40", "--epochs", "2",
            "--batch-size", "8", "--save-steps", "2", "--rounds", "2"]
    stopped = train_alias_label.main(train_alias_label.parse_args([*base, "--stop-after-steps", "3"]))
    assert stopped == {"stopped_at_step": 3, "round": 1}
    ckpt = home / "models/trained/checkpoints/alias_label_teacher_round1"
    assert (ckpt / "checkpoint-3").exists()
    assert not (home / "models/trained/alias_label_teacher").exists()
    assert not (home / "models/trained/alias_label_teacher_round1").exists()

    caplog.set_level("INFO")
    train_alias_label.main(train_alias_label.parse_args([*base, "--resume"]))
    assert "resuming from the last checkpoint" in caplog.text
    assert (home / "models/trained/alias_label_teacher/model.safetensors").exists()
    epochs = [json.loads(line) for line in (home / "logs/metrics/teacher.jsonl").read_text().splitlines()]
    # The interrupted run validated where it stopped (step 3); the resumed one went on from there to the end
    # of round 1, then trained round 2.
    per_epoch = epochs[1]["step"]
    assert [(e["round"], e["epoch"], e["step"]) for e in epochs[:3]] == [
        (1, round(3 / per_epoch, 3), 3), (1, 1.0, per_epoch), (1, 2.0, 2 * per_epoch)]
    assert [(e["round"], e["epoch"]) for e in epochs[3:]] == [(2, 1.0), (2, 2.0)]

    # A finished first round is reused by a rerun, not trained again: here the run stopped in round 2,
    # before the teacher was saved.
    shutil.rmtree(home / "models/trained/alias_label_teacher")
    caplog.clear()
    train_alias_label.main(train_alias_label.parse_args(base))
    assert "round 1: reusing the finished model" in caplog.text
    assert len((home / "logs/metrics/teacher.jsonl").read_text().splitlines()) == len(epochs) + 2


def test_resume_refuses_checkpoints_of_another_split(home, tiny_model, swot_slice):
    base = ["--data", str(swot_slice), "--base-model", str(tiny_model), "--limit", "40", "--batch-size", "8",
            "--save-steps", "2"]
    train_alias_label.main(train_alias_label.parse_args([*base, "--stop-after-steps", "2"]))
    with pytest.raises(Exception, match="rerun without --resume"):
        train_alias_label.main(train_alias_label.parse_args([*base, "--split-seed", "5", "--resume"]))


def test_a_validation_split_too_small_for_the_reranker_is_refused_before_training(home, tiny_model, tmp_path):
    table = tmp_path / "five.csv"
    pd.DataFrame({"qid": [f"Q{i}" for i in range(5)], "label": [f"Institute number {i}" for i in range(5)],
                  "alias": [f"IN{i}" for i in range(5)]}).to_csv(table, index=False)
    args = train_alias_label.parse_args(["--data", str(table), "--base-model", str(tiny_model), "--rounds", "1"])
    with pytest.raises(UserError, match=r"the validation split holds 1 alias\(es\) of 1 entity\(ies\), too few "
                                        r"for the reranker.*--val-frac"):
        train_alias_label.main(args)
    assert (home / "data/processed/split.json").exists()  # the split is written; no training ran
    assert not (home / "models/trained/alias_label_teacher").exists() and not (home / "faiss").exists()


def test_augmented_second_round_with_symmetric_loss_and_early_stopping(home, pipeline_home, swot_slice, caplog):
    """A second round from the smoke teacher: generated aliases, mined hard negatives, symmetric loss."""
    caplog.set_level("INFO")
    argv = ["--data", str(swot_slice), "--base-model", str(pipeline_home / "models/trained/alias_label_teacher"),
            "--limit", "40", "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--augment", "acronym",
            "transliterate", "--augment-ratio", "0.5", "--rounds", "1", "--hard-negatives", "2", "--loss", "symmetric",
            "--early-stopping-patience", "1"]
    metrics = train_alias_label.main(train_alias_label.parse_args(argv))
    assert metrics["val"]["n"] == len(load_split().val)
    assert "augmentation:" in caplog.text and "'acronym'" in caplog.text
    record = read_json(home / "models/trained/alias_label_teacher/training_config.json")
    assert record["args"]["augment"] == ["acronym", "transliterate"] and record["args"]["hard_negatives"] == 2
    # Early stopping validates every epoch, the last included; the best epoch is what was saved.
    epochs = [json.loads(line) for line in (home / "logs/metrics/teacher.jsonl").read_text().splitlines()]
    best = max(e["val_top1"] for e in epochs[:-1])
    assert metrics["val"]["top1"] == pytest.approx(best)


def test_hard_negatives_are_never_gold(in_pipeline_home):
    split = load_split()
    model = load_model(in_pipeline_home / "models/trained/alias_label_teacher", "cpu")
    pairs = split.train.head(20)
    columns = train_alias_label.hard_negative_column(model, split, pairs, 3)
    assert set(columns) == {"negative_1", "negative_2", "negative_3"}
    for i, label in enumerate(pairs["label"]):
        assert label.casefold() not in {columns[c][i].casefold() for c in columns}


@pytest.mark.parametrize(("loss", "device", "expected"), [
    ("mnrl", "cpu", "MultipleNegativesRankingLoss"), ("mnrl", "cuda", "OneForwardMNRL"),
    ("symmetric", "cpu", "MultipleNegativesSymmetricRankingLoss"), ("symmetric", "cuda", "OneForwardSymmetricMNRL"),
    ("cached", "cuda", "CachedMultipleNegativesRankingLoss")])
def test_loss_choice(tiny_model, loss, device, expected):
    args = train_alias_label.parse_args(["--loss", loss, "--mini-batch-size", "4"])
    built = train_alias_label.make_loss(args, load_model(tiny_model, "cpu"), device)
    assert type(built).__name__ == expected
    if loss == "cached":
        assert built.mini_batch_size == 4


@pytest.mark.parametrize("symmetric", [False, True])
def test_one_forward_loss_equals_the_per_column_loss(tiny_model, symmetric):
    from alias_label.train.trainer import ranking_loss

    model = load_model(tiny_model, "cpu").eval()  # no dropout: both paths see the same network
    aliases, labels = ["MIT", "UdeG", "Batman Üniversitesi"], ["Massachusetts Institute of Technology",
                                                               "Universidad de Guadalajara", "Batman University"]
    features = [model.preprocess(aliases), model.preprocess(labels)]
    per_column = ranking_loss(model, "cpu", symmetric)(features, None)
    one_forward = ranking_loss(model, "cuda", symmetric)(features, None)  # the GPU choice, run on CPU
    assert type(ranking_loss(model, "cuda", symmetric)).__name__.startswith("OneForward")
    assert torch.isclose(per_column, one_forward, atol=1e-5)
