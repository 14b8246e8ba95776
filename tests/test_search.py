"""A real search: Ray Tune + Optuna + ASHA over the digits task, tracked in real MLflow (SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.tune import Checkpoint

from raysweep.tracking.models import using_tracking_uri
from raysweep.errors import SearchFailed
from raysweep.models import checkpoint_state
from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import fresh_store, make_raw


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory, mlflow_template):
    """One 9-trial ASHA search shared by the layout tests below. Checkpoints every 4 epochs
    (of 6): the rungs (1 and 3) still save theirs."""
    tmp = tmp_path_factory.mktemp("search")
    uri = fresh_store(tmp / "mlflow.db", mlflow_template)
    spec = validate(make_raw(**{"search.num_samples": 9, "checkpoint.every": 4}))
    result = run_search(spec, storage=str(tmp / "results"), tracking_uri=uri)
    client = MlflowClient(uri)
    runs = client.search_runs([result.experiment_id], max_results=100)
    return spec, result, client, runs


def _children(runs):
    return [r for r in runs if r.data.tags.get("raysweep.kind") == "trial"]


def _parent(runs):
    (parent,) = [r for r in runs if r.data.tags.get("raysweep.kind") == "search"]
    return parent


def test_search_runs_every_trial_and_asha_stops_some(searched):
    spec, result, _, _ = searched
    assert len(result.trials) == 9
    assert result.epochs_budget == 9 * spec.max_epochs
    assert result.epochs_run < result.epochs_budget
    statuses = {t["status"] for t in result.trials}
    assert "stopped" in statuses and "finished" in statuses
    assert result.best["value"] == min(t["value"] for t in result.trials)
    assert result.best["metrics"]["val_accuracy"] > 0.8  # 6 epochs of a small MLP on digits
    assert 0.8 < result.test_metrics["test_accuracy"] <= 1.0
    for trial in result.trials:  # every epoch's value, in order, ending with the trial's last
        history = trial["history"]
        assert [h["epoch"] for h in history] == list(range(1, trial["epochs"] + 1))
        assert history[-1]["value"] == trial["value"]
        assert all(a["t"] <= b["t"] for a, b in zip(history, history[1:]))
        hours = [h["device_hours"] for h in history]  # the trial's compute so far: it only grows
        assert 0 < hours[0] and all(a <= b for a, b in zip(hours, hours[1:]))
        assert hours[-1] == trial["metrics"]["cost_device_hours"]
        assert trial["checkpoint"] is not None and Path(trial["checkpoint"]).is_dir()  # its last one, kept


def test_every_trial_keeps_the_model_of_the_epoch_it_was_ranked_by(searched):
    # ASHA stopped most trials at a rung (epoch 1 or 3) that `checkpoint.every: 4` skips: the
    # rung saved a checkpoint anyway, so the chosen model is the one its value came from.
    _, result, _, _ = searched
    assert {t["epochs"] for t in result.trials} >= {1, 6}
    for trial in result.trials:
        assert trial["checkpoint"] is not None, trial
        state = checkpoint_state(Checkpoint(trial["checkpoint"]))
        assert state["epoch"] == trial["epochs"], trial


def test_mlflow_has_one_parent_and_a_child_per_trial(searched):
    spec, result, client, runs = searched
    parent = _parent(runs)
    children = _children(runs)
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    assert parent.info.run_name == spec.name
    assert len(children) == 9
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["raysweep.trial_id"] for c in children} == {t["trial_id"] for t in result.trials}
    experiment = client.get_experiment(result.experiment_id)
    assert experiment.name == spec.name
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_child_runs_hold_params_and_full_epoch_histories(searched):
    _, result, client, runs = searched
    by_id = {c.info.run_id: c for c in _children(runs)}
    for trial in result.trials:
        run = by_id[trial["run_id"]]
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert params["hidden"] == "32"  # fixed
        assert float(params["lr"]) == pytest.approx(trial["config"]["lr"])  # sampled
        assert set(params) == {"hidden", "lr", "batch_size", "dropout"}
        for name in ("train_loss", "val_loss", "val_accuracy", "epoch", "epoch_time_s"):
            history = client.get_metric_history(run.info.run_id, name)
            assert [m.step for m in history] == list(range(1, trial["epochs"] + 1)), name
        stopped = run.data.tags.get("raysweep.stopped_early") == "true"
        assert stopped == (trial["status"] == "stopped")


def test_parent_run_summarises_the_search(searched):
    spec, result, client, runs = searched
    parent = _parent(runs)
    metrics, params = parent.data.metrics, parent.data.params
    assert metrics["best_val_loss"] == pytest.approx(result.best["value"])
    assert float(params["lr"]) == pytest.approx(result.best["config"]["lr"])
    assert metrics["trials_total"] == 9
    assert metrics["trials_finished"] + metrics["trials_stopped_early"] == 9
    assert metrics["epochs_run"] == result.epochs_run
    assert metrics["test_accuracy"] == pytest.approx(result.test_metrics["test_accuracy"])
    assert parent.data.tags["raysweep.best_run_id"] == result.best["run_id"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "best_checkpoint", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/best_vs_cost.png"}
    png = open(client.download_artifacts(parent.info.run_id, "plots/best_vs_cost.png"), "rb").read()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    spec_text = open(client.download_artifacts(parent.info.run_id, "spec.yaml")).read()
    assert "max_epochs: 6" in spec_text and "name: test-search" in spec_text


def test_parent_run_shows_why_the_search_chose_what_it_chose(searched):
    spec, result, client, runs = searched
    parent = _parent(runs)
    metrics = parent.data.metrics
    views = {a.path for a in client.list_artifacts(parent.info.run_id, "views")}
    assert views == {"views/search.html"}  # the views' PNGs are tracking.view_images' (tests/test_pareto.py)
    page = open(client.download_artifacts(parent.info.run_id, "views/search.html")).read()
    for section in ("importance", "timeline", "slice", "parallel_coordinates", "learning_curves"):
        assert f'<section id="{section}">' in page
    # Importances of the searched hyperparameters, compared where every trial still ran (ASHA's grace period).
    shares = {k.removeprefix("importance_"): v for k, v in metrics.items() if k.startswith("importance_")}
    assert set(shares) == set(spec.space) and sum(shares.values()) == pytest.approx(1.0)
    assert parent.data.tags["raysweep.importance_epoch"] == str(spec.scheduler.grace_period)
    # The audit at rung 1 (grace 1, rf 3, max 6: rungs 1 and 3), when enough trials went past it.
    past_first = sum(t["epochs"] > 1 for t in result.trials)
    assert ("rung_corr_1" in metrics) == (past_first >= 3)
    if past_first >= 3:
        assert -1 <= metrics["rung_corr_1"] <= 1 and metrics["rung_n_1"] == past_first


def test_cost_per_epoch_on_children_and_their_sum_on_the_parent(searched):
    spec, result, client, runs = searched
    parent = _parent(runs)
    children = _children(runs)
    for child in children:
        m = child.data.metrics
        steps = [p.step for p in client.get_metric_history(child.info.run_id, "cost_usd")]
        assert steps == list(range(1, int(m["epoch"]) + 1))  # cumulative, one point per epoch
        # One worker with one CPU: device-hours are the trial's wall time in hours...
        assert m["cost_device_hours"] == pytest.approx(m["cost_wall_s"] / 3600, rel=0.05)
        assert m["cost_usd"] == pytest.approx(m["cost_device_hours"] * spec.cost.cpu_hour_usd, rel=1e-6)
        # ...and that wall covers the epochs' own time, within the trial's MLflow run.
        epochs = client.get_metric_history(child.info.run_id, "epoch_time_s")
        run_s = (child.info.end_time - child.info.start_time) / 1000
        assert sum(e.value for e in epochs) <= m["cost_wall_s"] <= run_s + 0.5
    for key in ("cost_device_hours", "cost_usd", "flops", "samples", "energy_j", "co2e_kg"):
        total = sum(c.data.metrics[key] for c in children)
        assert parent.data.metrics[key] == pytest.approx(total, rel=1e-9), key
    assert result.totals["device_hours"] == pytest.approx(parent.data.metrics["cost_device_hours"])
    # No GPU here: CPU trials' energy is codecarbon's estimate (carbon.py), emissions at the world average.
    assert result.totals["energy_j"] > 0
    assert result.totals["co2e_kg"] == pytest.approx(result.totals["energy_j"] / 3.6e6 * 0.475)
    assert result.totals["compute_saved_fraction"] == pytest.approx(1 - result.epochs_run / result.epochs_budget)
    assert 0 < result.totals["compute_saved_fraction"] < 1  # ASHA stopped some trials


def test_best_checkpoint_artifact_reproduces_the_test_metric(searched, tmp_path):
    import torch

    from raysweep.context import load_state
    from raysweep.tasks import resolve_task
    from raysweep.trial import trial_params

    spec, result, client, _ = searched
    local = client.download_artifacts(result.parent_run_id, "best_checkpoint", str(tmp_path))
    state = load_state(local)
    assert isinstance(state["model"]["0.weight"], torch.Tensor)
    assert state["epoch"] == result.best["epochs"]
    task = resolve_task(spec.task)
    metrics = task.evaluate(trial_params(spec, result.best["config"]), state, spec.seed)
    assert metrics["test_accuracy"] == pytest.approx(result.test_metrics["test_accuracy"])


def test_fifo_runs_every_trial_to_max_epochs(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{
        "name": "fifo", "max_epochs": 2, "scheduler.type": "fifo",
        "search.algorithm": "random", "search.num_samples": 3,
    }))
    result = run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    assert [t["epochs"] for t in result.trials] == [2, 2, 2]
    assert {t["status"] for t in result.trials} == {"finished"}
    assert result.epochs_run == result.epochs_budget == 6
    # Tune's per-trial log is result.json alone: its CSV and TensorBoard copies are off.
    for trial in result.trials:
        trial_dir = tmp_path / "fifo" / f"trial_{trial['trial_id']}"
        assert len((trial_dir / "result.json").read_text().splitlines()) == 2
        assert not list(trial_dir.glob("progress.csv")) and not list(trial_dir.glob("events.out.tfevents*"))


def test_max_mode_picks_the_highest_value(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{
        "name": "maxmode", "metric": "val_accuracy", "mode": "max", "max_epochs": 2,
        "search.num_samples": 3, "scheduler.type": "fifo",
    }))
    result = run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    assert result.best["value"] == max(t["value"] for t in result.trials)


def test_tracking_can_be_disabled(ray_session, tmp_path):
    spec = validate(make_raw(**{"name": "untracked", "max_epochs": 1, "search.num_samples": 2, "tracking.enabled": False}))
    result = run_search(spec, storage=str(tmp_path))
    assert result.parent_run_id is None and len(result.trials) == 2


def test_failing_trials_are_failed_runs_with_the_reason(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{
        "name": "broken", "task": "tests.user_tasks:missing_metric", "max_epochs": 2, "search.num_samples": 2,
    }))
    with pytest.raises(SearchFailed, match="got no 'val_loss'"):
        run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("broken").experiment_id])
    children = _children(runs)
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FAILED"
        assert "got no 'val_loss'" in run.data.tags["raysweep.error"]
    assert _parent(runs).info.status == "FAILED"


def test_search_logs_to_an_mlflow_server(ray_session, mlflow_server, tmp_path):
    """The team setup: a tracking server over HTTP instead of the embedded SQLite file."""
    spec = validate(make_raw(**{"name": "served", "max_epochs": 2, "search.num_samples": 3}))
    result = run_search(spec, storage=str(tmp_path), tracking_uri=mlflow_server)
    assert result.ui_url == f"{mlflow_server}/#/experiments/{result.experiment_id}/runs"
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([result.experiment_id])
    assert len(_children(runs)) == 3
    assert {a.path for a in client.list_artifacts(result.parent_run_id)} >= {"spec.yaml", "best_checkpoint"}


def test_report_reads_the_same_best_trial_and_totals_from_mlflow(searched, capsys):
    import json

    from raysweep.cli import main

    _, result, _, _ = searched
    assert main(["report", result.name, "--tracking-uri", result.tracking_uri, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parent_run_id"] == result.parent_run_id
    assert report["best"]["run_id"] == result.best["run_id"]
    assert report["best"]["value"] == pytest.approx(result.best["value"])
    for key, value in result.totals.items():
        assert report["totals"][key] == (None if value is None else pytest.approx(value)), key
    assert report["counts"]["finished"] + report["counts"]["stopped"] == len(result.trials)
    # The table form, by parent run id: leaderboard, totals and what early stopping saved.
    assert main(["report", result.parent_run_id, "--tracking-uri", result.tracking_uri, "--top", "3"]) == 0
    out = capsys.readouterr().out
    # Trials by the number the search's console said (the run's name), not Tune's id.
    best_row = next(line for line in out.splitlines() if line.startswith("│ 1 "))
    assert f"│ {result.best['number']:03d} " in best_row and result.best["trial_id"] not in out
    assert report["best"]["number"] == result.best["number"]
    assert "device-hours" in out and f"trials x max_epochs), {report['totals']['compute_saved_fraction']:.0%} saved" in out
    assert set(report["importances"]) == {"lr", "batch_size", "dropout"} and report["importance_epoch"] == 1
    top = next(iter(report["importances"]))  # the largest first, in the JSON and the printed line
    assert f"importance (val_loss at epoch 1, PED-ANOVA): {top} " in out
    if report["rungs"]:
        assert "rung audit" in out and all(-1 <= r["rho"] <= 1 for r in report["rungs"].values())


def test_report_on_an_unknown_search_is_one_line_and_exit_2(tracking_uri, capsys):
    from raysweep.cli import main
    from raysweep.tracking import Tracker

    Tracker(tracking_uri, "something-else")  # the store exists, the search does not
    assert main(["report", "no-such-search", "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment named 'no-such-search'" in err


def test_best_model_is_registered_and_reproduces_its_test_accuracy(searched):
    import mlflow
    import torch

    from raysweep.tasks.digits import digits_splits

    spec, result, client, runs = searched
    (version,) = client.search_model_versions(f"name='{spec.experiment}'")
    assert float(version.tags["test_accuracy"]) == pytest.approx(result.test_metrics["test_accuracy"])
    assert _parent(runs).data.tags["raysweep.model_uri"] == result.model_uri
    with using_tracking_uri(result.tracking_uri):  # not left set for the session's later tests
        model = mlflow.pytorch.load_model(f"models:/{spec.experiment}/{version.version}")
    x, y = digits_splits(spec.seed).test
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).double().mean().item()
    assert accuracy == pytest.approx(result.test_metrics["test_accuracy"], abs=1e-9)


def test_async_reports_let_asha_stop_a_trial_one_unreported_epoch_late(ray_session, tmp_path, mlflow_template):
    # And no trial loads the digits itself: the driver loaded them once and shared them; trials
    # run in the directory Ray started in, not Tune's trial folders (a task's relative paths work).
    from tests.user_tasks import reports_trained, working_dirs

    uri = fresh_store(tmp_path / "mlflow.db", mlflow_template)
    spec = validate(make_raw(**{"search.num_samples": 6, "scheduler.report": "async",
                                "task": "tests.user_tasks:CountsReports", "fixed.out_dir": str(tmp_path)}))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=uri)
    statuses = [t["status"] for t in result.trials]
    assert "stopped" in statuses and "finished" in statuses
    unreported = []
    for trial in result.trials:
        assert [h["epoch"] for h in trial["history"]] == list(range(1, trial["epochs"] + 1))
        trained = reports_trained(tmp_path, trial["config"]["lr"])
        if trial["status"] == "stopped":
            # It trained on while its last reported epoch was judged: at most one epoch, never
            # reported. Tune does not wait for that epoch to end (its process may stop first:
            # seen with both cores busy), so it may also be cut short.
            assert trial["epochs"] in (1, 3) and trained in (trial["epochs"], trial["epochs"] + 1)
            unreported.append(trained - trial["epochs"])
        else:
            assert trial["epochs"] == spec.max_epochs and trained == trial["epochs"]
        assert trial["metrics"]["loads"] == 0
    assert working_dirs(tmp_path) == {os.getcwd()}
    assert max(unreported) == 1  # the reports were asynchronous: some trial trained past its last report
    assert result.epochs_run == sum(t["epochs"] for t in result.trials)  # billed: what was reported
    assert result.best["metrics"]["val_accuracy"] > 0.8  # the shared splits are the digits, x with y
    assert result.model_uri and result.test_metrics["test_accuracy"] > 0.8
