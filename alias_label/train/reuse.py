"""Whether a training step's saved output is what the step would make now, so a rerun can reuse it.

A step is rerun after an interruption, or when ``make pipeline`` runs again. Training again
what is saved costs the whole step and gives the same model, so a step whose saved model was
trained with the same flags, on the same data, from the same base is reused: whole when
everything written after the model is current too (indexes, calibration, reranker), else from
its trained model on. ``--retrain`` trains anew anyway. A mismatch is logged with what changed.
The saved record is compared, not the code that trained it: a change to the code asks for --retrain.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from alias_label.data.split import DATA_DEFAULTS
from alias_label.errors import UserError
from alias_label.index.bundle import load_bundle_indexes
from alias_label.io import read_json
from alias_label.search.calibration import fitted_as

log = logging.getLogger(__name__)

# Flags that steer a run but not what it trains: checkpointing, where the model goes, and the data
# flags, which the data fingerprint already stands for.
RUN_CONTROL = frozenset({"resume", "retrain", "stop_after_steps", "save_steps", "save_minutes", "output",
                         "processed_dir", "refresh_cache", "data", *DATA_DEFAULTS})
RECORD = "training_config.json"
# Written last by the teacher and the student, after their indexes and calibration.
FINISHED = "metrics.json"
NOTHING, TRAINED, FINISHED_STEP = "nothing", "trained", "finished"


def flags_of(values: dict, ignore: frozenset = frozenset()) -> dict:
    """The flags that decide what a run trains, as its training record stores them."""
    kept = {key: value for key, value in values.items() if key not in RUN_CONTROL | ignore}
    return json.loads(json.dumps(kept, default=str))


def changes(model_dir: Path, identity: dict, args: argparse.Namespace, ignore: frozenset = frozenset()) -> list[str]:
    """What differs between the model saved in ``model_dir`` and this run: empty when it is current."""
    config = Path(model_dir) / RECORD
    if not config.exists():
        return [f"no trained model in {model_dir}"]
    record = read_json(config)
    found = [f"{key} {record.get(key)} -> {value}" for key, value in identity.items() if record.get(key) != value]
    saved, now = flags_of(record.get("args", {}), ignore), flags_of(vars(args), ignore)
    found += [f"--{key.replace('_', '-')} {saved.get(key)} -> {now.get(key)}"
              for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]
    return found


def outputs_current(model_dir: Path, role: str, data_fingerprint: str, args: argparse.Namespace) -> bool:
    """Whether the step finished writing after its model: its metrics, and indexes, calibration and
    reranker that load, match the model and the data, and were fitted with these flags."""
    if not (Path(model_dir) / FINISHED).exists():
        return False
    try:
        load_bundle_indexes(model_dir, role)
    except UserError as error:
        log.info("writing the indexes of %s again (%s)", model_dir, error)
        return False
    return fitted_as(model_dir, role, data_fingerprint, args.target_precision, args.rerank_candidates,
                     args.cross_encoder)


def saved_state(model_dir: Path, role: str, identity: dict, args: argparse.Namespace,
                ignore: frozenset = frozenset()) -> str:
    """FINISHED_STEP, TRAINED (only the model is current) or NOTHING, and a log line saying why.

    ``identity``: the fingerprints (data, base or teacher) this run would record with its model.
    """
    if args.retrain:
        return NOTHING
    found = changes(model_dir, {"role": role, **identity}, args, ignore)
    if found:
        if (Path(model_dir) / RECORD).exists():
            log.info("training anew: the model in %s was trained otherwise (%s)", model_dir, "; ".join(found))
        return NOTHING
    if outputs_current(model_dir, role, identity["data_fingerprint"], args):
        log.info("%s is up to date with these flags and data; reusing it (--retrain to train anew)", model_dir)
        return FINISHED_STEP
    log.info("reusing the trained model in %s (--retrain to train anew)", model_dir)
    return TRAINED
