"""Forward passes recorded once with TorchScript's tracer, for lookups on a CPU.

A lookup's forward pass on a CPU runs a few short sequences through a few small layers: most of
its time is Python walking the modules (hooks, argument handling, building the attention mask),
not arithmetic. A traced forward replays the recorded operations without that walk, on the same
kernels, so it gives the same numbers.

A trace records the path of one example, and anything the model's Python decided from that
example's values is fixed in it. So each trace is checked against the eager forward on inputs of
other batch sizes and lengths, padded and not; one that fails to trace, or differs on any of
them, is dropped and the eager forward runs. torch marks ``torch.jit.trace`` deprecated in favour
of ``torch.export``, which cannot export the dynamic int8 Linear layers the CPU path runs
(``alias_label.models.quantize``); torch is pinned (requirements.txt), and the check keeps a trace
that stops working from ever answering.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections.abc import Callable

import torch

from alias_label.models.load import prompt_for

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # the largest difference from the eager forward a trace may show on its checks
# Texts the traces are recorded and checked on: what matters is their shapes, a batch padded to
# its longest member and batches of other sizes and lengths, up to one cut at the model's limit.
LONG = " ".join(["word"] * 600)
EXAMPLE = ["a short name", "a somewhat longer name of several more words"]
CHECKS = [["one"], ["two words", "a name of a few more words than that", "three small words"], [LONG, "one"]]
PAIR_EXAMPLE = [("a short name", "a somewhat longer name of several more words"), ("one", "two words")]
PAIR_CHECKS = [[("one", "two")],
               [("two words", "a name of a few more words"), ("a name", "one"), ("x", "three small words")],
               [(LONG, "one"), ("two", LONG)]]

# sentence-transformers model -> (its traced forward, the prompt and the tensors it was traced with)
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class SentenceEmbeddings(torch.nn.Module):
    """A sentence-transformers model as a function of its tokeniser's tensors, the other features
    (modality, prompt length) fixed: the shape a trace records."""

    def __init__(self, model, constants: dict):
        super().__init__()
        self.model = model
        self.constants = constants

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model({**self.constants, **features})["sentence_embedding"]


class PairLogits(torch.nn.Module):
    """A sequence-classification network as a function of its tokeniser's tensors."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.network(**features).logits


@contextlib.contextmanager
def quiet_libraries():
    """Errors only from sentence-transformers and transformers, for a block.

    The tracer reads every attribute of every submodule, so each deprecated or unset property the
    two libraries log about when it is read (``SentenceTransformer._target_device``, a model's
    ``loss_function``) speaks up on every lookup script's start, about nothing the trace uses.
    """
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "transformers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def traced(module: torch.nn.Module, example: dict, checks: list[tuple[dict, torch.Tensor]]) -> Callable | None:
    """``module`` traced on ``example``, or None where tracing fails or the trace differs by more
    than ``TOLERANCE`` from the eager output on any of ``checks`` (inputs, what the eager forward gives)."""
    with torch.inference_mode(), warnings.catch_warnings():
        # the tracer notes each Python value it fixes from the example, which the checks cover,
        # and its own deprecation (see the module docstring)
        warnings.simplefilter("ignore")
        try:
            with quiet_libraries():
                recorded = torch.jit.trace(module, (example,), strict=False, check_trace=False)
            agrees = all(torch.allclose(recorded(inputs), expected, atol=TOLERANCE, rtol=0)
                         for inputs, expected in checks)
        except Exception as error:  # noqa: BLE001 - any failure to trace keeps the eager forward
            log.info("tracing %s failed (%s); lookups run it eagerly", type(module).__name__, error)
            return None
    if not agrees:
        log.info("the trace of %s differs from its eager forward; lookups run it eagerly", type(module).__name__)
        return None
    return recorded


def split_features(features: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A tokeniser's features as (its tensors, everything else)."""
    tensors = {key: value for key, value in features.items() if torch.is_tensor(value)}
    return tensors, {key: value for key, value in features.items() if key not in tensors}


def trace_encoder(model, kind: str = "query") -> bool:
    """Trace a CPU sentence-transformers model's forward for the batches ``encode`` sends in one
    piece (``sentence_embeddings``) with the prompt of ``kind``, the lookups' queries by default;
    whether the trace holds."""
    if str(model.device) != "cpu":
        return False
    prompt = prompt_for(model, kind) or None
    model.eval()
    example, constants = split_features(model.preprocess(EXAMPLE, prompt=prompt))
    with torch.inference_mode():
        checks = [(split_features(features)[0], model(features)["sentence_embedding"])
                  for features in (model.preprocess(texts, prompt=prompt) for texts in CHECKS)]
    recorded = traced(SentenceEmbeddings(model, constants), example, checks)
    if recorded is None:
        return False
    _TRACED[model] = (recorded, prompt, set(example), constants)
    return True


def sentence_embeddings(model, features: dict, prompt: str | None) -> torch.Tensor:
    """The model's sentence embeddings of one batch of features: through its trace when it has one
    for such features (the same prompt, the same tensors, the same other values), else eagerly."""
    entry = _TRACED.get(model)
    if entry is not None:
        recorded, traced_prompt, keys, constants = entry
        tensors, others = split_features(features)
        if traced_prompt == prompt and set(tensors) == keys and others == constants:
            return recorded(tensors)
    return model(features)["sentence_embedding"]


def trace_pairs(network, tokenizer, max_length: int | None) -> Callable | None:
    """A CPU cross-encoder network's forward traced for (alias, label) pairs, or None where the trace does not hold."""
    def features(pairs):
        return split_features(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                                        truncation=True, max_length=max_length, return_tensors="pt"))[0]

    module = PairLogits(network.eval())
    with torch.inference_mode():
        checks = [(inputs, module(inputs)) for inputs in map(features, PAIR_CHECKS)]
    return traced(module, features(PAIR_EXAMPLE), checks)
