"""Ctrl-C (or SIGTERM, or SIGHUP) stops a search or a training run as interrupted (resumable,
exit 130; 143; 129), never as finished; an error after the trials ran fails the search without losing them."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import ROOT, fresh_store, make_raw
from tests.test_resume import _finished_children, _steps


def _runs(db: Path, kind: str):
    client = MlflowClient(f"sqlite:///{db}")
    return [r for r in client.search_runs(["1"], max_results=1000) if r.data.tags.get("raysweep.kind") == kind]


def _metric_points(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM metrics WHERE key = 'val_loss'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.fixture(autouse=True)
def _store(tmp_path, mlflow_template):
    """Each test's MLflow store, empty, where `_start`'s command logs."""
    fresh_store(tmp_path / "mlflow.db", mlflow_template)


def _start(tmp_path, ray_session, raw, *extra, command="search"):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "RAY_ADDRESS": ray_session, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    cmd = [sys.executable, "-m", "raysweep.cli", command, str(tmp_path / "spec.yaml"), "--storage",
           str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}",
           "--summary-json", str(tmp_path / "summary.json"), *extra]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return driver, cmd, env, db


def _wait(driver, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, f"the driver ended before {what}: {driver.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)


def test_ctrl_c_stops_a_search_as_interrupted_and_resume_finishes_it(ray_session, tmp_path):
    raw = make_raw(**{"name": "halt", "task": "tests.user_tasks:SlowDigits", "max_epochs": 4,
                      "search.num_samples": 6, "search.max_concurrent": 2, "scheduler.type": "fifo",
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.6}})
    driver, cmd, env, db = _start(tmp_path, ray_session, raw)
    _wait(driver, lambda: _finished_children(db) >= 2, "two finished trials")
    time.sleep(1.0)  # others are mid-way
    driver.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = driver.communicate(timeout=120)
    stopped_s = time.monotonic() - sent

    assert driver.returncode == 130, err[-3000:]
    assert stopped_s < 30  # within seconds, not at the end of the search
    assert "Traceback" not in err
    # One line at once (the stop takes seconds), one at the end with the command to continue.
    lines = [line for line in err.splitlines() if line.startswith("raysweep:")]
    assert len(lines) == 2 and "Ctrl-C again to exit at once" in lines[0], err[-3000:]
    assert "interrupted" in lines[1] and "--resume" in lines[1], err[-3000:]
    assert "Tuner.restore" not in err  # Tune's own advice: not what a raysweep user runs
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["model_uri"] is None
    assert "running" in {t["status"] for t in summary["trials"]}
    (parent,) = _runs(db, "search")
    assert parent.info.status == "KILLED" and parent.data.tags["raysweep.interrupted"] == "true"
    assert parent.data.metrics["trials_finished"] >= 2  # the summary of what finished
    trials = _runs(db, "trial")
    assert not [r for r in trials if r.info.status == "RUNNING"]
    assert any(r.info.status == "KILLED" for r in trials) and not any(r.info.status == "FINISHED"
                                                                       and r.data.tags.get("raysweep.stopped_early")
                                                                       for r in trials)
    assert not MlflowClient(f"sqlite:///{db}").search_registered_models()  # no model from a stopped search

    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["trials"]) == 6
    assert {t["status"] for t in summary["trials"]} == {"finished"}
    (parent,) = _runs(db, "search")
    assert parent.info.status == "FINISHED"
    trials = _runs(db, "trial")
    assert len(trials) == 6 and max(Counter(r.data.tags["raysweep.trial_id"] for r in trials).values()) == 1
    client = MlflowClient(f"sqlite:///{db}")
    for run in trials:  # one point per epoch: none lost, none twice
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id) == [1, 2, 3, 4], run.info.run_name


def test_a_second_ctrl_c_exits_at_once(ray_session, tmp_path):
    raw = make_raw(**{"name": "halt2", "task": "tests.user_tasks:SlowDigits", "max_epochs": 20,
                      "search.num_samples": 2, "scheduler.type": "fifo",
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.5}})
    driver, _, _, db = _start(tmp_path, ray_session, raw)
    _wait(driver, lambda: _metric_points(db) >= 1, "a first epoch")
    driver.send_signal(signal.SIGINT)
    time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert not [r for r in _runs(db, "search") + _runs(db, "trial") if r.info.status == "RUNNING"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_a_training_run_as_killed(ray_session, tmp_path, signum):
    """SIGTERM (`ray job stop`, `docker stop`) stops it as a Ctrl-C does: Ray's own handler
    ended it as a crash (exit 15, a dump of Ray's signal handler, no state saved)."""
    raw = make_raw(**{"name": "halt-train", "task": "tests.user_tasks:SlowDigits", "max_epochs": 20,
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.5}})
    driver, _, _, db = _start(tmp_path, ray_session, raw, command="train")
    _wait(driver, lambda: _metric_points(db) >= 2, "two epochs")
    driver.send_signal(signum)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err
    assert "SIGTERM received" not in err  # Ray's dump
    # Nothing of a stopped training run is resumed: its line says no "saving the search's state".
    stopping = "raysweep: SIGTERM: stopping" if signum == signal.SIGTERM else "raysweep: stopping"
    assert f"{stopping}; Ctrl-C again to exit at once" in err.splitlines(), err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["epochs"] < 20 and summary["model_uri"] is None
    (run,) = _runs(db, "train")
    assert run.info.status == "KILLED"
    assert _steps(MlflowClient(f"sqlite:///{db}"), run.info.run_id) == list(range(1, summary["epochs"] + 1))


def _processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that name `text` (a Ray's temp dir, here)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if text in line:
            found.append(line)
    return found


def _ray_stopped(ray_tmp: Path) -> None:
    """Ray's processes of the command's own Ray (its temp dir), stopped as the command exits."""
    deadline = time.monotonic() + 30
    while _processes_naming(str(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_naming(str(ray_tmp))


@pytest.mark.integration
def test_sigterm_while_the_search_starts_its_ray_is_a_stop_not_a_crash(tmp_path):
    """`ray.init` installed Ray's driver handler (exit 15 and a dump of Ray's signal handler),
    which a SIGTERM while Ray started, or while a search waited for a cluster's capacity, met."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-term-", dir="/tmp"))  # the search's own Ray; short: its sockets
    raw = make_raw(**{"name": "halt-start", "task": "tests.user_tasks:SlowDigits", "max_epochs": 3,
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.1}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    db = tmp_path / "mlflow.db"
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "raysweep.cli", "search", str(tmp_path / "spec.yaml"), "--storage",
             str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}"],
            cwd=ROOT, env={**env, "RAY_TMPDIR": str(ray_tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait(driver, lambda: any(ray_tmp.glob("ray/session_*")), "Ray's start", timeout=120)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
        assert driver.returncode == 143, err[-3000:]
        assert "raysweep: interrupted (SIGTERM)" in err and "Traceback" not in err, err[-3000:]
        assert not [r for r in _runs(db, "search") if r.info.status == "RUNNING"]
        _ray_stopped(ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.integration
def test_a_closed_terminal_stops_a_search_as_a_ctrl_c_does_and_leaves_no_ray_process(tmp_path):
    """The terminal closed (an SSH session dropped) under a search on it: the kernel hangs up
    the terminal (its writes fail with EIO) and the shell sends SIGHUP to the job's process
    group, the command and the Ray it started. SIGHUP ended the command at once, its runs left
    RUNNING, Ray's processes killed under it and two of its agents orphaned; then, taken as a
    stop, the progress line's write to the hung-up terminal failed the search."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-hup-", dir="/tmp"))  # the search's own Ray; short: its sockets
    raw = make_raw(**{"name": "hangup", "task": "tests.user_tasks:SlowDigits", "max_epochs": 6,
                      "search.num_samples": 4, "search.max_concurrent": 2, "scheduler.type": "fifo",
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.3}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": str(ray_tmp)}
    db = tmp_path / "mlflow.db"
    cmd = [sys.executable, "-m", "raysweep.cli", "search", str(tmp_path / "spec.yaml"), "--storage",
           str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}", "--summary-json",
           str(tmp_path / "summary.json")]
    pid, terminal = pty.fork()  # the command's session and terminal, as a login's
    if pid == 0:
        os.chdir(ROOT)
        os.execve(sys.executable, cmd, env)
    shown = []  # what the terminal showed; read, or the command blocks once its buffer is full
    reader = threading.Thread(target=_read_all, args=(terminal, shown), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while _metric_points(db) < 2:
            assert time.monotonic() < deadline and reader.is_alive(), b"".join(shown)[-3000:]
            time.sleep(0.2)
        os.close(terminal)  # hung up
        os.killpg(pid, signal.SIGHUP)  # the shell's SIGHUP to its job
        deadline = time.monotonic() + 120
        while not (ended := os.waitpid(pid, os.WNOHANG))[0]:
            assert time.monotonic() < deadline, "the command did not end"
            time.sleep(0.2)
        pid = 0
        assert os.waitstatus_to_exitcode(ended[1]) == 129, b"".join(shown)[-3000:]
        assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"
        (parent,) = _runs(db, "search")
        assert parent.info.status == "KILLED" and parent.data.tags["raysweep.interrupted"] == "true"
        assert not [r for r in _runs(db, "trial") if r.info.status == "RUNNING"]
        _ray_stopped(ray_tmp)
    finally:
        if pid:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _read_all(fd: int, into: list[bytes]) -> None:
    with contextlib.suppress(OSError):  # EIO once the command's side is gone, EBADF once ours is
        while chunk := os.read(fd, 65536):
            into.append(chunk)


def test_ctrl_c_before_the_first_epoch_exits_130(ray_session, tmp_path):
    raw = make_raw(**{"name": "halt-early", "task": "tests.user_tasks:SlowDigits", "max_epochs": 3,
                      "fixed": {"hidden": 32, "epoch_sleep_s": 0.1}})
    driver, _, _, db = _start(tmp_path, ray_session, raw, command="train")
    _wait(driver, lambda: "training" in (driver.stdout.readline() or ""), "the first line", timeout=60)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert not [r for r in _runs(db, "train") if r.info.status in ("RUNNING", "FINISHED")] if db.exists() else True


def test_an_error_after_the_trials_fails_the_search_and_resume_finishes_it(ray_session, tmp_path):
    flag = tmp_path / "test-split-broken"
    flag.touch()
    raw = make_raw(**{"name": "late-fail", "task": "tests.user_tasks:FailsAtTest", "max_epochs": 2,
                      "search.num_samples": 2, "fixed": {"hidden": 32, "fail_flag": str(flag)}})
    driver, cmd, env, db = _start(tmp_path, ray_session, raw)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "test data unreadable" in err and "--resume" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "test data unreadable" in summary["error"]
    assert len(summary["trials"]) == 2 and summary["best"] is not None
    (parent,) = _runs(db, "search")
    assert parent.info.status == "FAILED" and "test data unreadable" in parent.data.tags["raysweep.error"]

    flag.unlink()
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["test_metrics"] and len(summary["trials"]) == 2
    (parent,) = _runs(db, "search")
    assert parent.info.status == "FINISHED" and len(_runs(db, "trial")) == 2
