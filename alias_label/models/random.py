"""Randomly initialised models of a given BERT shape, with the bundled tokenizer.

Tests train and search with tiny ones; speed benchmarks time ones of a real model's shape
(e5-large-v2: hidden 1024, 24 layers, 16 heads, intermediate 4096) with no weights to download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alias_label.models.load import bundled_model_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def random_bert_folder(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                       intermediate: int | None = None, seed: int = 0) -> Path:
    """A Hugging Face BERT folder of this shape with random weights and the bundled MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate or 2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled_model_path() / name, folder / name)
    return folder


def random_sentence_model(target: Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                          intermediate: int | None = None, seed: int = 0, max_seq_length: int = 32) -> Path:
    """A SentenceTransformer folder: a random BERT of this shape, mean pooling, the bundled tokenizer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    target = Path(target)
    raw = random_bert_folder(target.parent / f"{target.name}_hf", hidden, layers, heads, intermediate, seed)
    transformer = Transformer(str(raw), max_seq_length=max_seq_length)
    SentenceTransformer(modules=[transformer, Pooling(hidden, "mean")], device="cpu").save(str(target))
    shutil.rmtree(raw)
    return target
