"""Shared fixtures: one real local Ray for the whole session, a fresh SQLite MLflow per test."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from raysweep.testing import free_port
from raysweep.tracking.uri import server_env

ROOT = Path(__file__).resolve().parents[1]
# User-task tests import `examples.*` and `tests.*` modules; Ray hands the driver's
# sys.path to its workers, so the trials find them too.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The S3 tests' local server (moto) accepts any credentials; Ray's workers must already hold
# some when the session's Ray starts (they inherit its environment), and must not look for
# an EC2 instance role (no network here). A developer's own AWS settings are kept.
for _key, _value in {"AWS_ACCESS_KEY_ID": "raysweep-test", "AWS_SECRET_ACCESS_KEY": "raysweep-test",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _value)

BASE_SPEC = {
    "name": "test-search",
    "task": "digits_mlp",
    "metric": "val_loss",
    "mode": "min",
    "max_epochs": 6,
    "seed": 0,
    "search": {"algorithm": "tpe", "num_samples": 8, "max_concurrent": 2},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 3},
    "space": {
        "lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-1},
        "batch_size": {"type": "choice", "values": [64, 128]},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
    },
    "fixed": {"hidden": 32},
}


def make_raw(**changes) -> dict:
    """BASE_SPEC with dotted-key changes: make_raw(**{"search.num_samples": 4})."""
    raw = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.fixture(scope="session", autouse=True)
def _artifacts_outside_the_checkout(tmp_path_factory):
    """MLflow puts a SQLite store's artifacts under ./mlruns of the working directory, the
    checkout's for the tests: the checkpoints, models and views of every test's search, 700 MB
    after a few runs. MLflow's server hands its artifact root to the stores it makes in this
    variable (MLflow 3.17, `tracking/_tracking_service/utils.py`); the tests' stores, and the
    commands they start (which inherit it), take it too, and pytest removes old temp dirs."""
    root = tmp_path_factory.mktemp("mlruns")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(root))
        yield root


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the session. 4 logical CPUs on a 2-core machine: trials are tiny.

    The dashboard stays on: Train V2 needs it to release finished trials' resources.
    """
    import ray

    from raysweep.ray_internals import start_local_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # As raysweep starts its own (its node settings); a new instance even if a `ray start`
    # cluster runs on this machine.
    start_local_ray(num_cpus=4, logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 (moto in server mode) on 127.0.0.1; yields a function bucket_path -> storage URI."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        client.create_bucket(Bucket=S3_BUCKET)
        # The endpoint rides in the URI (pyarrow's S3 options), as it would for MinIO or Ceph.
        yield lambda path: f"s3://{S3_BUCKET}/{path}?endpoint_override=127.0.0.1:{port}&scheme=http", client
    finally:
        server.stop()


S3_BUCKET = "raysweep-results"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty SQLite MLflow store, made once, as raysweep makes a new store (from MLflow's
    schema as SQL, tracking/schema.py), so every test's store is one: copying it is quicker
    still than running the schema's SQL again."""
    from raysweep.tracking.schema import create_store

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    assert create_store(path)
    return path


def fresh_store(path: Path, template: Path) -> str:
    """A new, empty SQLite MLflow store at `path` (a copy of the session's template); its URI."""
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def tracking_uri(tmp_path, mlflow_template) -> str:
    return fresh_store(tmp_path / "mlflow.db", mlflow_template)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, artifacts on disk), as a team would
    run it. It can be stopped and started again on the same port and database (an outage)."""

    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout_s: float = 120) -> str:
        import subprocess
        import time
        import urllib.request

        with open(self.root / "server.log", "a") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=server_env(),
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self.url
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (kill: SIGKILL, a crash) to its own process group only, uvicorn workers
        included: never kill by name."""
        import signal
        import subprocess

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A session's `mlflow server` on 127.0.0.1; stopped after."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server.start()
    finally:
        server.stop()


# --- Test tiers (docs/contributing.md) ----------------------------------------------------
# Every test is in exactly one tier: the fast tier (no marker) starts nothing; `integration`
# starts a real Ray and/or a real `mlflow server` or runs Ray trials; `cluster` starts a
# multi-node `ray start` cluster or submits jobs to one; `benchmark` is a benchmark smoke run.
# Markers are registered in pyproject.toml (--strict-markers) and mostly applied here.

# Fixtures that start Ray or an MLflow server (module_server: test_spool.py's outage server).
INTEGRATION_FIXTURES = {"ray_session", "mlflow_server", "module_server"}
# Fixtures that start a multi-node LocalCluster.
CLUSTER_FIXTURES = {"two_node_cluster"}
TIERS = ("integration", "cluster", "benchmark")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if item.path.name.startswith("test_benchmark_"):
            item.add_marker(pytest.mark.benchmark)
        elif names & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        # A fixture's closure counts (e.g. test_search.py's `searched` uses ray_session).
        if names & INTEGRATION_FIXTURES and not any(item.get_closest_marker(m) for m in ("cluster", "benchmark")):
            item.add_marker(pytest.mark.integration)
    # The shared two-node cluster's users run last, one after the other: the cluster (a session
    # fixture) is then up only while they run, not beside every test in between.
    items.sort(key=lambda item: bool(CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ()))))


@pytest.fixture(scope="session")
def two_node_cluster():
    """One two-node `ray start` cluster (2 + 2 CPUs) with an `mlflow server`, shared by
    test_cluster.py and test_jobs.py (each started its own). Tests that need a cluster of
    another shape (test_capacity.py's growing one) start their own."""
    from raysweep.testing import LocalCluster

    with LocalCluster(head_cpus=2, worker_cpus=[2], mlflow=True) as cluster:
        yield cluster


class TierError(RuntimeError):
    pass


def _refuse(what: str, nodeid: str):
    def refuse(*args, **kwargs):
        raise TierError(f"{nodeid} {what} but has no tier marker: use the fixture that does it "
                        "(ray_session, mlflow_server, two_node_cluster) or mark it integration/cluster "
                        "(docs/contributing.md)")
    return refuse


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
    """A test with no tier marker must start nothing. Starting Ray (ray.init, raysweep's
    ensure_ray, even with the session's Ray already up), an `mlflow server`, a LocalCluster,
    `ray start` or `ray job` raises TierError; a child process that starts its own Ray (its
    session directory appears under the RAY_TMPDIR given here) fails the test afterwards."""
    if any(request.node.get_closest_marker(m) for m in TIERS):
        yield
        return
    import subprocess
    import tempfile

    import ray
    import ray._private.worker

    from raysweep import runsetup
    from raysweep.testing import LocalCluster

    nodeid = request.node.nodeid
    monkeypatch.setattr(ray, "init", _refuse("starts Ray", nodeid))
    monkeypatch.setattr(ray._private.worker, "init", _refuse("starts Ray", nodeid))
    monkeypatch.setattr(runsetup, "ensure_ray", _refuse("uses Ray", nodeid))
    monkeypatch.setattr(MlflowServer, "start", _refuse("starts an mlflow server", nodeid))
    monkeypatch.setattr(LocalCluster, "start", _refuse("starts a LocalCluster", nodeid))

    class GuardedPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            words = [os.path.basename(str(a)) for a in ([args] if isinstance(args, (str, bytes)) else args)]
            for pair in zip(words, words[1:]):
                if pair in {("mlflow", "server"), ("mlflow", "ui"), ("ray", "start"), ("ray", "job")}:
                    _refuse(f"runs `{' '.join(pair)}`", nodeid)()
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    # A child `raysweep search` would join a Ray named in RAY_ADDRESS (distributed.py sets it
    # in-process once a Ray Train trial ran) or start its own under RAY_TMPDIR: neither here.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_tmp = tempfile.mkdtemp(prefix="rs-tier-", dir="/tmp")  # short: Ray's socket paths
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    try:
        yield
        started = list(Path(ray_tmp).glob("ray/session_*"))
        if started:
            pytest.fail(f"{nodeid} started Ray in a child process ({started[0]}) but has no tier marker: "
                        "mark it integration (docs/contributing.md)", pytrace=False)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


class WebServer:
    """A web server on 127.0.0.1 that is not a usable MLflow: `walled` answers /health and
    refuses everything else (401, an MLflow behind an auth proxy); otherwise nothing is found
    (404, a web server that is not MLflow's, the Ray dashboard's port)."""

    def __init__(self, walled: bool):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                code = (200 if self.path == "/health" else 401) if walled else 404
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"<html>no</html>")

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # Polled for shutdown every 50 ms, not 0.5 s: each test's teardown waited for the poll.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web_server(request):
    """A WebServer: parametrize it indirectly with "walled" or "not-mlflow"."""
    server = WebServer(walled=request.param == "walled")
    yield server
    server.stop()
