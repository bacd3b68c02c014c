"""gpu_check on a CPU-only machine: a clear message, exit 0, and exit 1 under --require-gpu."""

from __future__ import annotations

import gpu_check
import pytest
import torch

from alias_label.common import read_json

FAST = ["--matmul-size", "64", "--encode-sentences", "16"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cpu_only_report(home, tiny_model, caplog):
    caplog.set_level("INFO")
    assert gpu_check.main(gpu_check.parse_args([*FAST, "--model", str(tiny_model)])) == 0
    assert "CPU only" in caplog.text
    report = read_json(home / "logs/gpu_check.json")
    assert report["cuda_available"] is False and report["matmul_ok"] and report["encode_ok"]
    assert report["encode_precision"] == "fp32" and report["encode_sentences_per_min"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_require_gpu_fails_without_one(home, tiny_model):
    assert gpu_check.main(gpu_check.parse_args([*FAST, "--model", str(tiny_model), "--require-gpu"])) == 1
