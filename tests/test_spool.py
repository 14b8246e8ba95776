"""MLflow outages: writes spooled on disk while a real `mlflow server` is down, replayed when it answers.

The server is really stopped (SIGKILL of its process group, a crash) and started again on the
same port and database; nothing of MLflow or Ray is mocked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from raysweep.tracking import spool as spool_module
from raysweep.book import TrialRecord
from raysweep.cli import main
from raysweep.spec import validate
from raysweep.tracking.models import log_task_model
from raysweep.tracking.names import RUN_KEY_TAG
from raysweep.tracking.spool import FILES_DIR, PENDING, Spool, replay
from raysweep.tracking import PARENT_TAG, Tracker

from tests.conftest import MlflowServer, make_raw

POLL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-outage"))
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def server(module_server):
    """The module's server, running at the start of each test (a test may leave it stopped)."""
    if module_server.proc is None:
        module_server.start()
    return module_server


def _outage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "raysweep.spool" and "unreachable (" in r.getMessage()]


def _history(client, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _trial(number: int) -> TrialRecord:
    return TrialRecord(trial_id=f"t{number}", number=number, config={"lr": 0.01 * number})


def test_writes_during_an_outage_are_replayed_in_order_under_real_run_ids(server, tmp_path, caplog):
    spec = validate(make_raw(name="unit-outage"))
    tracker = Tracker(server.url, spec.experiment, spool=Spool(str(tmp_path), spec.name, server.url))
    parent = tracker.start_search(spec)
    online = tracker.start_trial(parent, _trial(1), {"lr": 0.01})
    tracker.log_metrics(online, {"val_loss": 0.9}, step=1)

    server.stop(kill=True)
    tracker.log_metrics(online, {"val_loss": 0.8}, step=2)  # the first write to fail: spooled from here on
    tracker.end_run(online, "FINISHED", {"raysweep.stopped_early": "true"})
    offline = tracker.start_trial(parent, _trial(2), {"lr": 0.02})
    for step, loss in ((1, 0.7), (2, 0.6), (3, 0.5)):
        tracker.log_metrics(offline, {"val_loss": loss}, step=step)
    tracker.end_run(offline, "FINISHED")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curve.txt").write_text("a plot")
    tracker.log_artifacts(parent, str(plots), "plots")
    tracker.end_run(parent, "FINISHED", {"raysweep.best_run_id": offline})

    assert offline.startswith(PENDING)
    assert len(_outage_warnings(caplog)) == 1  # one warning, not one per write
    spool = Spool(str(tmp_path), spec.name)
    assert spool.pending() == 12  # every write since the server stopped, none sent
    tracker.finish()  # still down: kept, and the warning names `raysweep sync`
    assert spool.pending() == 12
    assert any("raysweep sync unit-outage" in r.getMessage() for r in caplog.records)

    server.start()
    ids = tracker.finish()
    assert not spool.exists()
    real = ids[offline]
    client = MlflowClient(server.url)
    assert _history(client, online, "val_loss") == [(1, 0.9), (2, 0.8)]
    assert _history(client, real, "val_loss") == [(1, 0.7), (2, 0.6), (3, 0.5)]
    run = client.get_run(real)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.02"}
    assert run.data.tags[PARENT_TAG] == parent and run.data.tags[RUN_KEY_TAG] == offline[len(PENDING):]
    assert client.get_run(online).data.tags["raysweep.stopped_early"] == "true"
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.tags["raysweep.best_run_id"] == real  # the placeholder, mapped
    assert [a.path for a in client.list_artifacts(parent, "plots")] == ["plots/curve.txt"]
    # Once replayed, later writes with the placeholder reach the real run directly, also from
    # a copy of the tracker restored from a pickle (as Tune restores its callbacks).
    tracker.set_tags(offline, {"after": "replay"})
    pickle.loads(pickle.dumps(tracker)).set_tags(offline, {"restored": "yes"})
    tags = client.get_run(real).data.tags
    assert tags["after"] == "replay" and tags["restored"] == "yes"


def test_an_interrupted_replay_resumes_and_a_repeated_one_duplicates_nothing(server, tmp_path):
    spec = validate(make_raw(name="unit-replay"))
    tracker = Tracker(server.url, spec.experiment, spool=Spool(str(tmp_path), spec.name, server.url))
    parent = tracker.start_search(spec)
    server.stop(kill=True)
    child = tracker.start_trial(parent, _trial(1), {"lr": 0.01, "hidden": 32})
    for step in (1, 2, 3):
        tracker.log_metrics(child, {"val_loss": 1.0 / step, "epoch": float(step)}, step=step)
    tracker.end_run(child, "FINISHED")
    tracker.end_run(parent, "FINISHED")
    server.start()

    spool = Spool(str(tmp_path), spec.name)
    untouched = tmp_path / "untouched"
    shutil.copytree(tmp_path / spec.name, untouched)

    sent = []

    def interrupt_after_three(entry):  # Ctrl-C during `raysweep sync`
        sent.append(entry)
        if len(sent) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(spool, MlflowClient(server.url), progress=interrupt_after_three, log_model=log_task_model)
    assert spool.state()["applied"] == 3 and spool.pending() == 4
    replay(spool, MlflowClient(server.url), log_model=log_task_model)  # a new process: the id map comes from the state file
    assert not spool.exists()

    # As if a replay had sent everything and died before saving any progress: all again.
    shutil.rmtree(tmp_path / spec.name)
    shutil.copytree(untouched, tmp_path / spec.name)
    assert Spool(str(tmp_path), spec.name).state()["applied"] == 0
    again = replay(Spool(str(tmp_path), spec.name), MlflowClient(server.url), log_model=log_task_model)
    assert again.operations == 7

    client = MlflowClient(server.url)
    runs = client.search_runs([tracker.experiment_id])
    children = [r for r in runs if r.data.tags.get("raysweep.kind") == "trial"]
    assert len(runs) == 2 and len(children) == 1
    assert children[0].data.tags[RUN_KEY_TAG] == child[len(PENDING):]
    for key in ("val_loss", "epoch"):
        assert [s for s, _ in _history(client, children[0].info.run_id, key)] == [1, 2, 3], key


def test_spool_on_object_storage_keeps_order_files_and_progress(s3_server, tmp_path):
    """S3 cannot append: each write rewrites the spool file, which must still read back in order."""
    storage_of, _ = s3_server
    spool = Spool(storage_of("spool-test"), "s3-search", "http://127.0.0.1:1")
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "sub" / "a.txt").write_text("payload")
    for n in range(3):
        spool.append("set_terminated", {"run_id": f"r{n}", "status": "FINISHED", "end_time": n})
    spool.append("log_artifacts", {"run_id": "r3", "artifact_path": "x"}, str(files))
    header, ops = spool.read()
    assert header["tracking_uri"] == "http://127.0.0.1:1"
    assert [op["args"]["run_id"] for op in ops] == ["r0", "r1", "r2", "r3"]
    with spool.payload(ops[3]) as local:
        assert (Path(local) / "sub" / "a.txt").read_text() == "payload"
    spool.save_state(2, {"pending-x": "abc"})
    assert spool.pending() == 2 and spool.state()["ids"] == {"pending-x": "abc"}
    # An object store has no lock: a replay deletes what it read, and what was spooled since stays.
    segments = spool.segments()
    spool.append("log_artifacts", {"run_id": "r4", "artifact_path": "y"}, str(files))
    spool.clear(spool.state()["ids"], segments, ops)
    _, left = spool.read()
    assert [op["args"]["run_id"] for op in left] == ["r4"] and spool.state() == {"applied": 0, "ids": {"pending-x": "abc"}}
    assert not spool.files.exists(f"{FILES_DIR}/{ops[3]['files']}")
    with spool.payload(left[0]) as local:
        assert (Path(local) / "sub" / "a.txt").read_text() == "payload"
    spool.clear({}, spool.segments(), left)
    assert not spool.exists() and spool.pending() == 0


def test_fail_fast_cuts_mlflows_retries_only_inside_and_a_users_own_setting_wins(monkeypatch):
    env = spool_module.FAIL_FAST_ENV
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")  # the user's export
    for name in set(env) - {"MLFLOW_HTTP_REQUEST_TIMEOUT"}:
        monkeypatch.delenv(name, raising=False)
    with spool_module.fail_fast():
        assert {k: os.environ.get(k) for k in env} == {**env, "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}
    assert {k: os.environ.get(k) for k in env} == {**dict.fromkeys(env), "MLFLOW_HTTP_REQUEST_TIMEOUT": "120"}


def test_sync_without_a_spool_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["sync", "no-such-search", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no MLflow spool of search 'no-such-search'" in err


@pytest.mark.parametrize("name", ["../outside", "a/b", "/abs", "..", ".hidden", "", "a b", "x\n"])
def test_sync_takes_only_a_search_name(tmp_path, capsys, name):
    """NAME is a path under --storage, where replay deletes: nothing outside it is read or touched."""
    outside = Spool(str(tmp_path), "outside")
    outside.append("set_terminated", {"run_id": "r0", "status": "FINISHED", "end_time": 0})
    assert main(["sync", name, "--storage", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"sync: {name!r} is not a search name" in err
    assert outside.pending() == 1


def test_sync_keeps_what_the_search_spools_while_it_runs(server, tmp_path, monkeypatch):
    """`raysweep sync` while the search still spools: what the search appends after sync read
    the spool (here, deterministically, just before sync deletes what it sent) stays, and the
    search's own replay sends it."""
    monkeypatch.setattr(spool_module, "RETRY_INTERVAL_S", 1e9)  # the search replays only at its end
    spec = validate(make_raw(name="unit-sync-race"))
    tracker = Tracker(server.url, spec.experiment, spool=Spool(str(tmp_path), spec.name, server.url))
    parent = tracker.start_search(spec)
    server.stop(kill=True)
    child = tracker.start_trial(parent, _trial(1), {"lr": 0.01})
    tracker.log_metrics(child, {"val_loss": 0.9}, step=1)
    server.start()
    late = tmp_path / "late"
    late.mkdir()
    (late / "notes.txt").write_text("logged during the sync")
    clear, appended = Spool.clear, []

    def search_appends_then_clear(spool, *args):
        if not appended:  # sync's replay, not the search's own below
            tracker.log_metrics(child, {"val_loss": 0.8}, step=2)
            tracker.log_artifacts(child, str(late), "late")
            appended.append(True)
        clear(spool, *args)

    monkeypatch.setattr(Spool, "clear", search_appends_then_clear)
    assert main(["sync", spec.name, "--storage", str(tmp_path), "--tracking-uri", server.url]) == 0
    spool = Spool(str(tmp_path), spec.name)
    assert appended and [op["op"] for op in spool.read()[1]] == ["log_batch", "log_artifacts"]
    assert spool.pending() == 2

    real = tracker.finish()[child]
    assert not spool.exists()
    client = MlflowClient(server.url)
    assert _history(client, real, "val_loss") == [(1, 0.9), (2, 0.8)]
    assert [a.path for a in client.list_artifacts(real, "late")] == ["late/notes.txt"]


# -- a real search through an outage


def _gated_spec(name: str, gates: Path, hold_until_up: bool):
    gates.mkdir()
    return validate(make_raw(**{
        "name": name, "task": "tests.outage_tasks:OutageGated", "max_epochs": 4,
        "search.num_samples": 6, "search.max_concurrent": 2, "scheduler.type": "fifo",
        "fixed": {"hidden": 32, "gate_dir": str(gates), "hold_until_up": hold_until_up},
    }))


def _poll(what: str, ready) -> None:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {POLL_TIMEOUT_S} s for {what}")
        time.sleep(0.2)


def _epoch_one_logged(url: str, experiment: str) -> bool:
    """Whether MLflow holds the first epoch of the first two trials."""
    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    runs = client.search_runs([found.experiment_id], "tags.`raysweep.kind` = 'trial'")
    return sum("epoch" in r.data.metrics for r in runs) >= 2


def _spooled(spool: Spool, op: str) -> int:
    return sum(entry["op"] == op for entry in spool.read()[1])


def _inject_outage(server, spec, gates: Path, spool: Spool, restore: bool, seen: dict) -> None:
    """Beside the search: stop the server once two trials' first epoch is in MLflow; with
    `restore`, start it again once two trials were created while it was down."""
    _poll("the first epochs in MLflow", lambda: _epoch_one_logged(server.url, spec.experiment))
    server.stop(kill=True)
    (gates / "down").touch()
    if not restore:
        return
    _poll("trials 3 and 4 started during the outage",
          lambda: all((gates / f"holding-{n}").exists() for n in (3, 4)) and _spooled(spool, "create_run") >= 2)
    seen["runs created offline"] = _spooled(spool, "create_run")
    seen["metric batches spooled"] = _spooled(spool, "log_batch")
    server.start()
    (gates / "up").touch()


def _search_through(server, spec, storage: Path, restore: bool):
    """run_search here (Tune wants the main thread) while a thread stops and restarts MLflow."""
    from raysweep.search import run_search

    seen: dict = {}
    failure: list[BaseException] = []

    def inject():
        try:
            _inject_outage(server, spec, Path(spec.fixed["gate_dir"]), Spool(str(storage), spec.name), restore, seen)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)
            (Path(spec.fixed["gate_dir"]) / "down").touch()  # let the trials end either way
            (Path(spec.fixed["gate_dir"]) / "up").touch()

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    result = run_search(spec, storage=str(storage), tracking_uri=server.url)
    thread.join(timeout=POLL_TIMEOUT_S)
    if failure:
        raise failure[0]
    return result, seen


def _runs(client, experiment_id):
    runs = client.search_runs([experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("raysweep.kind") == "search"]
    return parent, [r for r in runs if r.data.tags.get("raysweep.kind") == "trial"]


def _real_ids(trials, children) -> set[str]:
    """The trials' run ids, a placeholder read as the run that carries its key."""
    by_key = {c.data.tags[RUN_KEY_TAG]: c.info.run_id for c in children}
    return {by_key[t["run_id"][len(PENDING):]] if t["run_id"].startswith(PENDING) else t["run_id"] for t in trials}


def _assert_complete(client, result, spec):
    """One parent, a child per trial, every metric one point per epoch: nothing lost or doubled."""
    parent, children = _runs(client, result.experiment_id)
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    assert len(children) == spec.search.num_samples
    assert _real_ids(result.trials, children) == {c.info.run_id for c in children}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags[PARENT_TAG] == parent.info.run_id
        for key in ("val_loss", "train_loss", "epoch", "cost_usd"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert sorted(steps) == list(range(1, spec.max_epochs + 1)), (child.info.run_name, key, steps)
    assert parent.data.metrics["trials_total"] == spec.search.num_samples
    assert parent.data.metrics["epochs_run"] == spec.search.num_samples * spec.max_epochs
    assert parent.data.tags["raysweep.best_run_id"] in {c.info.run_id for c in children}
    return parent, children


def test_a_search_goes_on_through_an_mlflow_outage_and_loses_no_point(ray_session, server, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(spool_module, "RETRY_INTERVAL_S", 1.0)  # look for the server every second, not 30
    caplog.set_level(logging.WARNING, logger="raysweep.spool")
    spec = _gated_spec("outage-search", tmp_path / "gates", hold_until_up=True)
    result, seen = _search_through(server, spec, tmp_path / "results", restore=True)

    # The outage fell mid-search: trials 1-2 logged epochs 2-4 into the spool, 3-4 were created there.
    assert seen["runs created offline"] >= 2 and seen["metric batches spooled"] >= 6
    assert all(not t["run_id"].startswith(PENDING) for t in result.trials)  # replayed: real ids in the result
    parent, children = _assert_complete(MlflowClient(server.url), result, spec)
    assert {c.info.run_id for c in children} == {t["run_id"] for t in result.trials}
    assert len(_outage_warnings(caplog)) == 1
    assert not Spool(str(tmp_path / "results"), spec.name).exists()
    assert parent.data.tags["raysweep.model_uri"] == result.model_uri


def test_raysweep_sync_sends_what_a_search_ended_with_while_mlflow_was_down(ray_session, server, tmp_path, caplog, capsys):
    caplog.set_level(logging.WARNING, logger="raysweep.spool")
    spec = _gated_spec("outage-sync", tmp_path / "gates", hold_until_up=False)
    storage = tmp_path / "results"
    result, _ = _search_through(server, spec, storage, restore=False)

    pending = [t["run_id"] for t in result.trials if t["run_id"].startswith(PENDING)]
    assert len(pending) >= 4  # trials 3-6 started while the server was down
    assert result.model_uri is None  # spooled with the rest
    hint = f"raysweep sync outage-sync --storage {storage} --tracking-uri {server.url}"
    assert any(hint in r.getMessage() for r in caplog.records)
    capsys.readouterr()

    server.start()
    assert main(["sync", spec.name, "--storage", str(storage), "--tracking-uri", server.url]) == 0
    out = capsys.readouterr().out
    assert "runs created: " in out and "metric points: " in out and "models: 1" in out
    client = MlflowClient(server.url)
    parent, children = _assert_complete(client, result, spec)
    keys = {c.data.tags[RUN_KEY_TAG] for c in children}
    assert {p[len(PENDING):] for p in pending} <= keys
    (version,) = client.search_model_versions(f"name='{spec.experiment}'")
    assert version.run_id == parent.info.run_id
    assert parent.data.tags["raysweep.model_uri"].startswith("models:/")
    assert main(["sync", spec.name, "--storage", str(storage)]) == 2  # all sent: nothing left


def test_epochs_the_callback_buffered_are_spooled_in_order_and_replayed(server, tmp_path, monkeypatch):
    """Per-run batching (MLflowCallback) during an outage: the buffered epochs reach the
    spool, behind the writes before them, and land with their steps once replayed."""
    from types import SimpleNamespace

    from raysweep import tracking
    from raysweep.book import TrialBook
    from raysweep.tracking import MLflowCallback

    # Epochs 2-3 stay buffered until the trial ends, however long stopping the server takes.
    monkeypatch.setattr(tracking, "FLUSH_INTERVAL_S", 1e9)
    spec = validate(make_raw(name="unit-outage-buffered"))
    tracker = Tracker(server.url, spec.experiment, spool=Spool(str(tmp_path), spec.name, server.url))
    book = TrialBook(spec)
    callback = MLflowCallback(tracker, book, tracker.start_search(spec), spec, dict)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01}, checkpoint=None)
    book.on_trial_start(0, [], trial)
    callback.on_trial_start(0, [], trial)
    callback.drain()  # the run exists before the server goes
    rec = book.records["t1"]

    def report(epoch, loss):  # as Tune's loop reports; then the callback's writer catches up
        book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": loss})
        callback.on_trial_result(0, [], trial, {})
        callback.drain()

    report(1, 0.9)  # written at once
    report(2, 0.8)  # buffered
    server.stop(kill=True)
    report(3, 0.7)
    book.on_trial_complete(0, [], trial)
    callback.on_trial_complete(0, [], trial)  # the buffer's write fails: spooled, then the run's end
    callback.drain()
    spool = Spool(str(tmp_path), spec.name)
    assert [op["op"] for op in spool.read()[1]] == ["log_batch", "set_terminated"]
    assert rec.logged_epoch == 3  # spooled counts as written: replay sends it

    server.start()
    tracker.finish()
    client = MlflowClient(server.url)
    assert _history(client, rec.run_id, "val_loss") == [(1, 0.9), (2, 0.8), (3, 0.7)]
    assert client.get_run(rec.run_id).info.status == "FINISHED"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 MB tmpfs (root only: `mount`), unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True,
                       capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def _fill_once_metrics_land(db: Path, filler: Path, stop: threading.Event) -> None:
    """Fill the store's disk as soon as a trial's first epoch is in it: the rest of the search
    writes to a full disk."""
    import sqlite3

    while not stop.is_set():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                if con.execute("select count(*) from metrics").fetchone()[0] > 0:
                    break
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.05)
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 2**20)
            f.flush()


@pytest.mark.integration
def test_a_full_disk_under_a_sqlite_store_is_spooled_and_synced_once_space_is_freed(tiny_disk, tmp_path, capsys):
    """The SQLite store's disk filled mid-search: every write after failed with MLflow's
    'database or disk is full', the search ended in a traceback with runs left RUNNING, and
    nothing said so (mlflow.pytorch's import set the root logger to ERROR, which dropped the
    spool's warnings from then on). Now the writes wait in the spool (on the storage's disk),
    the search ends as after an outage, and `raysweep sync` delivers them once space is freed."""
    from tests.test_cli import SPEC, _cli

    db, storage = tiny_disk / "mlflow.db", tmp_path / "results"
    uri = f"sqlite:///{db}"
    stop = threading.Event()
    filling = threading.Thread(target=_fill_once_metrics_land, args=(db, tiny_disk / "filler", stop), daemon=True)
    filling.start()
    try:
        proc = _cli("search", SPEC, "--name", "full-disk", "--samples", "4", "--set", "max_epochs=6",
                    "--set", "scheduler.type=fifo", "--storage", str(storage), "--tracking-uri", uri, cwd=tmp_path)
    finally:
        stop.set()
        filling.join(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"MLflow at {uri} cannot store more (database or disk is full): spooling to {storage}" in proc.stderr
    sync = f"raysweep sync full-disk --storage {storage} --tracking-uri {uri}"
    assert f"MLflow at {uri} still full: " in proc.stderr and sync in proc.stderr
    assert Spool(str(storage), "full-disk").pending() > 0
    capsys.readouterr()
    assert main(["sync", "full-disk", "--storage", str(storage), "--tracking-uri", uri]) == 1  # still full
    assert re.search(rf"raysweep: MLflow at {re.escape(uri)} cannot store more \(database or disk is full: free "
                     r"space, then run this again\) after \d+ of \d+ operations", capsys.readouterr().err)

    (tiny_disk / "filler").unlink()
    assert main(["sync", "full-disk", "--storage", str(storage), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "full-disk"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.data.tags.get("raysweep.kind") == "trial":  # every epoch of every trial, once
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
            assert steps == list(range(1, 7))
    (version,) = client.search_model_versions("name='full-disk'")
    assert version.run_id == {r.data.tags.get("raysweep.kind"): r for r in runs}["search"].info.run_id


@pytest.mark.integration
def test_a_full_disk_under_the_store_and_the_storage_stops_the_search_in_a_line_and_resume_finishes_it(
        tiny_disk, tmp_path):
    """Store, spool and checkpoints on one disk that fills mid-search: nothing can be recorded,
    so the search stops in one line (it was a traceback, and its cleanup's own failed writes
    another), exit 1; once space is freed, --resume finishes it with every run ended."""
    from tests.test_cli import SPEC, _cli

    db, storage = tiny_disk / "mlflow.db", tiny_disk / "results"
    uri = f"sqlite:///{db}"
    args = ("search", SPEC, "--name", "full-disk", "--samples", "4", "--set", "max_epochs=6",
            "--set", "scheduler.type=fifo", "--storage", str(storage), "--tracking-uri", uri)
    stop = threading.Event()
    filling = threading.Thread(target=_fill_once_metrics_land, args=(db, tiny_disk / "filler", stop), daemon=True)
    filling.start()
    try:
        proc = _cli(*args, cwd=tmp_path)
    finally:
        stop.set()
        filling.join(timeout=30)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("raysweep: "))
    assert line.startswith("raysweep: search failed: the search stopped: the disk is full (no space left on device")
    assert line.endswith("free space, then --resume continues the search from the trials' last saved state")

    (tiny_disk / "filler").unlink()
    resumed = _cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "full-disk"]
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    (parent,) = [r for r in runs if r.data.tags.get("raysweep.kind") == "search"]
    assert parent.info.status == "FINISHED"
    assert len([r for r in runs if r.data.tags.get("raysweep.kind") == "trial"]) == 4
