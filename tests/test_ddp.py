"""Several processes: `accelerate launch` of the teacher, the index build and batch lookups with two CPU processes
over gloo, and the scripts that run in one process refusing a launch of several."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TEACHER_SMOKE

from alias_label.data.split import load_split
from alias_label.errors import UserError
from alias_label.io import read_json
from alias_label.paths import REPO_ROOT
from alias_label.search.retriever import load_dense


def free_port() -> int:
    """A port nobody listens on now: the launcher's fixed default collides with any other run on the machine."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failure(result: subprocess.CompletedProcess) -> str:
    """What a failed launch printed: every process's error lines, which the launcher's own report buries,
    then the ends of both streams."""
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("[rank") and "Error" in line]
    return "\n".join(errors[-20:]) + "\n" + result.stdout[-3000:] + result.stderr[-3000:]


def test_accelerate_launch_two_cpu_processes(home, tiny_model, swot_slice):
    # --multi_gpu selects the torchrun launcher; with no GPU, the processes train on CPU over gloo.
    # The default validation share leaves this 40-entity slice 32 train pairs, too few batches of 16
    # for two processes (transformers then refuses the dataloader); a share of 0.1 leaves 39.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts/train_alias_label.py"), "--data", str(swot_slice),
               "--base-model", str(tiny_model), *TEACHER_SMOKE, "--rounds", "1", "--epochs", "8", "--val-frac", "0.1"]
    env = {**os.environ, "ALIAS_LABEL_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, failure(result)

    record = read_json(home / "models/trained/alias_label_teacher/training_config.json")
    assert record["processes"] == 2
    # Each process knows its place from the start: the main one alone announces the run, and
    # alone clears and writes shared files such as the checkpoints' run record.
    log_lines = (home / "logs/train_alias_label.log").read_text().splitlines()
    announced = [line for line in log_lines if "teacher: base=" in line]
    assert len(announced) == 1 and "processes=2" in announced[0]
    # One validation line per epoch: the main process alone logs.
    epochs = [json.loads(line)["epoch"] for line in (home / "logs/metrics/teacher.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and len(epochs) == 8
    split = load_split()
    scores, ids = load_dense("teacher", "cpu", int8=False).searcher.labels_for(split.train["alias"], 5)
    assert ids.shape == (len(split.train), 5) and np.all(np.diff(scores, axis=1) <= 1e-6)
    gold = split.label_rows(split.train["label"])
    assert np.mean(ids[:, 0] == gold) > 0.5  # trained on these pairs, so most come back first


def test_timed_checkpoints_are_taken_by_every_process_at_the_same_steps(home, tiny_model, swot_slice):
    # With --save-steps 4 the trainer logs, and the processes agree on a timed checkpoint, every step;
    # --save-minutes 1e-9 makes one due at each, until --stop-after-steps 3 stops the run.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no",
               str(REPO_ROOT / "scripts/train_alias_label.py"), "--data", str(swot_slice),
               "--base-model", str(tiny_model), *TEACHER_SMOKE, "--rounds", "1", "--val-frac", "0.1",
               "--save-steps", "4", "--save-minutes", "1e-9", "--stop-after-steps", "3"]
    env = {**os.environ, "ALIAS_LABEL_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, failure(result)
    log_text = (home / "logs/train_alias_label.log").read_text()
    for step in (1, 2, 3):
        assert log_text.count(f"checkpoint at step {step}: 1e-09 minutes since the last one") == 1
    # Two checkpoints are kept; each process saved its random state in both.
    checkpoints = sorted((home / "models/trained/checkpoints/alias_label_teacher").glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-2", "checkpoint-3"]
    for checkpoint in checkpoints:
        assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()


REFUSAL = r"scripts/{}.py runs in one process, and 2 were launched: run it with python"


@pytest.mark.parametrize("script", ["prepare_data", "distill_model", "train_cross_encoder", "calibrate",
                                    "evaluate_student", "serve"])
def test_one_process_scripts_refuse_a_launch_of_several(home, monkeypatch, script):
    # torchrun, which accelerate launch runs, tells each process how many there are in WORLD_SIZE.
    module = importlib.import_module(script)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=REFUSAL.format(script)):
        module.main(module.parse_args([]))
    assert sorted(path.name for path in home.iterdir()) == ["logs"]  # refused before reading or writing data


def test_the_hardware_check_refuses_a_launch_of_several(home, monkeypatch, caplog):
    import gpu_check

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert gpu_check.main(gpu_check.parse_args([])) == 2
    assert "scripts/gpu_check.py runs in one process, and 2 were launched" in caplog.text
    assert not (home / "logs/gpu_check.json").exists()


def launch(script: str, flags: list[str], env: dict, processes: int = 2) -> subprocess.CompletedProcess:
    """``script`` under accelerate launch with ``processes`` CPU processes over gloo, or plainly with 1."""
    command = [sys.executable, str(REPO_ROOT / "scripts" / script), *flags]
    if processes > 1:
        command[1:1] = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                        "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
                        "--dynamo_backend", "no"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, failure(result)
    return result


def index_contents(index_dir) -> dict:
    """Every row vector and the sidecar of each index in a folder."""
    import faiss

    contents = {}
    for path in sorted(index_dir.glob("*.index")):
        index = faiss.read_index(str(path))
        contents[path.name] = (index.reconstruct_n(0, index.ntotal), read_json(path.with_name(path.name + ".json")))
    return contents


def test_build_index_and_batch_lookups_across_two_processes_equal_one(home, pipeline_home, tmp_path):
    for folder in ("data", "models", "faiss"):
        shutil.copytree(pipeline_home / folder, home / folder)
    # One thread a process in both runs, so the arithmetic is the same and the results can be compared exactly.
    env = {**os.environ, "ALIAS_LABEL_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    small_chunks = ["--model", "teacher", "--chunk-rows", "48", "--batch-size", "16", "--device", "cpu"]
    runs = {"single": 1, "files": 2, "memory": 2}
    for name, processes in runs.items():
        shards = "memory" if name == "memory" else "files"
        result = launch("build_index.py", [*small_chunks, "--index-dir", str(tmp_path / name), "--shards", shards],
                        env, processes)
        told = "1 process" if processes == 1 else f"2 processes, gathered through {shards}"
        assert result.stdout.count(f"texts encoded by {told}") == 2
    single = index_contents(tmp_path / "single")
    assert set(single) == {"labels.index", "aliases.index"} and len(single["labels.index"][0]) > 2 * 48
    for name in ("files", "memory"):
        contents = index_contents(tmp_path / name)
        assert set(contents) == set(single)
        for file, (vectors, sidecar) in contents.items():
            assert np.array_equal(vectors, single[file][0]), (name, file)
            assert sidecar == single[file][1], (name, file)
        assert not list((tmp_path / name).glob(".*")), "shard files left behind"

    names = load_split().pairs("val")["alias"].tolist()[:21]
    names[3:3] = ["", "   "]
    queries = pd.DataFrame({"name": names + ["=cmd|' /C calc'!A0"]})
    queries.to_csv(tmp_path / "queries.csv", index=False)
    outputs = {}
    for name, processes in (("single", 1), ("multi", 2)):
        outputs[name] = tmp_path / f"{name}.csv"
        flags = ["--batch", str(tmp_path / "queries.csv"), "--query-col", "name", "--batch-size", "4", "-k", "3",
                 "--output", str(outputs[name])]
        result = launch("test_lookup.py", flags, env, processes)
        assert f"{processes} process" in result.stdout
    table = pd.read_csv(outputs["single"], keep_default_na=False)
    assert table["input_row"].drop_duplicates().tolist() == list(range(len(queries)))
    assert outputs["multi"].read_text() == outputs["single"].read_text()
