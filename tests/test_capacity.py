"""capacity.py: trials no node can hold are refused or waited for; concurrency follows the cluster."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest
import yaml
from mlflow import MlflowClient
from ray.core.generated import autoscaler_pb2

from raysweep.capacity import Need
from raysweep.cli import main
from raysweep.testing import LocalCluster
from tests.conftest import ROOT, fresh_store, make_raw

FAST = {"max_epochs": 1, "search.num_samples": 2, "scheduler.type": "fifo"}


@pytest.mark.parametrize("nodes,need,trials", [
    ([{"CPU": 4}], Need(1, 1, 0, False), 4),
    ([{"CPU": 4}], Need(1, 1, 1, False), 0),  # a GPU no node has
    ([{"CPU": 4, "GPU": 2}], Need(1, 1, 0.5, False), 4),  # GPU shares
    ([{"CPU": 2}, {"CPU": 2}], Need(1, 3, 0, False), 0),  # 4 CPUs, none of them 3 on one node
    ([{"CPU": 2}, {"CPU": 2}], Need(2, 2, 0, True), 1),  # a worker group spreads over nodes
    ([{"CPU": 3}, {"CPU": 2}], Need(3, 1, 0, True), 1),
    ([{"CPU": 4}], Need(2, 2, 0, True, reserve_cpus=1), 0),  # a CPU left to Ray Data
    ([{"CPU": 4}], Need(1, 1, 0, False, reserve_cpus=1), 3),
])
def test_trials_a_cluster_holds_at_once(nodes, need, trials):
    assert need.trials_on(nodes) == trials


def _search(tmp_path, capsys, uri, *cmd, **changes):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(make_raw(**{**FAST, **changes})))
    capsys.readouterr()
    code = main([*cmd, str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "results"), "--tracking-uri", uri])
    return code, capsys.readouterr()


@pytest.mark.parametrize("cmd,changes,line", [
    (["search"], {"resources.gpus_per_worker": 1},
     "resources.gpus_per_worker: a trial needs 1 worker(s) x 1 CPU + 1 GPU; no node has a GPU (this cluster: 1 x 4 CPU)"),
    (["search"], {"resources.cpus_per_worker": 6},
     "resources.cpus_per_worker: a trial needs 1 worker(s) x 6 CPU; the largest node has 4 CPU (this cluster: 1 x 4 CPU)"),
    (["search"], {"resources.workers_per_trial": 3, "resources.cpus_per_worker": 2},
     "resources.workers_per_trial: a trial needs 3 worker(s) x 2 CPU; this cluster holds 2 such worker(s) at most"),
    (["train"], {"resources.workers_per_trial": 2, "resources.gpus_per_worker": 1},
     "resources.gpus_per_worker: a trial needs 2 worker(s) x 1 CPU + 1 GPU; no node has a GPU"),
])
def test_a_fixed_cluster_that_can_never_hold_a_trial_is_refused_before_anything_runs(
        ray_session, tmp_path, capsys, tracking_uri, cmd, changes, line):
    code, out = _search(tmp_path, capsys, tracking_uri, *cmd, **{"name": "too-big", **changes})
    assert code == 2 and out.err.count("\n") == 1 and line in out.err, out.err
    assert "Traceback" not in out.err + out.out
    assert not MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()], "attributes.run_name LIKE '%too-big%'")
    assert not (tmp_path / "results" / "too-big").exists()


@contextlib.contextmanager
def autoscaler_announces(*groups: tuple[dict, int]):
    """The session's GCS holds an autoscaler's cluster config with these (resources, max count)
    node types, as a running autoscaler writes it (the autoscaler itself cannot run here: its
    local test provider is not in Ray's wheel); removed after."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY as KEY, GCS_AUTOSCALER_STATE_NAMESPACE as NS
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    config = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(name=f"type{i}", resources=res, min_count=0, max_count=count)
        for i, (res, count) in enumerate(groups)])
    _internal_kv_put(KEY, config.SerializeToString(), overwrite=True, namespace=NS)
    try:
        yield
    finally:
        _internal_kv_del(KEY, namespace=NS)


def test_an_autoscaling_cluster_waits_for_its_nodes_then_fails_in_one_line(ray_session, tmp_path, capsys, tracking_uri):
    with autoscaler_announces(({"CPU": 8, "GPU": 1}, 2)):
        code, out = _search(tmp_path, capsys, tracking_uri, "search",
                            **{"name": "no-gpu-yet", "resources.gpus_per_worker": 1, "resources.scale_wait_s": 3})
    assert code == 1, out.err
    assert out.out.count("waiting for the autoscaler: resources.gpus_per_worker") == 1, out.out
    assert "no trial could start within resources.scale_wait_s (3 s): resources.gpus_per_worker" in out.err, out.err
    assert "Traceback" not in out.err + out.out
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("no-gpu-yet").experiment_id])
    assert parent.info.status == "FAILED" and "scale_wait_s" in parent.data.tags["raysweep.error"]


def test_an_autoscaling_cluster_too_small_at_its_largest_is_refused(ray_session, tmp_path, capsys, tracking_uri):
    with autoscaler_announces(({"CPU": 2}, 10)):
        code, out = _search(tmp_path, capsys, tracking_uri, "search", **{"name": "never", "resources.gpus_per_worker": 1})
    assert code == 2 and out.err.count("\n") == 1, out.err
    assert "resources.gpus_per_worker" in out.err and "this cluster at its autoscaler's largest" in out.err


@pytest.mark.cluster  # its own LocalCluster: one 1-CPU node, then a second joins
def test_concurrency_follows_the_cluster_as_nodes_join(tmp_path, mlflow_template):
    raw = make_raw(**{"name": "grows", "task": "tests.user_tasks:SlowDigits", "max_epochs": 4,
                      "search.num_samples": 6, "search.max_concurrent": None, "scheduler.type": "fifo",
                      "fixed": {"hidden": 16, "epoch_sleep_s": 2.5}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    db = tmp_path / "mlflow.db"
    fresh_store(db, mlflow_template)
    with LocalCluster(head_cpus=1, worker_cpus=[]) as cluster:
        driver = subprocess.Popen(
            [sys.executable, "-m", "raysweep.cli", "search", str(tmp_path / "spec.yaml"), "--storage",
             str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}"],
            cwd=ROOT, env=cluster.env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while not (tmp_path / "results" / "grows").exists():  # the search has started its first trial
                assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read().decode()[-3000:]
                time.sleep(0.5)
            cluster.add_worker(2)  # one node more: three trials fit now
            assert driver.wait(timeout=400) == 0, driver.stderr.read().decode()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    client = MlflowClient(f"sqlite:///{db}")
    # Each trial's epochs, first to last report: trials that ran at once interleave them.
    spans = []
    for run in client.search_runs(["1"], max_results=100):
        if run.data.tags.get("raysweep.kind") == "trial":
            stamps = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, "val_loss"))
            spans.append((stamps[0], stamps[-1]))
    assert len(spans) == 6
    overlaps = max(sum(first <= t <= last for first, last in spans) for t, _ in spans)
    # With the limit fixed at the start: one at a time throughout. (3 at once, what 1 + 2 CPUs
    # hold, needs the new node's trial processes started: seconds each on 2 busy cores.)
    assert overlaps >= 2, spans
