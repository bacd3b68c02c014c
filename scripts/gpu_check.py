"""Report the hardware and precision this machine offers, and check that each one works.

Reads   nothing but the installed libraries and the model to time (default: the bundled MiniLM).
Writes  logs/gpu_check.json with every figure printed.
Checks  torch and CUDA versions, the device and its memory, bf16/fp16 support, the faiss
        version and whether faiss can use the GPU, a timed matmul and a timed encode; without a
        GPU also the int8 path the student takes on a CPU (its engine, whether the CPU has VNNI and
        so 8-bit activations, a timed int8 encode and its closeness to float32).

Without a GPU it prints "CPU only" and exits 0; with --require-gpu it exits 1 instead,
and also when any check fails.

Example:
    python scripts/gpu_check.py --require-gpu
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from alias_label.errors import UserError
from alias_label.io import setup_logging, write_json
from alias_label.models.encode import encode
from alias_label.models.load import autocast_dtype, inference_precision, load_model, precision_name
from alias_label.models.processes import require_one_process
from alias_label.models.quantize import cpu_has_vnni, default_activation_bits, quantize_int8
from alias_label.paths import paths

NAME = "gpu_check"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when no CUDA GPU is usable")
    parser.add_argument("--model", default=None,
                        help="model for the timed encode: local folder or hub id (default: bundled MiniLM)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the square timed matmul (default: 2048)")
    parser.add_argument("--encode-sentences", type=int, default=512,
                        help="how many short strings the timed encode embeds (default: 512)")
    return parser.parse_args(argv)


def library_report() -> dict:
    import torch

    import faiss

    report = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
              "faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report.update(device=props.name, device_memory_gb=round(props.total_memory / 2**30, 1),
                      capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported(), fp16=True)
    else:
        report.update(device="cpu", cpu_threads=torch.get_num_threads(), bf16=False, fp16=False)
    return report


def timed_matmul(device: str, size: int) -> dict:
    """Matmul rate at the precision encoding will use, checked against an fp32 result."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    reference = a @ b
    with inference_precision(device):
        a @ b  # warm-up: kernel selection and allocation stay out of the timing
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        product = a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    error = float((product.float() - reference).norm() / reference.norm())
    # bf16 operands land between 1e-3 and 1e-2 of fp32; anything near 1 means broken arithmetic.
    tolerance = 3e-2 if autocast_dtype(device) is not None else 1e-4
    return {"matmul_tflops": round(2 * size**3 / seconds / 1e12, 2), "matmul_rel_error": error,
            "matmul_ok": bool(error < tolerance)}


def timed_encode(model, texts: list[str]) -> tuple[float, np.ndarray]:
    """Sentences per minute, and the embeddings."""
    encode(model, texts[:64], progress=False)  # warm-up
    start = time.perf_counter()
    embeddings = encode(model, texts, progress=False)
    return len(texts) / (time.perf_counter() - start) * 60, embeddings


def encode_report(model, texts: list[str], device: str) -> tuple[dict, np.ndarray]:
    rate, embeddings = timed_encode(model, texts)
    norms_ok = bool(abs(float((embeddings**2).sum(axis=1).mean()) - 1.0) < 1e-3)
    return {"encode_sentences_per_min": round(rate), "encode_ok": norms_ok,
            "encode_precision": precision_name(device)}, embeddings


def int8_report(model, texts: list[str], reference: np.ndarray) -> dict:
    """The student's CPU default: the same encode in int8, checked against the float32 embeddings."""
    import torch

    rate, embeddings = timed_encode(quantize_int8(model), texts)
    # int8 moves a unit vector by a few hundredths of cosine; a kernel that saturates moves it far more.
    cosine = float(np.sum(embeddings * reference, axis=1).min())
    return {"int8_engine": torch.backends.quantized.engine, "int8_vnni": cpu_has_vnni(),
            "int8_activation_bits": default_activation_bits(), "int8_encode_sentences_per_min": round(rate),
            "int8_min_cosine_to_fp32": round(cosine, 4), "int8_ok": cosine > 0.9}


def main(args: argparse.Namespace) -> int:
    log = setup_logging(NAME)
    try:
        require_one_process("scripts/gpu_check.py")
    except UserError as err:
        log.error("%s", err)
        return 2
    report = library_report()
    device = "cuda" if report["cuda_available"] else "cpu"
    report.update(timed_matmul(device, args.matmul_size))
    model = load_model(args.model, device)
    texts = [f"University of Example {i}" for i in range(args.encode_sentences)]
    encoded, embeddings = encode_report(model, texts, device)
    report.update(encoded)
    if device == "cpu":
        report.update(int8_report(model, texts, embeddings))
    for key, value in report.items():
        log.info("%-24s %s", key, value)
    write_json(paths().logs / "gpu_check.json", report)
    failed = [key for key in ("matmul_ok", "encode_ok", "int8_ok") if not report.get(key, True)]
    if failed:
        log.error("checks failed: %s", ", ".join(failed))
        return 1
    if device == "cpu":
        log.info("CPU only: no CUDA GPU visible to torch %s; everything runs, in fp32 (the student's queries in int8 "
                 "with %d-bit activations), on %d threads", report["torch"], report["int8_activation_bits"],
                 report["cpu_threads"])
        if args.require_gpu:
            log.error("--require-gpu: no GPU")
            return 1
    else:
        log.info("GPU ok: %s, %s GB, %s", report["device"], report["device_memory_gb"], precision_name(device))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
