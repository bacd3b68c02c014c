"""What the teacher and the student share around sentence-transformers' trainer.

Checkpoints for --resume, per-epoch validation logged to logs/metrics/, an optional stop after
N steps, mixed precision on GPU, atomic model saves and the training record saved with a model.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.base.sampler import DefaultBatchSampler
from sentence_transformers.sentence_transformer.losses import (
    MultipleNegativesRankingLoss,
    MultipleNegativesSymmetricRankingLoss,
)

from alias_label.errors import check_bounds
from alias_label.io import append_jsonl, go_on_from, write_json
from alias_label.models.fast_encode import token_counts
from alias_label.models.load import precision_name
from alias_label.paths import paths

log = logging.getLogger(__name__)


def add_training_args(parser: argparse.ArgumentParser, epochs: float, batch_size: int, lr: float) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=float, default=epochs, help=f"training epochs (default: {epochs})")
    group.add_argument("--batch-size", type=int, default=batch_size, help=f"pairs per batch (default: {batch_size})")
    group.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr})")
    group.add_argument("--seed", type=int, default=13,
                       help="seed of shuffling, initialisation and sampling in training (default: 13)")
    group.add_argument("--warmup-ratio", type=float, default=0.1,
                       help="fraction of steps of LR warm-up (default: 0.1)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="where to train (default: cuda when available)")
    group.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps (default: 200)")
    group.add_argument("--save-minutes", type=float, default=10.0,
                       help="also checkpoint once N minutes have passed since the last checkpoint, so that an "
                            "interrupted run loses no more, however slow its steps; 0: by --save-steps alone "
                            "(default: 10)")
    group.add_argument("--resume", action="store_true",
                       help="insist on continuing from the last checkpoint of an interrupted run, refusing "
                            "checkpoints of another one (a rerun with the same flags and data goes on from them "
                            "anyway)")
    group.add_argument("--stop-after-steps", type=int, default=None,
                       help="checkpoint and stop after N steps, e.g. to time-box a run; the same command without it "
                            "finishes the run")
    group.add_argument("--retrain", action="store_true",
                       help="train anew, from no checkpoint, even when the saved model was trained with these "
                            "flags on this data from this base; a rerun otherwise reuses it, and what was written "
                            "after it when current")
    group.add_argument("--early-stopping-patience", type=int, default=0,
                       help="stop after N epochs without a better val top-1 and keep the best epoch (default: 0, off)")


def check_training_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse training flags no run can use before the data or a model loads: a zero ``--epochs``
    would otherwise save an untrained model over the last one."""
    check_bounds(parser, args, at_least={"batch_size": 1, "warmup_ratio": 0, "save_steps": 1, "save_minutes": 0,
                                         "stop_after_steps": 1, "early_stopping_patience": 0},
                 above={"epochs": 0, "lr": 0})
    if not args.warmup_ratio < 1:
        parser.error(f"--warmup-ratio {args.warmup_ratio:g} must be below 1: it is a fraction of the steps")


class LengthBucketBatchSampler(DefaultBatchSampler):
    """Batches of similar-length pairs, for the trainer's ``batch_sampler``.

    Random batches pad every text to the longest one in the batch; names vary from 3 to 60+
    tokens, so most of that compute is padding. Each window of ``WINDOW`` batches is sorted by
    length before it is cut into batches, and the batch order is shuffled, so batches stay random
    while padding shrinks. Lengths are token counts when a tokenizer is given (characters order
    Latin, Cyrillic and CJK names differently from their tokens), else characters.
    """

    WINDOW = 32
    UNIQUE = False

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                 generator: torch.Generator | None = None, seed: int = 0, tokenizer=None,
                 max_length: int | None = None):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        text_columns = [c for c in dataset.column_names
                        if c not in (valid_label_columns or []) and isinstance(dataset[0][c], str)]
        self.texts = [dataset[c] for c in text_columns]
        self.lengths = np.max([text_lengths(column, tokenizer, max_length) for column in self.texts], axis=0)
        self._cache: tuple[int, list[list[int]]] | None = None

    def _split(self, indices) -> list[list[int]]:
        """Cut indices into batches in their order, each row into the first batch with room (and,
        with UNIQUE, none of its texts): rows sharing a text spread over consecutive batches."""
        batches, seen, first_open = [], [], 0
        for index in indices:
            values = {column[index] for column in self.texts} if self.UNIQUE else set()
            target = next((j for j in range(first_open, len(batches))
                           if len(batches[j]) < self.batch_size and seen[j].isdisjoint(values)), None)
            if target is None:
                batches.append([])
                seen.append(set())
                target = len(batches) - 1
            batches[target].append(int(index))
            seen[target] |= values
            while first_open < len(batches) and len(batches[first_open]) == self.batch_size:
                first_open += 1
        return batches

    def _batches(self) -> list[list[int]]:
        epoch = getattr(self, "epoch", 0)
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng(self.seed + epoch)
            order = rng.permutation(len(self.lengths))
            window = self.batch_size * self.WINDOW
            batches, carried, start = [], np.array([], dtype=np.int64), 0
            while start < len(order) or len(carried):
                taken = max(window - len(carried), 0)
                new = order[start:start + taken]
                start += taken
                # Carried rows come first, so each lands in an early batch of its own.
                cut = self._split(np.concatenate([carried, new[np.argsort(self.lengths[new], kind="stable")]]))
                carried = np.array([], dtype=np.int64)
                if start < len(order):
                    # Rows left out of a full batch (a text repeated in the window, with UNIQUE)
                    # go first into the next window rather than into a small batch: MNRL's
                    # signal grows with the batch, and a batch of one has no negative at all.
                    carried = np.array([i for batch in cut if len(batch) < self.batch_size for i in batch],
                                       dtype=np.int64)
                    cut = [batch for batch in cut if len(batch) == self.batch_size]
                batches += cut
            if self.drop_last:
                batches = [batch for batch in batches if len(batch) == self.batch_size]
            rng.shuffle(batches)
            self._cache = (epoch, batches)
        return self._cache[1]

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class UniqueLengthBucketBatchSampler(LengthBucketBatchSampler):
    """Length buckets with no repeated text in a batch, so an in-batch negatives loss (MNRL) never
    meets a label as its own negative."""

    UNIQUE = True


def checkpoint_dir(output: Path) -> Path:
    return output.parent / "checkpoints" / output.name


def prepare_checkpoints(output: Path, resume: bool, run_identity: dict, is_main_process: bool = True,
                        flags: dict | None = None, retrain: bool = False) -> bool:
    """Whether to go on from the last checkpoint: yes when there is one of a run like this one, so
    that a rerun after an interruption goes on where it stopped; no with ``retrain``.

    A run is like this one when its ``run_identity`` (data fingerprint, teacher, ...) and ``flags``
    are this one's (``go_on_from``: --resume insists; a run that starts over clears the old
    checkpoints). Only the main process of a multi-process run clears and writes.
    """
    ckpt_dir = checkpoint_dir(output)
    identity = {**run_identity, **{f"--{key.replace('_', '-')}": value for key, value in (flags or {}).items()}}
    saved = not retrain and any(ckpt_dir.glob("checkpoint-*"))
    if go_on_from(ckpt_dir, saved, identity, resume, is_main_process, "checkpoints", "run", "checkpoint", log):
        log.info("resuming from the last checkpoint in %s (--retrain to start over)", ckpt_dir)
        return True
    return False


def log_validation(role: str, epoch: float, step: int, metrics: dict, extra: dict | None = None) -> None:
    """One fixed-format log line and one logs/metrics/<role>.jsonl record per validation."""
    extra = extra or {}
    log.info("%s %sepoch=%.2f step=%d %s", role, "".join(f"{key}={value} " for key, value in extra.items()), epoch,
             step, " ".join(f"val_{key}={value:.4f}" for key, value in metrics.items() if key != "n"))
    append_jsonl(paths().metrics / f"{role}.jsonl", {"model": role, **extra, "epoch": round(epoch, 3), "step": step,
                                                     **{f"val_{key}": value for key, value in metrics.items()}})


def validation_callback(role: str, evaluate: Callable, patience: int = 0, extra: dict | None = None):
    """Run ``evaluate(model)`` at each epoch end.

    Without early stopping the last epoch is skipped: its validation comes with the final index,
    whose encoding is needed anyway. With ``patience`` > 0 every epoch is validated, training
    stops after ``patience`` epochs without a better val top-1, and the best epoch's weights are
    restored when training ends. ``extra`` goes into every record.
    """
    from transformers import TrainerCallback

    class Validation(TrainerCallback):
        best_top1, best_state, stale = -1.0, None, 0

        def on_epoch_end(self, train_args, state, control, model=None, **kwargs):
            if state.global_step >= state.max_steps and not patience:
                return
            # Every process validates (the same weights give the same early-stopping decision); one logs.
            model.eval()
            metrics = evaluate(model)
            model.train()
            if state.is_world_process_zero:
                log_validation(role, state.epoch, state.global_step, metrics, extra)
            if not patience:
                return
            if metrics["top1"] > self.best_top1:
                self.best_top1, self.stale = metrics["top1"], 0
                self.best_state = {key: value.detach().to("cpu", copy=True)
                                   for key, value in model.state_dict().items()}
                return
            self.stale += 1
            if self.stale >= patience:
                log.info("early stop: val top-1 has not beaten %.4f for %d epoch(s)", self.best_top1, patience)
                control.should_training_stop = True

        def on_train_end(self, train_args, state, control, model=None, **kwargs):
            if self.best_state is not None and self.stale:
                log.info("restoring the best epoch's weights (val top-1 %.4f)", self.best_top1)
                model.load_state_dict(self.best_state)

    return Validation()


def stop_callback(after_steps: int):
    from transformers import TrainerCallback

    class StopAfterSteps(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            if state.global_step >= after_steps:
                control.should_save = True
                control.should_training_stop = True

    return StopAfterSteps()


def timed_checkpoint_callback(minutes: float, clock: Callable[[], float] = time.monotonic):
    """Checkpoint at the first step end ``minutes`` after the last checkpoint, or the start.

    Steps of a large model on a CPU can take minutes each, so a checkpoint every ``--save-steps``
    alone may come hours apart. Every process must save at the same step (each writes its own
    random state), so in a multi-process run the main process's clock decides for all, at logging
    steps: the broadcast waits for the GPU, which the trainer's logging does there anyway.
    """
    from transformers import TrainerCallback

    class TimedCheckpoints(TrainerCallback):
        since = 0.0

        def on_train_begin(self, train_args, state, control, **kwargs):
            self.since = clock()

        def on_step_end(self, train_args, state, control, **kwargs):
            due = clock() - self.since >= minutes * 60
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                if state.global_step % train_args.logging_steps:
                    return
                flag = torch.tensor([due], dtype=torch.uint8, device=train_args.device)
                torch.distributed.broadcast(flag, src=0)
                due = bool(flag.item())
            if due and not control.should_save and state.is_world_process_zero:
                log.info("checkpoint at step %d: %g minutes since the last one (--save-minutes)", state.global_step,
                         minutes)
            if due:
                control.should_save = True

        def on_save(self, train_args, state, control, **kwargs):
            self.since = clock()

    return TimedCheckpoints()


class OneForwardMNRL(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss with the aliases and labels embedded in one forward pass.

    The library embeds the anchor column on its own, in case queries and documents differ in
    width; aliases and labels are both short names. One pass of 2B rows instead of two of B
    halves the kernel launches, which bound a GPU step at the batch sizes used here.
    """

    def forward(self, sentence_features, labels):
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features, separate_first=False),
                                                 labels)


class OneForwardSymmetricMNRL(MultipleNegativesSymmetricRankingLoss):
    """MultipleNegativesSymmetricRankingLoss with every column in one forward pass, as above."""

    forward = OneForwardMNRL.forward


def ranking_loss(model, device: str, symmetric: bool = False, gather: bool = False):
    """(Symmetric) MultipleNegativesRankingLoss; on a GPU, with both columns in one forward pass.

    On CPU the step is bound by arithmetic, and padding the aliases to the labels' width would add
    some; on a GPU it is bound by kernel launches, which one pass halves.
    """
    if device.startswith("cuda"):
        return (OneForwardSymmetricMNRL if symmetric else OneForwardMNRL)(model, gather_across_devices=gather)
    return (MultipleNegativesSymmetricRankingLoss if symmetric else MultipleNegativesRankingLoss)(
        model, gather_across_devices=gather)


def text_lengths(texts: list[str], tokenizer=None, max_length: int | None = None) -> np.ndarray:
    """Token counts of ``texts`` (each distinct text tokenised once), or characters without a tokenizer."""
    if tokenizer is None:
        return np.array([len(text) for text in texts], dtype=np.int64)
    distinct, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return token_counts(tokenizer, distinct.tolist(), max_length)[inverse]


def batch_sampler(dataset, unique: bool, model=None):
    """The length-bucketing sampler, counting tokens with the model's tokenizer when there is one.

    With a dict of datasets (the student's queries and documents) the trainer builds one sampler
    per dataset, so each is bucketed on its own and no batch mixes them.
    """
    sampler = UniqueLengthBucketBatchSampler if unique else LengthBucketBatchSampler
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return sampler
    return functools.partial(sampler, tokenizer=tokenizer, max_length=model.max_seq_length)


def make_trainer(model, dataset, loss, args: argparse.Namespace, output: Path, device: str, callbacks: list,
                 prompts: dict | None = None, unique_batches: bool = False):
    """sentence-transformers' trainer with this repo's settings: seeded, AMP on GPU, checkpointed."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    dtype = precision_name(device)
    workers = min(4, os.cpu_count() or 1) if device.startswith("cuda") else 0
    if workers:
        # Forked workers each tokenise on one thread; left parallel, each would start a thread per
        # core and starve the main process, which launches the GPU's work. A user's setting stands.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir(output)),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup_ratio,  # a float below 1 is read as a fraction of all steps
        seed=args.seed,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu=device == "cpu",
        batch_sampler=batch_sampler(dataset, unique_batches, model),
        prompts=prompts,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=max(1, args.save_steps // 4),
        eval_strategy="no",
        report_to="none",
        # On a GPU, worker processes tokenise the next batches while the current one trains.
        dataloader_num_workers=workers,
        dataloader_pin_memory=device.startswith("cuda"),
        dataloader_persistent_workers=device.startswith("cuda"),
    )
    if args.save_minutes:
        callbacks = [*callbacks, timed_checkpoint_callback(args.save_minutes)]
    if args.stop_after_steps:
        callbacks = [*callbacks, stop_callback(args.stop_after_steps)]
    return SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                      callbacks=callbacks)


def run_training(trainer, resume: bool, stop_after_steps: int | None = None) -> bool:
    """Train; False when --stop-after-steps ended the run early (checkpointed, to be resumed).

    An early stop on validation is a finished run.
    """
    trainer.train(resume_from_checkpoint=resume or None)
    state = trainer.state
    if stop_after_steps and stop_after_steps <= state.global_step < state.max_steps:
        log.info("stopped after %d of %d steps as asked; the same command without --stop-after-steps finishes it",
                 state.global_step, state.max_steps)
        return False
    return True


def save_model_atomically(model, output: Path, config: dict) -> None:
    """Save beside the target and swap it in, so an interrupted save never leaves half a model.

    A finished run's checkpoints go too: for large models they hold gigabytes of optimiser state.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.staging"
    previous = output.parent / f".{output.name}.previous"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging))
    write_json(staging / "training_config.json", config)
    shutil.rmtree(previous, ignore_errors=True)
    if output.exists():
        os.replace(output, previous)
    os.replace(staging, output)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(checkpoint_dir(output), ignore_errors=True)


def training_record(role: str, args: argparse.Namespace, model, split, device: str, **extra) -> dict:
    """training_config.json: everything needed to know what a model folder is and how it was made."""
    import sentence_transformers
    import torch
    import transformers

    return {"role": role, "data_fingerprint": split.fingerprint, "split": split.meta, "device": device,
            "precision": precision_name(device), "prompts": model.prompts, "max_seq_length": model.max_seq_length,
            **extra,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "sentence_transformers": sentence_transformers.__version__}}
