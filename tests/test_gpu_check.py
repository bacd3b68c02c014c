"""gpu_check on a CPU-only machine: a clear message, exit 0, and exit 1 under --require-gpu."""

from __future__ import annotations

import copy

import gpu_check
import pytest
import torch

from alias_label.io import read_json
from alias_label.models.quantize import cpu_has_vnni

FAST = ["--matmul-size", "64", "--encode-sentences", "16"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cpu_only_report(home, tiny_model, caplog):
    caplog.set_level("INFO")
    assert gpu_check.main(gpu_check.parse_args([*FAST, "--model", str(tiny_model)])) == 0
    assert "CPU only" in caplog.text
    report = read_json(home / "logs/gpu_check.json")
    assert report["cuda_available"] is False and report["matmul_ok"] and report["encode_ok"]
    assert report["encode_precision"] == "fp32" and "encode_sentences_per_min" in report
    # The student's CPU path: int8, checked against float32, with the activation bits the CPU allows.
    assert report["int8_ok"] and 0.9 < report["int8_min_cosine_to_fp32"] <= 1.0001
    assert report["int8_activation_bits"] == (8 if cpu_has_vnni() else 7) and report["int8_vnni"] == cpu_has_vnni()
    assert "int8_encode_sentences_per_min" in report
    assert f"the student's queries in int8 with {report['int8_activation_bits']}-bit activations" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_a_broken_int8_kernel_fails_the_check(home, tiny_model, monkeypatch, caplog):
    def scrambled(model):
        """A model whose answers are unrelated to float32's, as a saturating kernel's would be."""
        other = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in other.parameters():
                parameter.normal_()
        return other

    monkeypatch.setattr(gpu_check, "quantize_int8", scrambled)
    assert gpu_check.main(gpu_check.parse_args([*FAST, "--model", str(tiny_model)])) == 1
    assert "checks failed: int8_ok" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_require_gpu_fails_without_one(home, tiny_model):
    assert gpu_check.main(gpu_check.parse_args([*FAST, "--model", str(tiny_model), "--require-gpu"])) == 1
