"""Traced forward passes: they answer as the eager ones do, on batches they were not traced on,
and a trace that fails or disagrees is dropped for the eager forward."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from alias_label.models.encode import CPU_BATCH, encode, encode_alone
from alias_label.models.load import load_model
from alias_label.models.quantize import quantize_int8
from alias_label.models.traced import PairLogits, sentence_embeddings, trace_encoder, trace_pairs, traced

# Each list one batch on a CPU (longer ones go through the library's own loop, untraced).
TEXTS = [["Universidad de Guadalajara"], ["MIT", "Massachusetts Institute of Technology", "a b"],
         [f"name number {i} of a longer list" for i in range(CPU_BATCH)], [" ".join(["word"] * 100), "x"]]


def refuse_eager_calls(model, monkeypatch):
    """Make the model's own forward fail, so that only a trace can answer."""
    def eager(*args, **kwargs):
        raise AssertionError("the eager forward ran")

    monkeypatch.setattr(model, "forward", eager)


@pytest.mark.parametrize("int8", [False, True])
def test_a_traced_encoder_embeds_every_batch_as_the_eager_one(tiny_model, monkeypatch, int8):
    model = load_model(tiny_model, "cpu")
    if int8:
        model = quantize_int8(model, "per-channel")
    eager = [encode(model, texts) for texts in TEXTS]
    assert trace_encoder(model)
    refuse_eager_calls(model, monkeypatch)
    for texts, expected in zip(TEXTS, eager, strict=True):
        assert np.allclose(encode(model, texts), expected, atol=1e-6)


@pytest.mark.parametrize("int8", [False, True])
def test_encode_alone_gives_each_text_what_it_gets_alone_in_any_list(tiny_model, int8):
    model = load_model(tiny_model, "cpu")
    if int8:  # a forward pass's activations share one quantisation scale: batch-mates move each other
        model = quantize_int8(model, "per-channel")
    trace_encoder(model)
    texts = [text for batch in TEXTS for text in batch]
    together = encode_alone(model, texts)
    alone = np.vstack([encode(model, [text]) for text in texts])
    assert np.array_equal(together, alone)  # to the last bit
    assert np.array_equal(encode_alone(model, texts[::-1]), alone[::-1])
    assert encode_alone(model, []).shape[0] == 0


def test_encode_alone_keeps_a_gpus_batches(tiny_model, monkeypatch):
    import alias_label.models.encode as encode_module

    calls = []
    monkeypatch.setattr(encode_module, "encode", lambda model, texts, kind: calls.append(list(texts)) or "batched")
    model = load_model(tiny_model, "cpu")
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda", 0)))
    assert encode_module.encode_alone(model, ["a", "b c"]) == "batched" and calls == [["a", "b c"]]


def test_a_prompt_left_out_of_the_pooling_stays_out_of_it(tiny_model, monkeypatch):
    model = load_model(tiny_model, "cpu", query_prompt="query: ")
    model[1].include_prompt = False
    eager = [encode(model, texts, kind="query") for texts in TEXTS]
    included = encode(model, TEXTS[0], kind="query")
    model[1].include_prompt = True
    assert not np.allclose(encode(model, TEXTS[0], kind="query"), included, atol=1e-3)  # the prompt counts
    model[1].include_prompt = False
    assert trace_encoder(model)
    refuse_eager_calls(model, monkeypatch)
    for texts, expected in zip(TEXTS, eager, strict=True):
        assert np.allclose(encode(model, texts, kind="query"), expected, atol=1e-6)


def test_a_batch_unlike_the_trace_runs_eagerly(tiny_model):
    model = load_model(tiny_model, "cpu", query_prompt="query: ")
    assert trace_encoder(model)
    features = model.preprocess(["MIT"], prompt="document: ")
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with torch.inference_mode():
        sentence_embeddings(model, model.preprocess(["MIT"], prompt="query: "), "query: ")
        assert calls == []  # the trace answered
        sentence_embeddings(model, features, "document: ")  # another prompt than the trace's
        assert calls == [1]
        sentence_embeddings(model, {**features, "extra": 3}, "query: ")  # a value the trace never saw
        assert calls == [1, 1]


class ShapeDependent(torch.nn.Module):
    """A forward whose Python reads the batch size: a trace fixes the example's."""

    def forward(self, features):
        ids = features["input_ids"].float()
        return ids.sum(dim=1, keepdim=True) * (2.0 if ids.shape[0] == 2 else 1.0)


class Untraceable(torch.nn.Module):
    def forward(self, features):
        return {"not": "a tensor"}


def batch(rows: int) -> dict:
    return {"input_ids": torch.arange(rows * 3).reshape(rows, 3)}


def test_a_trace_that_differs_from_the_eager_forward_is_dropped(caplog):
    with caplog.at_level(logging.INFO, logger="alias_label.models.traced"):
        module = ShapeDependent()
        assert traced(module, batch(2), [(batch(2), module(batch(2)))]) is not None  # the example's shape agrees
        assert traced(module, batch(2), [(batch(1), module(batch(1)))]) is None
        assert "differs from its eager forward" in caplog.text
        assert traced(Untraceable(), batch(2), [(batch(1), module(batch(1)))]) is None
        assert "tracing Untraceable failed" in caplog.text


def test_a_traced_cross_encoder_scores_pairs_as_the_eager_network(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from alias_label.models.random import random_bert_folder

    tokenizer = AutoTokenizer.from_pretrained(str(random_bert_folder(tmp_path / "tiny")))
    torch.manual_seed(0)
    network = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                                       num_hidden_layers=2, num_attention_heads=2,
                                                       intermediate_size=64, num_labels=1)).eval()
    recorded = trace_pairs(network, tokenizer, 32)
    assert recorded is not None
    for pairs in ([("UdeG", "Universidad de Guadalajara")],
                  [("MIT", "Massachusetts Institute of Technology"), ("a", "b"), ("longer alias here", "x")],
                  [(" ".join(["word"] * 100), "x")]):
        inputs = dict(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                                max_length=32, return_tensors="pt"))
        with torch.inference_mode():
            assert torch.allclose(recorded(inputs), PairLogits(network)(inputs), atol=1e-6)


def test_tracing_leaves_the_libraries_quiet(tiny_model, capfd, caplog):
    # The tracer reads every attribute of every submodule; the deprecated or unset properties the
    # libraries log about when read must not speak up when a lookup script starts.
    logging.Logger.warning_once.cache_clear()  # transformers logs some warnings once a process
    levels = [logging.getLogger(name).level for name in ("sentence_transformers", "transformers")]
    model = load_model(tiny_model, "cpu")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        assert trace_encoder(model)
    printed = capfd.readouterr()
    said = caplog.text + printed.out + printed.err
    assert "_target_device" not in said and "loss_type" not in said
    assert [logging.getLogger(name).level for name in ("sentence_transformers", "transformers")] == levels
