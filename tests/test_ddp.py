"""Multi-process teacher training: `accelerate launch` with two CPU processes over gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
from conftest import TEACHER_SMOKE

from alias_label.data.split import load_split
from alias_label.io import read_json
from alias_label.paths import REPO_ROOT
from alias_label.search.retriever import load_dense


def free_port() -> int:
    """A port nobody listens on now: the launcher's fixed default collides with any other run on the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_accelerate_launch_two_cpu_processes(home, tiny_model, swot_slice):
    # --multi_gpu selects the torchrun launcher; with no GPU, the processes train on CPU over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts/train_alias_label.py"), "--data", str(swot_slice),
               "--base-model", str(tiny_model), *TEACHER_SMOKE, "--rounds", "1", "--epochs", "8"]
    env = {**os.environ, "ALIAS_LABEL_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    record = read_json(home / "models/trained/alias_label_teacher/training_config.json")
    assert record["processes"] == 2
    # One validation line per epoch: the main process alone logs.
    epochs = [json.loads(line)["epoch"] for line in (home / "logs/metrics/teacher.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and len(epochs) == 8
    split = load_split()
    scores, ids = load_dense("teacher", "cpu", int8=False).searcher.labels_for(split.train["alias"], 5)
    assert ids.shape == (len(split.train), 5) and np.all(np.diff(scores, axis=1) <= 1e-6)
    gold = split.label_rows(split.train["label"])
    assert np.mean(ids[:, 0] == gold) > 0.5  # trained on these pairs, so most come back first
