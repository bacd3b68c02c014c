"""The GPU encoding path's logic, checked on CPU: dtype choice, batching, order, equality with encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alias_label.models.encode import encode
from alias_label.models.fast_encode import (
    TokenisedChunks,
    default_workers,
    fast_encode,
    half_precision_copy,
    inference_dtype,
    token_budget_batches,
)
from alias_label.models.load import load_model


def test_dtype_and_workers_per_device(monkeypatch):
    assert inference_dtype("cpu") == torch.float32 and default_workers("cpu") == 0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert inference_dtype("cuda") == torch.bfloat16
    # Two cores stay with the main process and its pinning thread; never fewer than one worker, never over 16.
    for cores, workers in ((2, 1), (8, 6), (64, 16)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert default_workers("cuda") == workers
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


def test_chunks_pad_each_batch_to_its_own_longest_text(tiny_model):
    model = load_model(tiny_model, "cpu")
    # Few characters but many tokens (CJK), and many characters but few tokens: a character
    # count would sort these wrongly and pad the short ones to the long ones.
    texts = ["北京大学清华大学复旦大学", "MIT", "University of Guadalajara", "Ukrainian Catholic University",
             "東京大学", "UdeG"] * 5 + ["x " * 80]
    chunks = TokenisedChunks(model, texts, "query: ", chunk=8, max_tokens=40, max_batch=4)
    assert len(chunks) == 4
    seen = []
    for i in range(len(chunks)):
        for rows, features in chunks[i]:
            real = [len(ids) for ids in model.tokenizer(["query: " + texts[r] for r in rows])["input_ids"]]
            longest = min(max(real), model.max_seq_length)
            assert features["input_ids"].shape == (len(rows), longest)  # no padding past the batch's longest
            assert len(rows) == 1 or len(rows) * longest <= 40
            seen += rows.tolist()
    assert sorted(seen) == list(range(len(texts)))


@pytest.mark.parametrize("workers", [0, 2])
def test_fast_encode_equals_encode_in_input_order(tiny_model, workers):
    model = load_model(tiny_model, "cpu", query_prompt="query: ")
    texts = [f"{'long ' * (i % 9)}name {i}" for i in range(157)]
    expected = encode(model, texts, "query")
    got = fast_encode(model, texts, "query", max_tokens=96, max_batch=16, workers=workers, chunk=50)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    tensor = fast_encode(model, texts, "query", max_tokens=96, as_tensor=True)
    assert torch.is_tensor(tensor) and tensor.dtype == torch.float32 and tensor.shape == expected.shape


def test_half_precision_copy_leaves_the_model_alone(tiny_model):
    model = load_model(tiny_model, "cpu")
    assert half_precision_copy(model, torch.float32) is model
    half = half_precision_copy(model, torch.bfloat16)
    assert half is not model and half is half_precision_copy(model, torch.bfloat16)  # made once
    assert next(half.parameters()).dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32
