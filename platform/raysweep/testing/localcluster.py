"""A Ray cluster of several nodes (and optionally an MLflow server) on one machine.

For trying the cluster path without a cloud, and for the tests that exercise it. Every node
is a `ray start --block` in its own session and process group, so `stop()` ends exactly
what `start()` began (never `ray stop`, which stops every Ray on the machine). Everything
binds 127.0.0.1; Ray token auth stays on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..ray_internals import NODE_ENV
from ..tracking.uri import server_env

_RAY = str(Path(sys.executable).with_name("ray"))


_issued: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now and not handed out before by this process. The kernel may
    give a just-closed ephemeral port again, and a node's ports are all chosen before it binds
    any: two of them once came out equal and `ray start` refused to start (a CI flake)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _issued:
            _issued.add(port)
            return port


def _wait_for(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (see {log}):\n{tail}")
        time.sleep(0.5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class LocalCluster:
    """`head_cpus` on the head node, one more node per entry of `worker_cpus`."""

    head_cpus: int = 2
    worker_cpus: list[int] = field(default_factory=lambda: [2])
    mlflow: bool = False
    workdir: Path | None = None

    def __post_init__(self):
        # Short paths: Ray's unix sockets live under the temp dir (108-byte limit).
        self._own_workdir = self.workdir is None
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.dashboard_port = free_port(), free_port()
        self.mlflow_port = free_port() if self.mlflow else None
        self._procs: list[tuple[str, subprocess.Popen]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def mlflow_url(self) -> str | None:
        return f"http://127.0.0.1:{self.mlflow_port}" if self.mlflow else None

    @staticmethod
    def _node_env() -> dict[str, str]:
        # The nodes' "image": this Python environment first on PATH, so a job's `python`
        # entrypoint runs with raysweep's dependencies, as on a cluster built from one image.
        bin_dir = str(Path(sys.executable).parent)
        return {**NODE_ENV, **os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token"}

    def env(self) -> dict[str, str]:
        """Environment for a client of this cluster (driver, `ray job submit`)."""
        env = {**self._node_env(), "RAY_ADDRESS": self.address}
        if self.mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_url
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**self._node_env(), **(env or {})},
            )
        self._procs.append((name, proc))
        return proc, log

    def _ray_node(self, name: str, args: list[str], cpus: int) -> None:
        # Every port a node opens is a free one of its own. With Ray's fixed defaults, a second
        # Ray on the machine (another node, a test session's, a user's) already holds e.g. the
        # dashboard agent's 52365: the node comes up, but its agent serves no HTTP, and job
        # submission answers "No available agent to submit job" for as long as it runs.
        agent_port = free_port()
        ports = {
            "dashboard-agent-listen-port": agent_port, "dashboard-agent-grpc-port": free_port(),
            "metrics-export-port": free_port(), "runtime-env-agent-port": free_port(),
            "node-manager-port": free_port(), "object-manager-port": free_port(),
        }
        # The head's dashboard and autoscaler metrics ports are set by environment only.
        metric_ports = {"DASHBOARD_METRIC_PORT": str(free_port()), "AUTOSCALER_METRIC_PORT": str(free_port())}
        proc, log = self._spawn(name, [_RAY, "start", "--block", "--node-ip-address=127.0.0.1",
                                       f"--num-cpus={cpus}", "--num-gpus=0", *args,
                                       *(f"--{key}={port}" for key, port in ports.items())], env=metric_ports)
        _wait_for(f"ray node {name}", lambda: "Ray runtime started" in log.read_text(errors="replace"),
                  proc, log, timeout=180)
        # "Ray runtime started" comes before the node's dashboard agent serves: jobs go
        # through the agent, so wait for it too.
        _wait_for(f"ray node {name}'s dashboard agent",
                  lambda: _http_ok(f"http://127.0.0.1:{agent_port}/api/local_raylet_healthz"), proc, log, timeout=180)

    def start(self) -> "LocalCluster":
        try:
            self._ray_node("head", [
                "--head", f"--port={self.port}", f"--temp-dir={self.workdir / 'ray'}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                "--ray-client-server-port", str(free_port()),
            ], self.head_cpus)
            for cpus in self.worker_cpus:
                self._add_worker(cpus)
            if self.mlflow:
                proc, log = self._spawn("mlflow", [
                    sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.mlflow_port),
                    "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                    "--artifacts-destination", str(self.workdir / "mlartifacts"), "--workers", "1",
                ], env=server_env(self._node_env()))
                _wait_for("mlflow server", lambda: _http_ok(f"{self.mlflow_url}/health"), proc, log, timeout=180)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_worker(self, cpus: int) -> None:
        workers = sum(name.startswith("worker") for name, _ in self._procs)
        self._ray_node(f"worker{workers + 1}", [f"--address={self.address}"], cpus)

    def add_worker(self, cpus: int) -> None:
        """Join one more node of `cpus` CPUs to the running cluster (a node joining a search)."""
        try:
            self._add_worker(cpus)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM each started process group, SIGKILL what is left after `grace_s`.

        A head's GCS, raylet and autoscaler monitor were still running 30 s after SIGTERM here
        (`ray stop` too sends SIGKILL after its grace period), so a longer grace only waits:
        10 s did, on every stop. The nodes' files go with the work directory."""
        for _, proc in reversed(self._procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the node's raylet, GCS and workers share its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)  # reaped, not left a zombie
            except subprocess.TimeoutExpired:
                pass
        self._procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
