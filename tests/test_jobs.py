"""`ray job submit` of jobs/search.py and jobs/train.py to a two-node cluster, MLflow on a server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def cluster(two_node_cluster):
    """conftest's session cluster (2 + 2 CPUs and an mlflow server, shared with test_cluster.py)."""
    return two_node_cluster


def _submit(cluster, tmp_path, entrypoint: list[str], name: str) -> tuple[str, str]:
    """Submit as a user would, wait for the end; (final status, job logs)."""
    submitted = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard_url, "--submission-id", name, "--no-wait",
         "--working-dir", str(ROOT), "--runtime-env", str(ROOT / "cluster/runtime_env.yaml"), "--", *entrypoint],
        env=cluster.env(), capture_output=True, text=True, timeout=300,
    )
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    return _wait(cluster, name)


def _raysweep_submit(cluster, *flags, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raysweep.cli", "submit", "search_spaces/digits_mlp.yaml", "--address",
         cluster.dashboard_url, *flags], cwd=ROOT, env={**cluster.env(), **(env or {})},
        capture_output=True, text=True, timeout=600,
    )


def _wait(cluster, name: str) -> tuple[str, str]:
    """Wait for job `name` to end: (final status, its logs). Through Ray's Job SDK (HTTP, with the
    cluster's token): a `ray job status` process every few seconds cost a second of CPU each,
    which the job's own processes on the same 2 cores waited for."""
    from ray.job_submission import JobSubmissionClient

    from raysweep.submit import token_source

    env = cluster.env()
    source = token_source(env)  # where `ray job submit` takes it from
    token = env[source] if source == "RAY_AUTH_TOKEN" else Path(source).expanduser().read_text().strip()
    client = JobSubmissionClient(cluster.dashboard_url, headers={"authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 420
    status = client.get_job_status(name)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get_job_status(name)
    return (status.value if status.is_terminal() else "", client.get_job_logs(name))


def _mlflow(cluster, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{cluster.mlflow_url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _runs(cluster, experiment: str) -> list[dict]:
    with urllib.request.urlopen(
        f"{cluster.mlflow_url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}", timeout=30
    ) as resp:
        experiment_id = json.loads(resp.read())["experiment"]["experiment_id"]
    return _mlflow(cluster, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100}).get("runs", [])


def _history(cluster, run_id: str, metric: str) -> list[int]:
    with urllib.request.urlopen(
        f"{cluster.mlflow_url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={metric}", timeout=30
    ) as resp:
        return sorted(int(m["step"]) for m in json.loads(resp.read())["metrics"])


def test_submitted_search_and_train_land_in_the_team_mlflow(cluster, tmp_path):
    storage = str(tmp_path / "shared")  # one machine: a local path is shared storage
    flags = ["--tracking-uri", cluster.mlflow_url, "--storage", storage, "--set", "max_epochs=3"]
    # The search's trials run in-process (concurrency from the two nodes' CPUs); the train job
    # below is the worker group on the cluster (a Ray Train trial costs ~15 s to start here).
    status, logs = _submit(cluster, tmp_path, ["python", "jobs/search.py", "search_spaces/digits_mlp.yaml",
                                               "--samples", "3", "--name", "job-search", *flags], "rs-search")
    assert status == "SUCCEEDED", logs[-3000:]
    assert "trials 3/3 done" in logs  # the same progress display, in `ray job logs`
    runs = _runs(cluster, "job-search")
    kinds = [{t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("raysweep.kind") for r in runs]
    assert kinds.count("search") == 1 and kinds.count("trial") == 3
    for run, kind in zip(runs, kinds):
        if kind == "trial":
            epochs = int(next(m["value"] for m in run["data"]["metrics"] if m["key"] == "epoch"))
            assert _history(cluster, run["info"]["run_id"], "val_loss") == list(range(1, epochs + 1))

    # `raysweep submit --train` builds the same call for jobs/train.py; --no-wait returns at once.
    proc = _raysweep_submit(cluster, "--train", "--no-wait", "--submission-id", "rs-train", "--set", "lr=0.003",
                            "--set", "name=job-train", "--set", "resources.workers_per_trial=2", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "jobs/train.py search_spaces/digits_mlp.yaml" in proc.stdout  # the command it ran, shown
    status, logs = _wait(cluster, "rs-train")
    assert status == "SUCCEEDED", logs[-3000:]
    (run,) = _runs(cluster, "job-train")
    assert _history(cluster, run["info"]["run_id"], "val_accuracy") == [1, 2, 3]


def test_a_failing_job_ends_failed_with_the_one_line_error(cluster, tmp_path):
    status, logs = _submit(cluster, tmp_path, ["python", "jobs/search.py", "search_spaces/digits_mlp.yaml",
                                               "--set", "task=tests.broken_task:train"], "rs-bad")
    assert status == "FAILED"
    assert "raysweep: error: task: importing 'tests.broken_task' failed" in logs
    assert "Traceback" not in logs
    # `raysweep submit` follows the logs and exits non-zero with the job.
    proc = _raysweep_submit(cluster, "--submission-id", "rs-bad-followed", "--set", "task=tests.broken_task:train")
    assert proc.returncode == 1
    assert "raysweep: error: task: importing 'tests.broken_task' failed" in proc.stdout


def test_submit_refuses_a_wrong_token_in_one_line(cluster):
    proc = _raysweep_submit(cluster, "--no-wait", env={"RAY_AUTH_TOKEN": "not-the-cluster-token"})
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"raysweep: error: --address {cluster.dashboard_url}: the cluster refused")
    assert proc.stderr.count("\n") == 1
