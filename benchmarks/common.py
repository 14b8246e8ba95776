"""What every benchmark records beside its figures: the machine, and the JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from pathlib import Path


def machine(**extra) -> dict:
    import ray
    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "torch": torch.__version__, "ray": ray.__version__, **extra}


def write_json(path: str, out: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces a run of `script` with these arguments."""
    import shlex

    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", f"benchmarks/{script}", *args])


# -- a raysweep task's training function outside Ray (standalone Optuna, a Ray Train worker)


def local_context(max_epochs: int, seed: int = 0, on_report=None):
    """raysweep's `LocalContext`: a task's `train(config, ctx)` in this process, with no Ray.

    Reports are kept in `ctx.reports` (metrics as Tune would get them, cost meter included) and
    passed to `on_report(metrics)` if given; nothing is checkpointed (no state dict copied per
    epoch: nothing would read it).
    """
    from raysweep.context import LocalContext

    return LocalContext(max_epochs=max_epochs, seed=seed, checkpoints=False, meter={"cpus_per_worker": 1},
                        on_report=None if on_report is None else (lambda metrics, _: on_report(metrics)))


def train_task_in_process(task: str, params: dict, *, max_epochs: int, seed: int = 0, on_report=None) -> list[dict]:
    """Train raysweep's task `task` (a built-in name or "module:object") once on `params`; its
    per-epoch reports. The same code a raysweep trial runs, without Tune around it."""
    from raysweep.tasks import resolve_task

    ctx = local_context(max_epochs, seed, on_report)
    resolve_task(task).train(params, ctx)
    return ctx.reports


# -- timing and memory


def train_seconds(reports) -> float:
    """Training compute in a list of epoch reports (or trial results' last metrics): the sum of
    `epoch_time_s`, training plus validation as the fit loop times it."""
    return sum(r["epoch_time_s"] for r in reports)


class PeakRSS:
    """This process's resident memory, sampled in a thread while the block runs, and the
    kernel's own lifetime peak (`ru_maxrss`, which includes anything before the block)."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples_mib: list[float] = []
        # RSS counts the pages of shared memory a process touched (Ray's object store is
        # mapped into every worker) beside its private ones: the peak of each, apart.
        self.peak_private_mib = 0.0
        self.peak_shared_mib = 0.0

    @staticmethod
    def parts_mib() -> tuple[float, float]:
        """(private: RssAnon, shared: RssFile + RssShmem) from /proc/self/status."""
        kib = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                    key, value = line.split(":")
                    kib[key] = int(value.split()[0])
        return kib.get("RssAnon", 0) / 1024, (kib.get("RssFile", 0) + kib.get("RssShmem", 0)) / 1024

    @staticmethod
    def current_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self.start_mib = self.current_mib()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self.samples_mib.append(self.current_mib())
            private, shared = self.parts_mib()
            self.peak_private_mib = max(self.peak_private_mib, private)
            self.peak_shared_mib = max(self.peak_shared_mib, shared)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples_mib.append(self.current_mib())
        return False

    @property
    def peak_mib(self) -> float:
        return max(self.samples_mib, default=self.start_mib)

    @staticmethod
    def maxrss_mib() -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed_search(raw: dict, tmp: str, tracking_uri: str | None = None) -> dict:
    """`run_search` of a raw spec dict, in this process, quietly: wall time, summed training
    time (one-epoch trials only, else None) and the result. MLflow goes to `tracking_uri`
    (default: SQLite in `tmp`) unless the spec turns tracking off."""
    import time

    from rich.console import Console

    from raysweep.search import run_search
    from raysweep.spec import validate

    uri = tracking_uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}"
    started = time.perf_counter()
    result = run_search(validate(raw), storage=str(Path(tmp) / "results"), tracking_uri=uri,
                        console=Console(quiet=True))
    wall = time.perf_counter() - started
    # A trial's result holds its last epoch's metrics: its training time only if it ran one epoch.
    one_epoch = all(t["epochs"] == 1 for t in result.trials)
    train = train_seconds(t["metrics"] for t in result.trials) if one_epoch else None
    return {"wall_s": wall, "train_s": train, "result": result}


@contextlib.contextmanager
def own_ray(num_cpus: int = 2):
    """A local Ray for the benchmark, unless one is running (a test session's): that one is
    used and left running."""
    import logging

    import ray

    if ray.is_initialized():
        yield
        return
    from raysweep.ray_internals import start_local_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_local_ray(num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False)  # as raysweep's own
    try:
        yield
    finally:
        ray.shutdown()


def marginal(small: dict, large: dict, key: str = "overhead_s") -> float:
    """What one more trial costs: the difference in `key` over the difference in trials, so the
    fixed per-search work (start-up, summary, test evaluation) cancels out."""
    return (large[key] - small[key]) / (large["trials"] - small["trials"])
