"""A trained model folder and the indexes it names: where they are, and the one check that they exist.

A model folder is a bundle: the model, its training record, its calibration, and ``indexes.json``,
which names its two FAISS indexes relative to the folder. Each index's sidecar holds the id -> text
table, so copying ``models/`` and ``faiss/`` to another machine keeps every lookup working.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from alias_label.data.split import Split
from alias_label.errors import UserError
from alias_label.index.dense import KeyedIndex, build_index, load_index, save_index, spec_from_args
from alias_label.index.tables import Candidates, index_paths, index_table_meta, index_vectors
from alias_label.io import read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.paths import paths

ROLES = ("teacher", "student")
# Which script builds each kind of model and its indexes; error messages name it.
FIX_COMMANDS = {"teacher": "python scripts/train_alias_label.py", "student": "python scripts/distill_model.py"}
INDEXES_FILE = "indexes.json"


def model_folder(model: str | Path) -> Path:
    """``teacher`` and ``student`` name the default folders under models/trained/; anything else is a folder."""
    if str(model) in ROLES:
        return paths().teacher if str(model) == "teacher" else paths().student
    if not str(model).strip():
        raise UserError("the model is blank: name teacher, student or a trained model's folder")
    return Path(model).expanduser().resolve()


def model_name(model_dir: Path) -> str:
    """How a command names this model: its role for a default folder, else its path."""
    for role in ROLES:
        if Path(model_dir).resolve() == model_folder(role).resolve():
            return role
    return str(model_dir)


def fix_command(model_dir: Path, role: str) -> str:
    """The command that (re)builds this model and its indexes."""
    command = FIX_COMMANDS.get(role, FIX_COMMANDS["teacher"])
    return command if model_name(model_dir) in ROLES else f"{command} --output {model_dir}"


def role_hint(model_dir: Path) -> str:
    """A hint for a folder that does not exist and is named like a role but for its case ("Teacher")."""
    name = model_dir.name.casefold()
    return f" Did you mean {name!r}?" if name in ROLES and not model_dir.exists() else ""


def require_trained(model_dir: Path, role: str | None = None) -> dict:
    """The model's training record; a clear error with the command that builds it when there is none.

    ``role`` only shapes that command, for a folder that holds no record to read it from; by default
    the default student folder is a student's, any other a teacher's.
    """
    role = role or ("student" if model_name(model_dir) == "student" else "teacher")
    config_path = Path(model_dir) / "training_config.json"
    if not config_path.exists():
        raise UserError(f"no trained model at {model_dir}.{role_hint(Path(model_dir))} "
                        f"Build it with: {fix_command(model_dir, role)}")
    return read_json(config_path)


def record_indexes(model_dir: Path, targets: dict[str, Path]) -> None:
    """Write ``indexes.json``: where this model's indexes are, relative to its folder."""
    model_dir = Path(model_dir)
    write_json(model_dir / INDEXES_FILE, {kind: os.path.relpath(Path(path).resolve(), model_dir.resolve())
                                          for kind, path in targets.items()})


def index_files(model_dir: Path, role: str) -> dict[str, Path]:
    """The paths of this model's label and alias indexes, from its ``indexes.json``."""
    record = Path(model_dir) / INDEXES_FILE
    if not record.exists():
        raise UserError(f"{model_dir} names no indexes ({INDEXES_FILE} is missing). "
                        f"Build them with: {fix_command(model_dir, role)}")
    return {kind: (Path(model_dir) / relative).resolve() for kind, relative in read_json(record).items()}


def load_bundle_indexes(model_dir: Path, role: str) -> tuple[object, object, Candidates]:
    """The model's label index, alias index and candidate tables, each checked against the model."""
    fix = fix_command(model_dir, role)
    fingerprint = model_fingerprint(model_dir)
    loaded = {}
    for kind, path in index_files(model_dir, role).items():
        index, meta = load_index(path, fix)
        if meta.get("model_fingerprint") != fingerprint:
            raise UserError(f"{path} was built by another model than {model_dir}. Rebuild it with: {fix}")
        loaded[kind] = (KeyedIndex(index, np.array(meta["label_rows"])) if "label_rows" in meta else index, meta)
    (label_index, label_meta), (alias_index, alias_meta) = loaded["labels"], loaded["aliases"]
    if label_meta["data_fingerprint"] != alias_meta["data_fingerprint"]:
        raise UserError(f"the label and alias indexes of {model_dir} were built from different data. "
                        f"Rebuild them with: {fix}")
    return label_index, alias_index, Candidates.from_sidecars(label_meta, alias_meta)


def write_indexes(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path, model_name: str,
                  index_dir: Path | None = None, index_args=None) -> dict[str, Path]:
    """Write labels(.|_distilled).index and aliases(...).index with self-describing sidecars, and name
    them in the model folder's ``indexes.json``.

    ``index_args`` (the --index flags) picks the index type and the label keys; the index's
    parameters scale with each table.
    """
    keys = index_args.label_keys if index_args else "transliterated"
    targets = index_paths(model_name, index_dir)
    for kind, target in targets.items():
        vectors = index_vectors(embeddings, kind, keys)
        spec = spec_from_args(index_args, *vectors.shape) if index_args else None
        save_index(build_index(vectors, spec), target, index_table_meta(split, kind, model_dir, model_name, keys))
    record_indexes(model_dir, targets)
    return targets
