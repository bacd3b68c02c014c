"""The length-bucketed batch sampler: coverage, uniqueness, less padding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from alias_label.train.trainer import LengthBucketBatchSampler, UniqueLengthBucketBatchSampler


@pytest.fixture()
def pairs():
    rng = np.random.default_rng(0)
    labels = [f"Institute {'x' * int(n)}" for n in rng.integers(1, 60, 40)]  # 40 labels, many repeated below
    rows = [(f"alias {i} {'y' * int(rng.integers(1, 50))}", labels[i % 40]) for i in range(400)]
    return Dataset.from_dict({"alias": [a for a, _ in rows], "canonical": [lab for _, lab in rows]})


def test_every_pair_once_and_no_repeated_text(pairs):
    sampler = UniqueLengthBucketBatchSampler(pairs, batch_size=16, drop_last=False, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(pairs)))
    for batch in batches:
        labels = [pairs[i]["canonical"] for i in batch]
        assert len(set(labels)) == len(labels) and len(batch) <= 16


def test_buckets_cut_padding(pairs):
    sampler = LengthBucketBatchSampler(pairs, batch_size=16, drop_last=False, seed=1)
    lengths = sampler.lengths
    bucketed = np.mean([lengths[b].max() for b in sampler])
    shuffled = np.random.default_rng(1).permutation(len(pairs))
    random_batches = np.mean([lengths[shuffled[i:i + 16]].max() for i in range(0, len(pairs), 16)])
    assert bucketed < 0.8 * random_batches


def test_deterministic_per_epoch_and_reshuffled_across_epochs(pairs):
    make = UniqueLengthBucketBatchSampler
    first, second = make(pairs, 16, False, seed=3), make(pairs, 16, False, seed=3)
    assert list(first) == list(second)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0


def test_repeated_texts_wait_for_the_next_window_instead_of_making_small_batches():
    # One label with 30 aliases among 900 rows: 30 windows of 32 rows, batch 8.
    rows = [(f"alias {i}", "Brevard Schools" if i % 30 == 0 else f"School {i}") for i in range(900)]
    dataset = Dataset.from_dict({"alias": [a for a, _ in rows], "canonical": [lab for _, lab in rows]})
    sampler = UniqueLengthBucketBatchSampler(dataset, batch_size=8, drop_last=False, seed=0)
    sampler.WINDOW = 4
    sizes = [len(b) for b in sampler]
    assert sorted(i for b in sampler for i in b) == list(range(900))  # every pair once
    assert sum(size < 8 for size in sizes) <= 2  # only the last window may leave partial batches


def test_token_lengths_order_scripts_as_the_model_sees_them(tiny_model):
    from alias_label.models.load import load_model

    model = load_model(tiny_model, "cpu")
    texts = ["北京大学清华大学", "University of Tokyo", "MIT"]  # 8 CJK characters are 8+ tokens
    dataset = Dataset.from_dict({"alias": texts, "canonical": ["A", "B", "C"]})
    by_tokens = LengthBucketBatchSampler(dataset, 2, False, tokenizer=model.tokenizer, max_length=32)
    by_chars = LengthBucketBatchSampler(dataset, 2, False)
    real = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    assert by_tokens.lengths.tolist() == real
    assert real[0] > real[1] and by_chars.lengths[0] < by_chars.lengths[1]


def test_drop_last_keeps_only_full_batches(pairs):
    sampler = UniqueLengthBucketBatchSampler(pairs, batch_size=16, drop_last=True, seed=1)
    assert all(len(b) == 16 for b in sampler) and len(list(sampler)) == len(sampler)


def test_early_stopping_stops_and_restores_the_best_epoch(home):
    from types import SimpleNamespace

    import torch

    from alias_label.train.trainer import validation_callback

    model = torch.nn.Linear(2, 1)
    scores = iter([0.5, 0.7, 0.6, 0.55])
    weights = {}

    def evaluate(m):
        weights[len(weights)] = m.weight.detach().clone()
        return {"top1": next(scores), "n": 1}

    callback = validation_callback("teacher", evaluate, patience=2)
    state = SimpleNamespace(global_step=1, max_steps=10, epoch=1.0, is_world_process_zero=True)
    control = SimpleNamespace(should_training_stop=False)
    for epoch in range(4):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # each epoch leaves different weights
        state.epoch, state.global_step = float(epoch + 1), epoch + 1
        callback.on_epoch_end(None, state, control, model=model)
        if control.should_training_stop:
            break
    assert epoch == 3 and control.should_training_stop  # 0.6 and 0.55 did not beat 0.7: two stale epochs
    callback.on_train_end(None, state, control, model=model)
    assert torch.equal(model.weight, weights[1])  # the weights of the 0.7 epoch are back


def test_the_students_two_datasets_are_bucketed_each_on_its_own(tiny_model, tmp_path):
    """Queries and documents train as two datasets; each batch holds rows of one, of similar length."""
    from argparse import Namespace

    from sentence_transformers.sentence_transformer.losses import MSELoss

    from alias_label.models.load import load_model
    from alias_label.train.trainer import make_trainer

    model = load_model(tiny_model, "cpu")
    rng = np.random.default_rng(0)
    queries = [" ".join(["q"] * int(n)) for n in rng.integers(1, 30, 96)]
    documents = [" ".join(["d"] * int(n)) for n in rng.integers(1, 30, 64)]
    vector = [0.0] * model.get_embedding_dimension()
    dataset = {"queries": Dataset.from_dict({"text": queries, "label": [vector] * len(queries)}),
               "documents": Dataset.from_dict({"text": documents, "label": [vector] * len(documents)})}
    args = Namespace(epochs=1, batch_size=16, lr=1e-4, seed=0, warmup_ratio=0.0, save_steps=100,
                     save_minutes=0, stop_after_steps=None)
    trainer = make_trainer(model, dataset, {"queries": MSELoss(model), "documents": MSELoss(model)}, args,
                           tmp_path / "student", "cpu", [])
    batches = list(trainer.get_train_dataloader().batch_sampler)
    texts = queries + documents  # the trainer concatenates the datasets in this order
    assert sorted(i for batch in batches for i in batch) == list(range(len(texts)))
    assert all(len({i < len(queries) for i in batch}) == 1 for batch in batches)
    lengths = np.array([len(text.split()) for text in texts])
    spread = np.mean([np.ptp(lengths[batch]) for batch in batches])
    shuffled = [rng.permutation(len(queries))[i:i + 16] for i in range(0, len(queries), 16)]
    assert spread < 0.5 * np.mean([np.ptp(lengths[batch]) for batch in shuffled])


def test_a_checkpoint_comes_once_the_minutes_have_passed_since_the_last_one():
    from types import SimpleNamespace

    from transformers import TrainerControl

    from alias_label.train.trainer import timed_checkpoint_callback

    now = [0.0]
    callback = timed_checkpoint_callback(10, clock=lambda: now[0])
    train_args, control = SimpleNamespace(device="cpu", logging_steps=1), TrainerControl()
    callback.on_train_begin(train_args, None, control)

    def step_at(seconds: float, step: int) -> bool:
        now[0] = seconds
        control.should_save = False
        callback.on_step_end(train_args, SimpleNamespace(global_step=step, is_world_process_zero=True), control)
        if control.should_save:
            callback.on_save(train_args, None, control)
        return control.should_save

    assert [step_at(t, i) for i, t in enumerate([60, 599, 600, 900, 1199, 1200], start=1)] == [
        False, False, True, False, False, True]
    # A checkpoint by --save-steps resets the clock as well.
    now[0] = 1300
    callback.on_save(train_args, None, control)
    assert not step_at(1800, 7) and step_at(1900, 8)


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("train_alias_label", ["--epochs", "0"], "--epochs 0 must be above 0"),
    ("train_alias_label", ["--batch-size", "-1"], "--batch-size -1 must be at least 1"),
    ("train_alias_label", ["--lr", "nan"], "--lr nan must be above 0"),
    ("train_alias_label", ["--warmup-ratio", "1"], "--warmup-ratio 1 must be below 1: it is a fraction of the steps"),
    ("train_alias_label", ["--save-steps", "0"], "--save-steps 0 must be at least 1"),
    ("train_alias_label", ["--save-minutes", "-1"], "--save-minutes -1 must be at least 0"),
    ("train_alias_label", ["--stop-after-steps", "0"], "--stop-after-steps 0 must be at least 1"),
    ("train_alias_label", ["--early-stopping-patience", "-2"], "--early-stopping-patience -2 must be at least 0"),
    ("train_alias_label", ["--max-seq-length", "0"], "--max-seq-length 0 must be at least 1"),
    ("train_alias_label", ["--rescore", "-1"], "--rescore -1 must be at least 0"),
    ("distill_model", ["--epochs", "-1"], "--epochs -1 must be above 0"),
    ("distill_model", ["--student-layers", "0"], "--student-layers 0 must be at least 1"),
    ("distill_model", ["--hard-negatives", "-1"], "--hard-negatives -1 must be at least 0"),
    ("build_index", ["--chunk-rows", "0"], "--chunk-rows 0 must be at least 1"),
])
def test_a_flag_no_run_can_use_is_refused_before_anything_loads(capsys, script, argv, message):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(script).parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
