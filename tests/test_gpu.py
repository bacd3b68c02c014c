"""CUDA paths: run only where torch sees a GPU (a CUDA machine); skipped on CPU CI.

They check that training picks bf16/fp16 autocast and that the same model retrieves the same
labels on GPU as on CPU, within bf16 tolerance.
"""

from __future__ import annotations

import gpu_check
import numpy as np
import pytest
import torch

from alias_label.data.split import load_split
from alias_label.index.dense import build_index
from alias_label.io import read_json
from alias_label.models.encode import encode
from alias_label.models.load import inference_precision, load_model, precision_name

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_check_passes_with_require_gpu(home, tiny_model):
    assert gpu_check.main(gpu_check.parse_args(["--require-gpu", "--model", str(tiny_model)])) == 0
    report = read_json(home / "logs/gpu_check.json")
    assert report["cuda_available"] and report["matmul_ok"] and report["encode_ok"]


def test_training_used_mixed_precision(pipeline_home):
    for role in ("teacher", "student"):
        config = read_json(pipeline_home / f"models/trained/alias_label_{role}/training_config.json")
        assert config["device"] == "cuda" and config["precision"] == precision_name("cuda") != "fp32"


def test_cpu_and_gpu_retrieve_the_same_labels(pipeline_home):
    split = load_split(pipeline_home / "data/processed")
    model_dir = pipeline_home / "models/trained/alias_label_teacher"
    results = {}
    for device in ("cpu", "cuda"):
        model = load_model(model_dir, device)
        labels = encode(model, split.labels["label"], kind="document")
        queries = encode(model, split.aliases["alias"], kind="query")
        results[device] = (labels, queries, build_index(labels).search(queries, 1)[1][:, 0])
    cosine_gap = np.abs(results["cpu"][1] @ results["cpu"][0].T - results["cuda"][1] @ results["cuda"][0].T).max()
    agreement = np.mean(results["cpu"][2] == results["cuda"][2])
    print(f"max cosine difference {cosine_gap:.2e}, top-1 agreement {agreement:.3f}")
    assert cosine_gap < 2e-2
    assert agreement >= 0.9


def test_one_batch_encode_on_gpu_matches_the_library_and_the_cpu(tiny_model):
    texts = ["UdeG", "Universidad de Guadalajara en Jalisco", "MIT"]
    model = load_model(tiny_model, "cuda")
    ours = encode(model, texts)  # one batch: straight through the model, under autocast
    with inference_precision("cuda"):
        library = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True).float().cpu().numpy()
    assert ours.dtype == np.float32 and ours.shape == library.shape
    np.testing.assert_allclose(ours, library, atol=1e-3)
    np.testing.assert_allclose(ours, encode(load_model(tiny_model, "cpu"), texts), atol=2e-2)
