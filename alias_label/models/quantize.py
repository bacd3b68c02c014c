"""int8 on a CPU: torch's dynamic quantisation of a model's Linear layers (docs/speed.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from alias_label.errors import UserError

INT8_SCHEMES = ("per-channel", "per-tensor", "per-channel-ffn-float32")


ACTIVATION_BITS = (7, 8)


class FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamic int8 Linear with each batch's activations quantised to all 8 bits.

    torch's own module always asks the kernel for ``reduce_range``: 7-bit activations, which keep
    AVX2's 16-bit pairwise sums (u8 x s8, two at a time) from saturating. VNNI multiplies into
    32 bits, so there the 8th bit is free: it halves the activations' rounding step.
    """

    def forward(self, x):
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    def _get_name(self):
        return "FullRangeDynamicQuantizedLinear"


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies u8 x s8 into 32-bit sums (AVX-512 VNNI), which fbgemm uses when present."""
    try:
        flags = cpuinfo.read_text(errors="replace").split()
    except OSError:
        return False
    return "avx512_vnni" in flags and torch.backends.quantized.engine in ("x86", "fbgemm")


def default_activation_bits() -> int:
    return 8 if cpu_has_vnni() else 7


def quantize_int8(model, scheme: str = "per-channel", activation_bits: int | None = None):
    """A copy of a CPU model whose Linear layers run in int8: torch's dynamic quantisation.

    Weights are stored as int8 and each batch's activations are quantised on the fly, so the
    matrix multiplies that dominate a short query's forward pass take int8 kernels (VNNI where the
    CPU has it). ``per-channel`` (the default) gives each output row of a weight its own scale,
    which keeps more of the float32 answers than torch's own default, ``per-tensor`` (one scale
    per matrix), at the same speed. ``per-channel-ffn-float32`` also leaves each layer's
    feed-forward output projection (BERT-style names: ``layer.N.output.dense``) in float32: its
    input, after the GELU, carries the outliers that one int8 scale per batch flattens
    (Bondarenko et al., 2021), so it keeps the most of float32's answers, a little slower.

    ``activation_bits``: 8 (``FullRangeDynamicLinear``) or torch's 7; by default 8 where the CPU
    has VNNI, the only place where 8 is safe, else 7. docs/speed.md compares them.
    """
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

    if scheme not in INT8_SCHEMES:
        raise UserError(f"unknown int8 scheme {scheme!r}; choose one of {', '.join(INT8_SCHEMES)}")
    if str(model.device) != "cpu":
        raise UserError(f"int8 runs on a CPU only (torch's dynamic quantisation has no {model.device} kernels); "
                        "drop --int8, or pass --device cpu")
    activation_bits = default_activation_bits() if activation_bits is None else activation_bits
    if activation_bits not in ACTIVATION_BITS:
        raise UserError(f"int8 activations take 7 or 8 bits, not {activation_bits}")
    if activation_bits == 8 and not cpu_has_vnni():
        raise UserError("8-bit int8 activations need a CPU with AVX-512 VNNI (without it fbgemm's 16-bit sums "
                        "saturate); use 7")
    qconfig = default_dynamic_qconfig if scheme == "per-tensor" else per_channel_dynamic_qconfig
    keep_float32 = is_ffn_output if scheme == "per-channel-ffn-float32" else lambda name: False
    spec = {name: qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not keep_float32(name)}
    mapping = get_default_dynamic_quant_module_mappings()
    if activation_bits == 8:
        mapping = {**mapping, torch.nn.Linear: FullRangeDynamicLinear}
    with warnings.catch_warnings():
        # torch marks eager quantisation deprecated in favour of torchao, not installed here; torch is pinned.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, mapping=mapping)


def is_ffn_output(module_name: str) -> bool:
    """A transformer layer's feed-forward output projection, not the attention's (``attention.output.dense``)."""
    return module_name.endswith(".output.dense") and ".attention." not in module_name


def int8_by_default(role: str, device: str) -> bool:
    """Whether a model queried for lookups runs int8 unless told otherwise: the student on a CPU.

    The student exists to answer fast on a CPU, and int8 kernels are what make a short query's
    forward pass fast there; the teacher is the reference, so it stays float32 (docs/speed.md).
    Artifacts (indexes, calibration) are always made by the float32 model.
    """
    return role == "student" and str(device) == "cpu"
