"""`raysweep search --resume`: a search whose driver died continues; a finished one grows."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from ray.tune.search.optuna import OptunaSearch

from raysweep.book import STOPPED
from raysweep.cli import main
from raysweep.report import build_report
from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import ROOT, fresh_store, make_raw


def _children(client: MlflowClient, parent_run_id: str):
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000)


def _steps(client, run_id, metric="val_loss"):
    return [m.step for m in client.get_metric_history(run_id, metric)]


def test_extending_a_finished_search_continues_its_sampler_and_parent_run(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{"name": "grow", "max_epochs": 2, "search.num_samples": 16, "search.max_concurrent": 4,
                                "search.n_startup_trials": 4}))
    storage = str(tmp_path / "results")
    first = run_search(spec, storage=storage, tracking_uri=tracking_uri)
    grown = run_search(spec, storage=storage, tracking_uri=tracking_uri, resume=True, more_samples=16)

    assert grown.parent_run_id == first.parent_run_id and len(grown.trials) == 32
    client = MlflowClient(tracking_uri)
    children = _children(client, first.parent_run_id)
    assert len(children) == 32 and len({r.data.tags["raysweep.trial_id"] for r in children}) == 32
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(int(r.info.run_name.split()[0].split("-")[1]) for r in children) == list(range(1, 33))
    assert client.get_run(first.parent_run_id).data.metrics["trials_total"] == 32
    # The new round's sampler had the first 16 trials in its study before it sampled, as they
    # ended (stopped early: pruned): its first 16 trials, then come the 16 it ran.
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tmp_path / "results" / "grow+1"))
    study = searcher._ot_study.trials
    assert len(study) == 32
    earlier = {(round(r["config"]["lr"], 12), r["value"], "PRUNED" if r["status"] == STOPPED else "COMPLETE")
               for r in first.trials}
    assert {(round(t.params["lr"], 12), t.value, t.state.name) for t in study[:16]} == earlier
    assert any(r["status"] == STOPPED for r in first.trials)
    # One registered version per model chosen: a second only if the new round's best is another trial.
    versions = client.search_model_versions(f"name = '{spec.registered_model_name}'")
    unchanged = grown.best["trial_id"] == first.best["trial_id"]
    assert len(versions) == (1 if unchanged else 2)
    assert (grown.model_uri == first.model_uri) == unchanged
    assert client.get_run(first.parent_run_id).data.tags["raysweep.model_uri"] == grown.model_uri


def test_an_extended_search_whose_best_is_unchanged_keeps_its_model():
    """--resume --samples +N: the parent run's model came from the same best checkpoint, so the
    new round logs no second model and registers no new version; any other choice does."""
    from ray.tune import Checkpoint

    from raysweep.book import FINISHED, TrialBook, TrialRecord
    from raysweep.search import _model_logged_before, model_source

    spec = validate(make_raw(**{"name": "grow"}))
    book = TrialBook(spec)
    for n, value in enumerate((0.3, 0.2)):
        book.records[f"t{n}"] = TrialRecord(f"t{n}", n + 1, {}, status=FINISHED, epochs=2, value=value,
                                            checkpoint=Checkpoint(f"/results/grow/t{n}/checkpoint_000001"))
    assert _model_logged_before(book, spec) is None  # a first round: nothing logged yet
    book.parent_tags = {"raysweep.model_uri": "models:/m-1", "raysweep.model_source": model_source(spec, book.best())}
    assert _model_logged_before(book, spec) == "models:/m-1"
    book.records["t2"] = TrialRecord("t2", 3, {}, status=FINISHED, epochs=2, value=0.1,
                                     checkpoint=Checkpoint("/results/grow+1/t2/checkpoint_000001"))
    assert _model_logged_before(book, spec) is None  # a better trial: its own model
    other = validate(make_raw(**{"name": "grow", "tracking.registered_model": "elsewhere"}))
    del book.records["t2"]
    assert _model_logged_before(book, other) is None  # registered under another name: a version there


def test_a_resumed_search_whose_dead_driver_registered_its_model_registers_no_second_version(tracking_uri):
    """Killed after the model's registration but before the parent run said so (seen by hand:
    versions 2 and 3 of one best trial), the resumed search finds the version by the checkpoint
    it was built from (a tag it was created with) and logs nothing again; another best, a new one."""
    from ray.tune import Checkpoint

    from raysweep.book import FINISHED, TrialBook, TrialRecord
    from raysweep.context import LocalContext
    from raysweep.search import _model_logged_before, model_source
    from raysweep.tasks.digits import DigitsMLP
    from raysweep.tracking import Tracker
    from raysweep.tracking.models import log_pytorch_model

    spec = validate(make_raw(**{"name": "reborn"}))
    tracker = Tracker(tracking_uri, spec.experiment)
    book = TrialBook(spec)
    book.parent_run_id = tracker.start_search(spec)
    config = {"lr": 1e-2, "batch_size": 64, "hidden": 16, "dropout": 0.0}
    ctx = LocalContext(max_epochs=1, seed=0)
    DigitsMLP().train(config, ctx)
    book.records["t0"] = TrialRecord("t0", 1, config, status=FINISHED, epochs=1, value=0.3,
                                     checkpoint=Checkpoint("/results/reborn/t0/checkpoint_000000"))
    uri = log_pytorch_model(tracking_uri, book.parent_run_id, DigitsMLP(), config, ctx.checkpoints[-1], seed=0,
                            registered_name=spec.registered_model_name,
                            version_tags={"test_loss": 0.5, "raysweep.model_source": model_source(spec, book.best())})
    (version,) = tracker.client.search_model_versions(f"name = '{spec.registered_model_name}'")
    assert version.tags == {"test_loss": "0.5", "raysweep.model_source": model_source(spec, book.best())}
    assert _model_logged_before(book, spec, tracker) is None  # a first run (no parent tags): never looked up
    book.parent_tags = dict(tracker.client.get_run(book.parent_run_id).data.tags)  # --resume read them
    assert "raysweep.model_uri" not in book.parent_tags and _model_logged_before(book, spec, tracker) == uri
    book.records["t0"].checkpoint = Checkpoint("/results/reborn/t0/checkpoint_000001")  # another checkpoint
    assert _model_logged_before(book, spec, tracker) is None


# In-process trials, and Ray Train trials (a worker group per trial, its checkpoints in Ray
# Train's own run directory): both die with the driver, both continue from their checkpoints.
# `done`: trials finished before the kill (the Ray Train case one, not two: each costs ~20 s to start).
@pytest.mark.parametrize("workers,samples,concurrent,done", [(1, 6, 2, 2), (2, 2, 1, 1)], ids=["in-process", "ray-train"])
def test_a_killed_driver_resumes_without_rerunning_or_duplicating(ray_session, tmp_path, workers, samples, concurrent,
                                                                 done, mlflow_template):
    raw = make_raw(**{"name": "phoenix", "task": "tests.user_tasks:SlowDigits", "max_epochs": 4,
                      "search.num_samples": samples, "search.max_concurrent": concurrent, "scheduler.type": "fifo",
                      "resources.workers_per_trial": workers, "fixed": {"hidden": 32, "epoch_sleep_s": 0.6 * workers}})
    # The kill lands after some trials were saved finished and others mid-way (in-process: two,
    # so that _lose_checkpoints_as_tune_can takes one way with each). In-process, "mid-way" is
    # read from Tune's saved state, which lags MLflow by a save or more on a loaded machine; Ray
    # Train's checkpoints are in its own run directory, not in that state: a state save later.
    cmd, env, db = _kill_driver(tmp_path, ray_session, mlflow_template, raw,
                                lambda db: _finished_children(db) >= done and _running_with_points(db) >= concurrent
                                and (workers > 1
                                     or _saved_with_checkpoints(tmp_path / "results" / "phoenix") >= concurrent),
                                settle_s=0 if workers == 1 else 1.5)
    killed_at_ms = time.time() * 1000

    client = MlflowClient(f"sqlite:///{db}")
    before = {r.data.tags["raysweep.trial_id"]: r for r in client.search_runs(["1"], max_results=1000)
              if r.data.tags.get("raysweep.kind") == "trial"}
    done_before = {tid for tid, r in before.items() if r.info.status == "FINISHED"}
    assert len(done_before) >= done and any(r.info.status == "RUNNING" for r in before.values())
    refilled = _lose_checkpoints_as_tune_can(tmp_path / "results" / "phoenix") if workers == 1 else []
    mended = _cut_short_as_a_kill_can(tmp_path / "results" / "phoenix")

    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert all(f"{line} was deleted after Tune's last saved state" in resumed.stdout for line in refilled)
    assert f"{mended} was cut short when the driver was killed; put back" in resumed.stdout, resumed.stdout[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    errors = [Path(f).read_text()[-2000:] for f in glob.glob(str(tmp_path / "results" / "phoenix" / "*" / "error.txt"))]
    assert len(summary["trials"]) == samples and {t["status"] for t in summary["trials"]} == {"finished"}, \
        (resumed.stderr[-3000:], errors)

    runs = client.search_runs(["1"], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("raysweep.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_runs = [r for r in runs if r.data.tags.get("raysweep.kind") == "trial"]
    assert not [r for r in trial_runs if r.info.status == "RUNNING"]  # the dead driver's runs put right
    kept = [r for r in trial_runs if "raysweep.orphaned" not in r.data.tags]
    ids = Counter(r.data.tags["raysweep.trial_id"] for r in kept)
    assert len(kept) == samples and max(ids.values()) == 1  # each trial one run, reused across the restart
    assert {t["run_id"] for t in summary["trials"]} == {r.info.run_id for r in kept}
    for run in kept:  # one point per epoch: none lost, none twice
        assert _steps(client, run.info.run_id) == [1, 2, 3, 4], run.info.run_name
    for tid in done_before:  # finished trials were not run again
        history = client.get_metric_history(before[tid].info.run_id, "val_loss")
        assert max(m.timestamp for m in history) < killed_at_ms
    # `raysweep report`, from MLflow alone, agrees with the resumed search's own summary.
    report = build_report(client, summary["parent_run_id"])
    assert report["counts"] == {"running": 0, "finished": samples, "stopped": 0, "failed": 0}
    for key in ("device_hours", "cost_usd", "flops", "samples"):
        assert report["totals"][key] == pytest.approx(summary["totals"][key], rel=1e-9), key
    # Interrupted trials continued from their newest checkpoints: no epoch trained twice.
    # (A trial the dead driver started but Tune never saved has a directory too: an orphan.)
    results = [tmp_path / "results" / "phoenix" / f"trial_{t['trial_id']}" / "result.json" for t in summary["trials"]]
    for result in results:
        _each_epoch_trained_once(result)


def test_a_driver_killed_while_confirming_resumes_its_confirming_runs_once_each(ray_session, tmp_path, mlflow_template):
    """search.confirm's round is a Tune experiment of its own: a driver killed in it is resumed
    there (its runs from their checkpoints), and the book it saved there, not the search
    round's older one, is the search's: no confirming run lost, repeated, or left RUNNING."""
    raw = make_raw(**{"name": "sure", "task": "tests.user_tasks:SlowDigits", "max_epochs": 4,
                      "search.num_samples": 2, "search.max_concurrent": 2, "scheduler.type": "fifo",
                      "search.confirm": {"top_k": 1, "seeds": 2}, "fixed": {"hidden": 32, "epoch_sleep_s": 0.6}})
    cmd, env, db = _kill_driver(tmp_path, ray_session, mlflow_template, raw,
                                lambda db: _running_with_points(db, confirming=True)
                                and _saved_with_checkpoints(tmp_path / "results" / "sure-confirm"))

    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{db}")
    runs = [r for r in client.search_runs(["1"], max_results=1000) if r.data.tags.get("raysweep.kind") == "trial"]
    assert not [r for r in runs if r.info.status == "RUNNING"] and not [r for r in runs if "raysweep.orphaned" in r.data.tags]
    confirming = [r for r in runs if "raysweep.confirms" in r.data.tags]
    assert len(runs) == len(summary["trials"]) == 4 and len(confirming) == 2
    assert sorted(int(r.info.run_name.split()[0].split("-")[1]) for r in runs) == [1, 2, 3, 4]
    for run in runs:  # one point per epoch: none lost, none twice
        assert _steps(client, run.info.run_id) == [1, 2, 3, 4], run.info.run_name
    chosen = next(c for c in summary["confirm"]["candidates"] if c["trial_id"] == summary["confirm"]["chosen"])
    assert len(chosen["values"]) == 3 and len(set(chosen["values"])) == 3
    results = glob.glob(str(tmp_path / "results" / "sure-confirm" / "trial_*" / "result.json"))
    assert len(results) == 2
    for result in results:  # continued from its checkpoint, not from epoch 1
        _each_epoch_trained_once(result)


def _each_epoch_trained_once(result: str | Path) -> None:
    """A trial's result.json holds epochs 1-4, each trained once: an epoch is there twice only as
    the same report said again (its own epoch_time_s), from a checkpoint Tune's saved state did
    not name, or named but lost."""
    lines = [json.loads(line) for line in Path(result).read_text().splitlines() if line.strip()]
    assert sorted({r["epoch"] for r in lines}) == [1, 2, 3, 4], result
    trained = {(r["epoch"], r["epoch_time_s"]) for r in lines}
    assert len(trained) == 4, (result, sorted(trained))


def _lose_checkpoints_as_tune_can(experiment: Path) -> list[str]:
    """Tune deletes a trial's checkpoints beyond checkpoint.keep as it registers new ones, and
    the state it saved lags by a few: a killed driver can leave a state naming checkpoints that
    are gone (1 run in about 20 here; a trial then failed on --resume), or naming none of a
    trial's (CI: the trial trained its first epoch again). Make it certain: the first
    unfinished trial's latest checkpoint is gone, a later one there; the second's state names
    none; any others lose the older ones their state keeps. Returns "<trial dir>: <checkpoint>"
    of each latest lost."""
    from raysweep.ray_internals import unfinished_checkpoints

    unfinished = unfinished_checkpoints(str(experiment))
    assert len(unfinished) >= 2, "not two unfinished trials with a checkpoint at the kill"
    lost = []
    for n, (trial_dir, (kept, latest, _)) in enumerate(unfinished.items()):
        if n == 1:
            _forget_checkpoints(experiment, trial_dir)
        elif n == 0:
            index = int(latest.removeprefix("checkpoint_"))
            later, next_but_one = (experiment / trial_dir / f"checkpoint_{index + k:06d}" for k in (1, 2))
            if later.exists():
                shutil.rmtree(experiment / trial_dir / latest)
                if next_but_one.exists():  # Tune deleted several after it: the epochs between are said again too
                    shutil.rmtree(later)
            else:
                (experiment / trial_dir / latest).rename(later)
            lost.append(f"{trial_dir}: {latest}")
        else:
            for name in set(kept) - {latest}:
                shutil.rmtree(experiment / trial_dir / name, ignore_errors=True)
    return lost


def _newest_state(experiment: Path) -> Path:
    return max(experiment.glob("experiment_state-*.json"))


def _forget_checkpoints(experiment: Path, trial_dir: str) -> None:
    """Rewrite Tune's saved state of the trial's run as saved before it registered a checkpoint."""
    from ray.tune.experiment.trial import Trial

    path = _newest_state(experiment)
    state = json.loads(path.read_text())
    for entry in state["trial_data"]:
        trial = Trial.from_json_state(entry[0], stub=True)
        if trial.storage.trial_dir_name == trial_dir:
            trial.restore_run_metadata(entry[1])
            trial.run_metadata.checkpoint_manager._checkpoint_results = []
            trial.run_metadata.checkpoint_manager._latest_checkpoint_result = None
            entry[1] = trial.run_metadata.get_json_state()
    path.write_text(json.dumps(state))


def _cut_short_as_a_kill_can(experiment: Path) -> str:
    """A driver killed while Tune copied its staged state to storage leaves the file on storage
    cut short (CI: an empty experiment_state; --resume then failed), the staged one whole.
    Make it certain: the newest state on storage as it was (staged too), cut in half. Returns its name."""
    from raysweep.ray_internals import driver_staging_copies

    path = _newest_state(experiment)
    (staged, *_) = driver_staging_copies(experiment.name, path.name)
    whole = path.read_bytes()
    Path(staged, path.name).write_bytes(whole)
    path.write_bytes(whole[: len(whole) // 2])
    return path.name


def _kill_driver(tmp_path: Path, ray_session: str, mlflow_template, raw: dict, ready,
                 settle_s: float = 0) -> tuple[list, dict, Path]:
    """Start `raysweep search` on `raw` (its MLflow in tmp_path/mlflow.db); once `ready()` and
    `settle_s` later (a state save after it), kill it (-9); `ready` is given the database. Returns its command, environment and database, to --resume."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    db = tmp_path / "mlflow.db"
    fresh_store(db, mlflow_template)
    # Tune saves the search's state at most every 10 s by default; once a second here.
    env = {**os.environ, "RAY_ADDRESS": ray_session, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    # From the repository root, as the session's Ray workers import `tests.user_tasks` from there.
    cmd = [sys.executable, "-m", "raysweep.cli", "search", str(tmp_path / "spec.yaml"), "--storage",
           str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}", "--summary-json", str(tmp_path / "summary.json")]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not ready(db):
        assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read().decode()[-3000:]
        time.sleep(0.3)
    time.sleep(settle_s)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    return cmd, env, db


def _running_with_points(db: Path, confirming: bool = False) -> int:
    """How many running trials (confirming runs) have logged an epoch."""
    if not db.exists():
        return 0
    confirm = (" AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'raysweep.confirms')"
               if confirming else "")
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute(
                "SELECT COUNT(DISTINCT r.run_uuid) FROM runs r JOIN metrics m ON r.run_uuid = m.run_uuid "
                "WHERE r.status = 'RUNNING' AND m.key = 'val_loss'" + confirm).fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _saved_with_checkpoints(experiment: Path) -> int:
    """How many unfinished trials Tune's newest saved state on storage names a checkpoint of:
    what --resume starts from. (A kill one fixed sleep after MLflow showed the points found one
    of two in CI: the state saves lag on a loaded machine.)"""
    from raysweep.ray_internals import unfinished_checkpoints

    try:
        return len(unfinished_checkpoints(str(experiment)))
    except (OSError, ValueError):  # not written yet, or read while Tune rewrites it in place
        return 0


def _finished_children(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid "
                "WHERE t.key = 'raysweep.kind' AND t.value = 'trial' AND r.status = 'FINISHED'"
            ).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_a_new_round_draws_new_configurations_and_a_changed_space_is_refused(ray_session, tmp_path, tracking_uri,
                                                                               capsys):
    small = {"name": "fresh", "max_epochs": 1, "search.algorithm": "random", "search.num_samples": 3,
             "search.max_concurrent": 3, "scheduler.type": "fifo"}
    spec, storage = validate(make_raw(**small)), str(tmp_path / "results")
    first = run_search(spec, storage=storage, tracking_uri=tracking_uri)
    grown = run_search(spec, storage=storage, tracking_uri=tracking_uri, resume=True, more_samples=3)

    earlier = [t["config"] for t in first.trials]
    added = [t["config"] for t in grown.trials if t["config"] not in earlier]
    assert len(grown.trials) == 6 and len(added) == 3  # with round 0's seed, round 1 drew `earlier` again

    # The space edited between rounds: one line naming the key, exit 2, before anything runs.
    changed, dropped = make_raw(**small, **{"space.lr.high": 0.5}), make_raw(**small)
    del dropped["space"]["dropout"]
    # ... or a setting the trials so far were trained, stopped or ranked by.
    longer, asha = make_raw(**{**small, "max_epochs": 2}), make_raw(**{**small, "scheduler.type": "asha"})
    capsys.readouterr()  # MLflow's lines about the models the searches registered
    for raw, key in ((changed, "space.lr"), (dropped, "space.dropout"), (longer, "max_epochs (1, now 2)"),
                     (asha, "scheduler.type (fifo, now asha)")):
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
        code = main(["search", str(tmp_path / "spec.yaml"), "--storage", storage, "--tracking-uri", tracking_uri,
                     "--resume", "--samples", "+2"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"{key} changed since search 'fresh' ran" in err, err
    assert not (tmp_path / "results" / "fresh+2").exists()


def test_a_state_file_a_killed_driver_cut_short_is_put_back_from_its_staged_copy_or_refused_in_one_line(
        tmp_path, monkeypatch, capsys):
    """Tune copies its staged state to storage by rewriting each file in place: a driver killed
    mid-copy left an empty experiment_state (CI), and `--resume` failed with a JSONDecodeError's
    traceback. The driver's staged copy (Ray's session directory) is whole: the session's files
    come back from it, as one save. With no copy left, a one-line error and exit 1."""
    import pickle

    from raysweep.errors import RunFailed
    from raysweep.resume import mend_saved_state

    session, older = "2026-12-04_05-00-01", "2026-12-04_04-00-00"
    experiment = tmp_path / "results" / "phoenix"
    experiment.mkdir(parents=True)
    (experiment / f"experiment_state-{older}.json").write_text('{"an": "earlier run"}')
    (experiment / f"experiment_state-{session}.json").write_bytes(b"")  # cut short by the kill
    (experiment / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"trials": 3}))  # a save older than staged
    (experiment / "tuner.pkl").write_bytes(pickle.dumps("tuner"))
    before = {p.name: p.read_bytes() for p in experiment.iterdir()}
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "tmp"))
    staged = tmp_path / "tmp" / "ray" / "session_2026-12-04_04-59-58_1_2" / "artifacts" / "2026-12-04_05-00-00" / \
        "phoenix" / "driver_artifacts"
    staged.mkdir(parents=True)
    (staged / f"experiment_state-{session}.json").write_text('{"trial_data": []}')
    (staged / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"trials": 4}))

    assert mend_saved_state(str(experiment)) == [
        f"{experiment}: experiment_state-{session}.json was cut short when the driver was killed; put back from the "
        f"driver's copy in {staged}"]
    after = {p.name: p.read_bytes() for p in experiment.iterdir()}
    assert after == {**before, f"experiment_state-{session}.json": b'{"trial_data": []}',
                     f"searcher-state-{session}.pkl": pickle.dumps({"trials": 4})}
    assert mend_saved_state(str(experiment)) == []  # whole now: nothing to do

    # A pickle cut short, and the staged copy gone (another machine, a reboot): refused.
    (experiment / f"searcher-state-{session}.pkl").write_bytes(pickle.dumps({"trials": 4})[:-5])
    shutil.rmtree(tmp_path / "tmp")
    with pytest.raises(RunFailed, match=rf"saved state {experiment}/searcher-state-{session}.pkl was cut short .* "
                                        r"start it again under another --name"):
        mend_saved_state(str(experiment))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(make_raw(name="phoenix")))
    code = main(["search", str(tmp_path / "spec.yaml"), "--storage", str(tmp_path / "results"), "--resume",
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"searcher-state-{session}.pkl was cut short" in err


def test_resume_refuses_a_changed_setting_that_defines_the_search_and_names_it(tmp_path):
    """A search killed, then resumed with `--set max_epochs=10 --set scheduler.type=asha` (it
    had 30 and FIFO) ran on: its trials ended at 1 to 23 epochs under a parent run saying 30."""
    from raysweep.book import TrialBook
    from raysweep.errors import SpecError
    from raysweep.resume import Previous, check_resume

    spec = validate(make_raw(**{"name": "defined", "max_epochs": 30, "scheduler.type": "fifo"}))
    saved = TrialBook(spec).get_state()
    previous = Previous(str(tmp_path / "defined"), 0, saved)
    check_resume(previous, spec, str(tmp_path), None)  # the same spec: on it goes
    check_resume(previous, validate(make_raw(**{"name": "defined", "max_epochs": 30, "scheduler.type": "fifo",
                                                "search.max_concurrent": 8, "tracking.views": False})),
                 str(tmp_path), None)  # what may change between runs of a search
    edited = validate(make_raw(**{"name": "defined", "max_epochs": 10, "scheduler.type": "asha",
                                  "metric": "val_accuracy", "mode": "max"}))
    with pytest.raises(SpecError) as refused:
        check_resume(previous, edited, str(tmp_path), None)
    assert str(refused.value) == (
        "--resume: objectives (val_loss (min), now val_accuracy (max)), max_epochs (30, now 10), "
        "scheduler.type (fifo, now asha) changed since search 'defined' ran; the trials so far were trained, "
        "stopped and ranked by them: put them back, or start a new search under another name")
    check_resume(Previous(str(tmp_path / "defined"), 0, {k: v for k, v in saved.items() if k != "settings"}),
                 edited, str(tmp_path), None)  # a book saved before these were kept: nothing to compare

