"""A Ray cluster of two nodes on this machine (`ray start --head` + `ray start --address`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import ROOT, fresh_store, make_raw


@pytest.fixture(scope="module")
def two_nodes(two_node_cluster):
    """conftest's session cluster (2 + 2 CPUs, shared with test_jobs.py; its mlflow server is not used here)."""
    return two_node_cluster


def test_a_two_worker_trial_puts_one_worker_on_each_node(two_nodes, tmp_path, mlflow_template):
    raw = make_raw(**{
        "name": "two-nodes", "task": "tests.user_tasks:NodeProbe", "max_epochs": 3,
        "search.num_samples": 1, "scheduler.type": "fifo", "space": {"lr": {"type": "uniform", "low": 0.01, "high": 0.02}},
        # Two CPUs per worker and per node: the group can only be placed one worker per node.
        "resources.workers_per_trial": 2, "resources.cpus_per_worker": 2,
        "fixed": {"out_dir": str(tmp_path), "batch_size": 64, "hidden": 32},
    })
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "raysweep.cli", "search", str(spec), "--storage", str(tmp_path / "results"),
         "--tracking-uri", fresh_store(tmp_path / "mlflow.db", mlflow_template), "--summary-json", str(summary)],
        cwd=ROOT, env=two_nodes.env(), capture_output=True, text=True, timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    nodes = {torch.load(tmp_path / f"node-rank{r}.pt", weights_only=True)["node"] for r in (0, 1)}
    assert len(nodes) == 2  # ranks 0 and 1 on different nodes
    result = json.loads(summary.read_text())
    assert result["trials"][0]["epochs"] == 3
    assert result["best"]["metrics"]["val_accuracy"] > 0.7  # gloo across nodes, still learning
