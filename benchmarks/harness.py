"""What every benchmark shares: the machine it ran on, percentiles, and the JSON it leaves behind."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from alias_label.io import write_json
from alias_label.paths import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def percentiles(milliseconds: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(milliseconds, 50)), "p95_ms": float(np.percentile(milliseconds, 95))}


def save_results(name: str, figures: dict, results_dir: Path | None = None) -> Path:
    """benchmarks/results/<name>.json: the exact command, the machine, then the figures."""
    target = Path(results_dir or RESULTS) / f"{name}.json"
    write_json(target, {"benchmark": name, "command": " ".join(["python", *sys.argv]), "machine": machine(), **figures})
    print(f"wrote {target}")
    return target
