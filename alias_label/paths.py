"""The repo's artifact folders, resolved from this file's location or from ``ALIAS_LABEL_HOME``.

Paths never depend on the working directory, so ``python scripts/X.py`` works from any folder.
Setting ``ALIAS_LABEL_HOME`` moves every artifact folder (data/, models/, faiss/, logs/) under
another root, which is how tests and users with a bigger disk keep runs apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def processed(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models" / "trained"

    @property
    def base_models(self) -> Path:
        return self.root / "models" / "base"

    @property
    def faiss(self) -> Path:
        return self.root / "faiss"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.root / "logs" / "metrics"

    @property
    def teacher(self) -> Path:
        return self.models / "alias_label_teacher"

    @property
    def student(self) -> Path:
        return self.models / "alias_label_student"

    @property
    def default_data(self) -> Path:
        return self.raw / "institutions.parquet"


def paths() -> Paths:
    """Artifact folders, read at call time so ``ALIAS_LABEL_HOME`` set by a test applies."""
    return Paths(Path(os.environ.get("ALIAS_LABEL_HOME", REPO_ROOT)).resolve())


def under_home(path: str | Path) -> str:
    """``path`` relative to the artifact root when it lies under it, else as given: a record that names
    an artifact of one run (a student's cross-encoder base is its teacher's) then reads the same on
    any machine."""
    if not Path(path).is_absolute():
        return str(path)  # a model name or a path already relative
    try:
        return str(Path(path).resolve().relative_to(paths().root))
    except ValueError:
        return str(path)
