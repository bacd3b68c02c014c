"""The GPU encoding path's logic, checked on CPU: dtype choice, batching, order, equality with encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alias_label.fast_encode import (
    default_workers,
    estimated_tokens,
    fast_encode,
    half_precision_copy,
    inference_dtype,
    token_budget_batches,
)
from alias_label.modeling import encode, load_model


def test_dtype_and_workers_per_device(monkeypatch):
    assert inference_dtype("cpu") == torch.float32 and default_workers("cpu") == 0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype("cuda") == torch.bfloat16 and default_workers("cuda") >= 1
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_dtype("cuda:0") == torch.float16


@pytest.mark.parametrize(("max_tokens", "max_batch"), [(64, 1000), (1000, 7), (5, 3)])
def test_token_budget_batches_cover_every_row_once_within_budget(max_tokens, max_batch):
    lengths = np.random.default_rng(0).integers(1, 40, 500)
    batches = token_budget_batches(lengths, max_tokens, max_batch)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(500))
    for batch in batches:
        assert len(batch) <= max_batch
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= max_tokens
    longest = [lengths[b].max() for b in batches]
    assert longest == sorted(longest, reverse=True)  # longest first: memory errors surface at once


def test_estimated_tokens_order_like_real_token_counts(tiny_model):
    model = load_model(tiny_model, "cpu")
    texts = ["MIT", "University of Guadalajara", "Universidad Nacional Autónoma de México, Facultad de Ciencias"]
    real = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    assert np.argsort(estimated_tokens(texts)).tolist() == np.argsort(real).tolist()


@pytest.mark.parametrize("workers", [0, 2])
def test_fast_encode_equals_encode_in_input_order(tiny_model, workers):
    model = load_model(tiny_model, "cpu", query_prompt="query: ")
    texts = [f"{'long ' * (i % 9)}name {i}" for i in range(157)]
    expected = encode(model, texts, "query")
    got = fast_encode(model, texts, "query", max_tokens=96, max_batch=16, workers=workers)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    tensor = fast_encode(model, texts, "query", max_tokens=96, as_tensor=True)
    assert torch.is_tensor(tensor) and tensor.dtype == torch.float32 and tensor.shape == expected.shape


def test_half_precision_copy_leaves_the_model_alone(tiny_model):
    model = load_model(tiny_model, "cpu")
    assert half_precision_copy(model, torch.float32) is model
    half = half_precision_copy(model, torch.bfloat16)
    assert half is not model and half is half_precision_copy(model, torch.bfloat16)  # made once
    assert next(half.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
