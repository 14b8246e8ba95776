"""Several objectives: which trials are on the Pareto front, and which one's model is registered
(pareto.py). The search's own use of it is tested end to end in test_search.py."""

from __future__ import annotations

import itertools
import logging
import random

import pytest

from raysweep.book import FAILED, FINISHED, STOPPED, TrialBook, TrialRecord
from raysweep.pareto import candidates, choose, describe, front, objective_values
from raysweep.spec import CONFIRM_KEY, validate
from tests.conftest import fresh_store, make_raw


def _book(trials, **changes) -> TrialBook:
    """trials: (status, val_loss, cost_usd[, extra record fields]) in trial order."""
    spec = validate(make_raw(**{"metric": ["val_loss", "cost_usd"], "max_epochs": 9, **changes}))
    book = TrialBook(spec)
    for n, (status, loss, cost, *extra) in enumerate(trials, start=1):
        metrics = {k: v for k, v in (("val_loss", loss), ("cost_usd", cost)) if v is not None}
        rec = TrialRecord(f"t{n}", n, {"lr": 0.001 * n, "dropout": 0.1, "batch_size": 64}, status=status,
                          epochs=9 if status == FINISHED else 2, value=loss, metrics=metrics, run_id=f"run{n}",
                          **(extra[0] if extra else {}))
        book.records[rec.trial_id] = rec
    return book


def _dominates(a: list[float], b: list[float]) -> bool:  # both minimised
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def test_the_front_is_the_trials_no_other_trial_beats_on_both_objectives():
    book = _book([
        (FINISHED, 0.10, 0.050),  # best loss
        (FINISHED, 0.20, 0.020),
        (FINISHED, 0.25, 0.030),  # dominated by t2
        (STOPPED, 0.60, 0.004),  # a stopped trial is a cheap model: on the front
        (STOPPED, 0.70, 0.005),  # dominated by t4
        (FINISHED, 0.20, 0.020),  # the same values as t2: neither dominates, both on it
    ])
    assert [r.trial_id for r in front(book)] == ["t1", "t2", "t6", "t4"]  # best first objective first


def test_no_front_member_is_dominated_and_every_other_trial_is():
    rng = random.Random(0)
    book = _book([(rng.choice([FINISHED, STOPPED]), rng.random(), rng.random()) for _ in range(40)])
    members = front(book)
    values = {r.trial_id: objective_values(book.spec, r) for r in book.records.values()}
    for member, other in itertools.product(members, book.records.values()):
        assert not _dominates(values[other.trial_id], values[member.trial_id])
    on_front = {m.trial_id for m in members}
    for rec in (r for r in book.records.values() if r.trial_id not in on_front):
        assert any(_dominates(values[m.trial_id], values[rec.trial_id]) for m in members)


def test_failed_trials_retraining_runs_and_trials_missing_an_objective_are_not_candidates():
    book = _book([
        (FINISHED, 0.30, 0.030),
        (FAILED, 0.01, 0.001),
        (FINISHED, 0.02, None),  # never reported cost_usd
        (FINISHED, 0.01, 0.001, {"confirms": "t1"}),
    ])
    audit = book.records["t4"]
    audit.config[CONFIRM_KEY] = {"of": "t1", "kind": "audit"}
    assert [r.trial_id for r in candidates(book)] == ["t1"]


def test_the_chosen_member_has_the_best_first_objective_within_the_limits():
    trials = [(FINISHED, 0.10, 0.050), (FINISHED, 0.20, 0.020), (STOPPED, 0.60, 0.004)]
    book = _book(trials, limits={"cost_usd": 0.03})
    pareto = choose(book)
    assert pareto["chosen"] == "t2" and book.best().trial_id == "t2" and pareto["within_limits"]
    assert [m["trial_id"] for m in pareto["front"]] == ["t1", "t2", "t3"]
    assert pareto["front"][1] == {"trial_id": "t2", "number": 2, "run_id": "run2", "status": FINISHED, "epochs": 9,
                                  "val_loss": 0.20, "cost_usd": 0.020}
    unlimited = _book(trials)
    assert choose(unlimited)["chosen"] == "t1"  # no limits: the best first objective


def test_the_chosen_member_is_one_with_a_checkpoint_when_the_best_has_none():
    """A trial stopped while its first checkpoint was saved has values and nothing to load."""
    book = _book([(FINISHED, 0.10, 0.050), (FINISHED, 0.20, 0.020, {"checkpoint": "ckpt2"}),
                  (STOPPED, 0.60, 0.004, {"checkpoint": "ckpt3"})], limits={"cost_usd": 0.06})
    pareto = choose(book)
    assert [m["trial_id"] for m in pareto["front"]] == ["t1", "t2", "t3"]  # t1 stays on the front
    assert pareto["chosen"] == "t2" and book.best().trial_id == "t2" and pareto["within_limits"]


def test_a_max_objective_and_a_lower_bound():
    book = _book([(FINISHED, 0.10, 0.50), (FINISHED, 0.20, 0.90), (FINISHED, 0.30, 0.95), (FINISHED, 0.30, 0.10)],
                 mode=["min", "max"], limits={"cost_usd": 0.9})
    assert [r.trial_id for r in front(book)] == ["t1", "t2", "t3"]
    assert choose(book)["chosen"] == "t2"


def test_none_within_the_limits_chooses_the_best_first_objective_and_says_so(caplog):
    book = _book([(FINISHED, 0.10, 0.050), (FINISHED, 0.20, 0.020)], limits={"cost_usd": 0.001})
    with caplog.at_level(logging.WARNING):
        pareto = choose(book)
    assert pareto["chosen"] == "t1" and not pareto["within_limits"]
    text = describe(pareto)
    assert "warning: no member is within limits (cost_usd 0.001); chose the best val_loss" in text
    assert "trial 001 (finished, 9 epochs): val_loss 0.1 · cost_usd 0.05  <- chosen" in text


def test_no_candidate_no_choice():
    book = _book([(FAILED, None, None)])
    assert choose(book) is None and book.chosen is None


@pytest.mark.parametrize("changes, error", [
    ({"mode": ["min", "max"]}, "mode: 2 modes for 1 metric"),
    ({"metric": ["val_loss", "cost_usd"], "mode": ["min", "max", "min"]}, "mode: 3 modes for 2 metrics"),
    ({"metric": ["val_loss", "val_loss"]}, "metric: ['val_loss', 'val_loss'] names a metric twice"),
    ({"metric": []}, "metric: must name a metric, got an empty list"),
    ({"metric": ["val_loss", 3]}, "metric: must name a metric (or list two or more), got 3"),
    ({"limits": {"cost_usd": 1}}, "limits.cost_usd: bounds an objective the spec does not have; expected a second"),
    ({"metric": ["val_loss", "cost_usd"], "limits": {"val_loss": 1}}, "limits.val_loss: is the first objective"),
    ({"metric": ["val_loss", "cost_usd"], "limits": {"flops": 1}}, "limits.flops: bounds an objective the spec "
                                                                    "does not have; expected one of ['cost_usd']"),
    ({"metric": ["val_loss", "cost_usd"], "search.confirm": {}}, "search.confirm: chooses by the first objective"),
    ({"mode": ["min", "sideways"], "metric": ["a", "b"]}, "mode: 'sideways' is not allowed; expected 'min' or 'max'"),
])
def test_bad_objectives_are_refused_in_one_line_naming_the_key(changes, error):
    from raysweep.spec import SpecError

    with pytest.raises(SpecError) as exc:
        validate(make_raw(**changes))
    assert str(exc.value).startswith(error) and "\n" not in str(exc.value)


def test_objectives_written_as_lists_or_one_mode_for_all():
    spec = validate(make_raw(metric=["val_loss", "cost_usd"], mode="min"))
    assert spec.objectives == [("val_loss", "min"), ("cost_usd", "min")] and spec.multi_objective
    assert spec.rank_metric == "val_loss" and spec.rank_mode == "min"
    one = validate(make_raw(metric=["val_accuracy"], mode=["max"]))  # a one-item list is one objective
    assert one.metric == "val_accuracy" and one.mode == "max" and not one.multi_objective


# --------------------------------------------------------------------------- a real search


def test_a_two_objective_search_logs_its_pareto_front_and_registers_a_member(ray_session, tmp_path, capsys,
                                                                             mlflow_template):
    """digits_cnn over channels and hidden (and lr), val_loss against cost_usd: the front is
    tagged in MLflow, drawn on the parent, listed by `raysweep report`, and none of its members
    is dominated by another trial."""
    import json

    from mlflow import MlflowClient

    from raysweep.cli import main
    from raysweep.search import run_search
    from raysweep.spec import load_spec
    from tests.conftest import ROOT

    uri = fresh_store(tmp_path / "mlflow.db", mlflow_template)
    spec = load_spec(ROOT / "search_spaces" / "digits_cnn_pareto.yaml",
                     ["search.num_samples=10", "max_epochs=4", "scheduler.reduction_factor=2", "limits={}",
                      "tracking.view_images=true"])
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=uri)
    client = MlflowClient(uri)
    runs = client.search_runs([result.experiment_id], "tags.`raysweep.kind` = 'trial'", max_results=100)
    values = {r.info.run_id: [r.data.metrics["val_loss"], r.data.metrics["cost_usd"]] for r in runs}
    tagged = {r.info.run_id for r in runs if r.data.tags.get("raysweep.pareto") == "true"}

    assert len(runs) == 10 and len(tagged) >= 3
    assert tagged == {m["run_id"] for m in result.pareto["front"]}
    for member, other in itertools.product(tagged, values):
        assert not _dominates(values[other], values[member]), (member, other)
    for run_id in set(values) - tagged:  # everyone else is beaten by some member
        assert any(_dominates(values[m], values[run_id]) for m in tagged)
    # No limits: the registered model is the best val_loss of all, a member of the front.
    assert result.best["run_id"] in tagged and result.model_uri
    assert result.best["value"] == min(v[0] for v in values.values())

    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["metric"] == "val_loss,cost_usd" and parent.data.params["mode"] == "min,min"
    assert parent.data.metrics["pareto_size"] == len(tagged)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "views")}
    assert {"views/pareto_front.png", "views/search.html"} <= artifacts  # tracking.view_images: the PNGs too
    page = client.download_artifacts(result.parent_run_id, "views/search.html", str(tmp_path))
    assert 'id="pareto_front"' in open(page).read()
    logged = json.loads(open(client.download_artifacts(result.parent_run_id, "pareto.json", str(tmp_path))).read())
    assert logged["chosen"] == result.best["trial_id"] and len(logged["front"]) == len(tagged)

    capsys.readouterr()
    assert main(["report", result.name, "--tracking-uri", uri, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {t["run_id"] for t in report["front"]} == tagged
    assert report["objectives"] == [["val_loss", "min"], ["cost_usd", "min"]]
    assert main(["report", result.name, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert f"Pareto front of val_loss (min), cost_usd (min): {len(tagged)} trials" in out


def test_an_extended_search_untags_the_members_a_new_trial_pushed_off_the_front():
    book = _book([(FINISHED, 0.10, 0.050), (FINISHED, 0.20, 0.020)])
    assert choose(book)["left_front"] == [] and book.front == ["t1", "t2"]
    book.records["t3"] = TrialRecord("t3", 3, {"lr": 0.003, "dropout": 0.1, "batch_size": 64}, status=FINISHED,
                                     epochs=9, value=0.15, metrics={"val_loss": 0.15, "cost_usd": 0.010},
                                     run_id="run3")  # beats t2 on both
    pareto = choose(book)
    assert [m["trial_id"] for m in pareto["front"]] == ["t1", "t3"] and pareto["left_front"] == ["run2"]


def test_an_extended_searchs_summary_goes_to_its_parent_run_when_members_left_the_front(tracking_uri):
    """The runs of members pushed off the front are tagged, and the summary (best params,
    totals, the parent's end) still goes to the search's own run, not to the last of them."""
    import time

    from mlflow import MlflowClient

    from raysweep.search import _log_summary, _result
    from raysweep.tracking import Tracker

    book = _book([(FINISHED, 0.10, 0.050), (FINISHED, 0.20, 0.020)], name="extended-front")
    tracker = Tracker(tracking_uri, book.spec.experiment)
    book.parent_run_id = tracker.start_search(book.spec)
    for rec in book.records.values():
        rec.run_id = tracker.start_trial(book.parent_run_id, rec, rec.config)
        tracker.end_run(rec.run_id)
    choose(book)  # the first round's front: t1 and t2
    book.records["t3"] = TrialRecord("t3", 3, {"lr": 0.003, "dropout": 0.1, "batch_size": 64}, status=FINISHED,
                                     epochs=9, value=0.15, metrics={"val_loss": 0.15, "cost_usd": 0.010})
    book.records["t3"].run_id = tracker.start_trial(book.parent_run_id, book.records["t3"], {"lr": 0.003})
    tracker.end_run(book.records["t3"].run_id)
    pareto = choose(book)  # t3 beats t2 on both objectives
    result = _result(book.spec, book, tracker, time.monotonic(), tracking_uri, pareto=pareto, status="finished")
    _log_summary(tracker, book.spec, book, result, views=False)

    client = MlflowClient(tracking_uri)
    parent = client.get_run(book.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["pareto_size"] == 2
    assert parent.data.tags["raysweep.best_trial_id"] == book.best().trial_id
    t2 = client.get_run(book.records["t2"].run_id)
    assert t2.data.tags["raysweep.pareto"] == "false" and "pareto_size" not in t2.data.metrics
    assert client.get_run(book.records["t3"].run_id).data.tags["raysweep.pareto"] == "true"
