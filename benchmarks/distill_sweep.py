"""Sweep the student's distillation recipe on one GPU: loss, temperature, training texts, depth.

distill_model.py trains one student through sentence-transformers' trainer, for hours on a
2-core CPU. This sweep runs the same recipe as a plain loop (the layer-reduced teacher regresses
onto the teacher's embeddings of the train aliases and of every label; AdamW, 10% linear warm-up
then linear decay, batches of 64 from one text set at a time), so that a dozen variants fit in
minutes on one GPU. Each variant reports val and test top-1 and teacher agreement, searching the
teacher's label vectors as the default student does. It measures which change could help; the
figures that count come from distill_model.py and evaluate_student.py.

A variant is a JSON object; keys left out take these defaults:
    mse 1.0     weight of the MSE to the teacher's embedding (the default objective)
    cos 0       weight of 1 - cosine to it
    kl 0        weight of KL(teacher || student) over softmax(label scores / tau), tau 0.05
    cand null   take that KL over each text's teacher top-`cand` labels instead of all labels
    docs true   train on every label as a text too
    aug true    train on the generated aliases of alias_label.train.augment as texts too
    noise 0     train on up to this many perturbed copies of each train-side label too
                (perturbed_labels below, seeded by --seed)
    layers 3, epochs 10, lr 1e-3, batch 64, as distill_model.py's defaults for MiniLM
    kept null   keep exactly these teacher layers (0-based, e.g. [0, 3]) instead of `layers`
                evenly spaced ones
    seed        of initialisation and batch order (default: --seed)

The results in benchmarks/results/distill_sweep.json list every variant in full, each with the
teacher it was run against (docs/student.md).

Reads   the teacher folder (default models/trained/alias_label_teacher/), data/processed/
Writes  benchmarks/results/distill_sweep[_partI].json

Example (four variants at a time share one GPU):
    for i in 0 1 2 3; do python benchmarks/distill_sweep.py --variants-file variants.json --part $i --parts 4 & done
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from harness import save_results

from alias_label.data.split import Split, load_split
from alias_label.data.text import CONNECTORS
from alias_label.models.load import load_model, pick_device, prompt_for
from alias_label.paths import paths
from alias_label.train.augment import AUGMENTATIONS, augmentation_candidates, existing_strings, train_side_labels
from alias_label.train.distill import reduce_layers

DEFAULTS = {"mse": 1.0, "cos": 0.0, "kl": 0.0, "tau": 0.05, "cand": None, "docs": True, "aug": True, "noise": 0,
            "layers": 3, "kept": None, "epochs": 10, "lr": 1e-3, "batch": 64}
ENCODE_BATCH = 1024


PERTURBATIONS = ("drop-word", "borrow-word", "abbreviate", "typo")


def _drop_word(words: list[str], i: int, rng, borrowed) -> list[str] | None:
    return words[:i] + words[i + 1:] if len(words) >= 2 else None


def _borrow_word(words: list[str], i: int, rng, borrowed) -> list[str] | None:
    word = borrowed(words, i)
    return words[:i] + [word] + words[i + 1:] if word else None


def _abbreviate(words: list[str], i: int, rng, borrowed) -> list[str] | None:
    return words[:i] + [words[i][:int(rng.integers(3, 5))] + "."] + words[i + 1:] if len(words[i]) >= 6 else None


def _typo(words: list[str], i: int, rng, borrowed) -> list[str] | None:
    word = words[i]
    if len(word) < 4:
        return None
    at = int(rng.integers(1, len(word) - 1))
    # A letter dropped, two swapped, or one doubled.
    edits = (word[:at] + word[at + 1:], word[:at] + word[at + 1] + word[at] + word[at + 2:],
             word[:at] + word[at] + word[at:])
    return words[:i] + [edits[int(rng.integers(len(edits)))]] + words[i + 1:]


PERTURBERS = {"drop-word": _drop_word, "borrow-word": _borrow_word, "abbreviate": _abbreviate, "typo": _typo}


def word_borrower(labels: list[str], rng):
    """Replace word i of a label by a word of another label that shares one of its other words."""
    holders: dict[str, list[int]] = {}
    words_of = [label.split() for label in labels]
    for row, words in enumerate(words_of):
        for word in {w.casefold() for w in words if w.casefold() not in CONNECTORS}:
            holders.setdefault(word, []).append(row)

    def borrowed(words: list[str], i: int) -> str | None:
        shared = [w.casefold() for j, w in enumerate(words) if j != i and w.casefold() in holders]
        if not shared:
            return None
        others = holders[shared[int(rng.integers(len(shared)))]]
        donor = words_of[others[int(rng.integers(len(others)))]]
        own = {w.casefold() for w in words}
        fresh = [w for w in donor if w.casefold() not in own and w.casefold() not in CONNECTORS]
        return fresh[int(rng.integers(len(fresh)))] if fresh else None

    return borrowed


def perturbed_labels(split: Split, per_label: int, seed: int) -> list[str]:
    """Up to ``per_label`` perturbed copies of each train-side label: unlabelled texts for the student.

    Each copy applies one perturbation, picked at random, to one word; held-out entities' labels
    are left out, and a text equal to any label or alias (ignoring case) is dropped.
    """
    if per_label <= 0:
        return []
    labels = train_side_labels(split)["label"].tolist()
    rng = np.random.default_rng(seed)
    borrowed = word_borrower(labels, rng)
    forbidden = existing_strings(split)
    texts: dict[str, None] = {}
    for label in labels:
        words = label.split()
        for _ in range(per_label):
            kind = PERTURBATIONS[int(rng.integers(len(PERTURBATIONS)))]
            changed = PERTURBERS[kind](words, int(rng.integers(len(words))), rng, borrowed)
            text = " ".join(changed) if changed else None
            if text and text.casefold() not in forbidden:
                texts.setdefault(text)
    return list(texts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default='[{}]', help="a JSON list of variants (default: one, all defaults)")
    parser.add_argument("--variants-file", type=Path, default=None, help="read the JSON list from this file instead")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="the teacher folder (default: models/trained/alias_label_teacher/)")
    parser.add_argument("--part", type=int, default=0, help="run the variants whose position modulo --parts is this")
    parser.add_argument("--parts", type=int, default=1, help="processes sharing the variants (default: 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if present")
    parser.add_argument("--seed", type=int, default=13,
                        help="seed of initialisation and batch order of variants that set none (default: 13)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    text = args.variants_file.read_text() if args.variants_file else args.variants
    args.variants = [{**DEFAULTS, "seed": args.seed, **variant} for variant in json.loads(text)]
    args.teacher = Path(args.teacher or paths().teacher)
    return args


def embed(model, texts: list[str], kind: str) -> torch.Tensor:
    """Normalised embeddings with gradients, through the model's own tokeniser, prompt and pooling."""
    features = model.preprocess(texts, prompt=prompt_for(model, kind) or None)
    features = {key: value.to(model.device) for key, value in features.items() if torch.is_tensor(value)}
    return F.normalize(model(features)["sentence_embedding"], dim=-1)


@torch.no_grad()
def embed_all(model, texts: list[str], kind: str) -> torch.Tensor:
    model.eval()
    return torch.cat([embed(model, texts[i:i + ENCODE_BATCH], kind) for i in range(0, len(texts), ENCODE_BATCH)])


class Sweep:
    """The teacher's vectors, the text sets and the held-out queries every variant shares."""

    def __init__(self, teacher, split, noise_levels=(), seed: int = 13):
        self.teacher, self.split = teacher, split
        self.labels = split.labels["label"].tolist()
        self.label_vectors = embed_all(teacher, self.labels, "document")
        train_aliases = sorted(set(split.train["alias"]))
        generated = augmentation_candidates(split, AUGMENTATIONS)["alias"].drop_duplicates().tolist()
        self.sets = {"aliases": (train_aliases, embed_all(teacher, train_aliases, "query")),
                     "docs": (self.labels, self.label_vectors),
                     "aug": (generated, embed_all(teacher, generated, "query"))}
        for level in sorted(set(noise_levels) - {0}):
            texts = perturbed_labels(split, level, seed)
            self.sets[f"noise{level}"] = (texts, embed_all(teacher, texts, "query"))
        self.heldout = {}
        for name in ("val", "test"):
            pairs = self.split.pairs(name)
            teacher_top1 = self.top1(embed_all(teacher, pairs["alias"].tolist(), "query"))
            self.heldout[name] = (pairs["alias"].tolist(), split.label_rows(pairs["label"]), teacher_top1)

    def top1(self, queries: torch.Tensor) -> np.ndarray:
        return (queries @ self.label_vectors.T).argmax(1).cpu().numpy()

    def evaluate(self, student, name: str) -> dict:
        aliases, gold, teacher_top1 = self.heldout[name]
        top1 = self.top1(embed_all(student, aliases, "query"))
        return {"top1": float(np.mean(top1 == gold)), "agreement": float(np.mean(top1 == teacher_top1))}

    def loss(self, variant: dict, student_vectors, teacher_vectors, candidates) -> torch.Tensor:
        loss = variant["mse"] * F.mse_loss(student_vectors, teacher_vectors)
        if variant["cos"]:
            loss = loss + variant["cos"] * (1 - (student_vectors * teacher_vectors).sum(-1)).mean()
        if variant["kl"]:
            if candidates is None:
                teacher_scores, student_scores = (v @ self.label_vectors.T for v in (teacher_vectors, student_vectors))
            else:
                labels = self.label_vectors[candidates]
                teacher_scores, student_scores = (torch.einsum("bd,bkd->bk", v, labels)
                                                  for v in (teacher_vectors, student_vectors))
            loss = loss + variant["kl"] * F.kl_div(F.log_softmax(student_scores / variant["tau"], -1),
                                                   F.log_softmax(teacher_scores / variant["tau"], -1),
                                                   log_target=True, reduction="batchmean")
        return loss

    def candidates(self, vectors: torch.Tensor, k: int | None):
        if not k:
            return None
        return torch.cat([(vectors[i:i + ENCODE_BATCH] @ self.label_vectors.T).topk(k, dim=1).indices
                          for i in range(0, len(vectors), ENCODE_BATCH)])

    def run(self, variant: dict) -> dict:
        torch.manual_seed(variant["seed"])
        rng = np.random.default_rng(variant["seed"])
        student = copy.deepcopy(self.teacher)
        reduce_layers(student, variant["layers"], variant["kept"])
        names = ["aliases"] + [name for name in ("docs", "aug") if variant[name]]
        names += [f"noise{variant['noise']}"] if variant["noise"] else []
        sets = [(*self.sets[name], self.candidates(self.sets[name][1], variant["cand"])) for name in names]
        batch = variant["batch"]
        steps = variant["epochs"] * sum(math.ceil(len(texts) / batch) for texts, _, _ in sets)
        warmup = int(0.1 * steps)
        optimizer = torch.optim.AdamW(student.parameters(), lr=variant["lr"], weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: step / max(1, warmup) if step < warmup
                                                     else max(0.0, (steps - step) / max(1, steps - warmup)))
        history, start = [], time.perf_counter()
        for _ in range(variant["epochs"]):
            student.train()
            batches = [(s, order[i:i + batch]) for s, (texts, _, _) in enumerate(sets)
                       for order in [rng.permutation(len(texts))] for i in range(0, len(texts), batch)]
            rng.shuffle(batches)
            for s, rows in batches:
                texts, targets, candidates = sets[s]
                rows_t = torch.as_tensor(rows, device=targets.device)
                loss = self.loss(variant, embed(student, [texts[i] for i in rows], "query"), targets[rows_t],
                                 None if candidates is None else candidates[rows_t])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            history.append(self.evaluate(student, "val"))
            # One line an epoch, so that a run stopped by a time limit still tells how far it got.
            print(json.dumps({"variant": variant, "epoch": len(history), "val": history[-1]}), flush=True)
        result = {"variant": variant, "val": history[-1], "test": self.evaluate(student, "test"),
                  "val_by_epoch": history, "seconds": time.perf_counter() - start}
        print(json.dumps(result), flush=True)
        return result


def main(args) -> dict:
    split = load_split()
    # float(): a teacher saved in half precision (to travel to a GPU machine) trains in float32.
    teacher = load_model(args.teacher, pick_device(args.device)).float()
    variants = [variant for i, variant in enumerate(args.variants) if i % args.parts == args.part]
    sweep = Sweep(teacher, split, [variant["noise"] for variant in variants], args.seed)
    figures = {"teacher": {name: sweep.evaluate(teacher, name) for name in ("val", "test")},
               "results": [sweep.run(variant) for variant in variants]}
    save_results("distill_sweep" + (f"_part{args.part}" if args.parts > 1 else ""), figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
