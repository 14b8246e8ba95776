"""The searcher tells Optuna what happened to each trial, and keeps TPE's start-up random trials
to the number it asked for. Tune's calls are made here as Tune makes them, on a real study."""

from __future__ import annotations

import math

from optuna.trial import TrialState

from raysweep.book import FINISHED, STOPPED, TrialRecord
from raysweep.searcher import SweepSearch
from raysweep.spec import validate
from tests.conftest import make_raw


def _spec(**changes):
    return validate(make_raw(**{"max_epochs": 9, **changes}))


def _run(searcher: SweepSearch, trial_id: str, values: list[float], *, error: bool = False) -> None:
    """A trial as Tune drives it: suggested, one result per epoch, then completed. The result
    its scheduler stops it at (ASHA's rung, max_epochs) Tune gives only to on_trial_complete."""
    assert searcher.suggest(trial_id) is not None
    results = [{"val_loss": v, "epoch": e, "training_iteration": e} for e, v in enumerate(values, start=1)]
    for result in results[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result=None if error else results[-1], error=error)


def test_a_stopped_trial_is_pruned_at_its_epoch_and_a_finished_one_complete():
    searcher = SweepSearch(_spec(**{"search.algorithm": "random"}))
    _run(searcher, "stopped", [0.9, 0.5, 0.4])  # ASHA stopped it at epoch 3 of 9
    _run(searcher, "finished", [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.48, 0.47, 0.46])
    _run(searcher, "crashed", [0.9], error=True)
    stopped, finished, crashed = searcher.study.trials
    # Tune's own OptunaSearch would say COMPLETE with 0.4: a 3-epoch loss ranked as a final one.
    assert stopped.state == TrialState.PRUNED and stopped.value == 0.4
    assert stopped.intermediate_values == {1: 0.9, 2: 0.5, 3: 0.4}
    assert finished.state == TrialState.COMPLETE and finished.value == 0.46 and finished.last_step == 9
    assert crashed.state == TrialState.FAIL


def test_intermediate_values_are_keyed_by_epoch_and_a_restart_does_not_repeat_them():
    """A trial restarted from an older checkpoint reports its lost epochs again, with Tune's
    `training_iteration` running on: Optuna gets each epoch once, the first value."""
    searcher = SweepSearch(_spec(**{"search.algorithm": "random"}))
    assert searcher.suggest("t") is not None
    for iteration, (epoch, value) in enumerate([(1, 0.9), (2, 0.8), (3, 0.7), (2, 0.85), (3, 0.75), (4, 0.6)], 1):
        searcher.on_trial_result("t", {"val_loss": value, "epoch": epoch, "training_iteration": iteration})
    searcher.on_trial_complete("t", result={"val_loss": 0.6, "epoch": 4, "training_iteration": 6})
    (trial,) = searcher.study.trials
    assert trial.intermediate_values == {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6} and trial.state == TrialState.PRUNED


def test_tpe_start_up_trials_are_not_flooded_by_concurrency():
    """TPE samples at random until n_startup_trials have finished; with 4 running at once, Tune
    would be handed 3 random trials beyond those. The searcher waits for them instead."""
    searcher = SweepSearch(_spec(**{"search.n_startup_trials": 3}))
    assert all(searcher.suggest(f"s{i}") is not None for i in range(3))
    assert searcher.suggest("early") is None  # Tune asks again later
    assert searcher.suggest("early") is None
    for i in range(2):
        searcher.on_trial_result(f"s{i}", {"val_loss": 0.5 + i, "epoch": 1})
        searcher.on_trial_complete(f"s{i}", result={"val_loss": 0.5 + i, "epoch": 1})  # pruned: counts
    assert searcher.suggest("early") is None
    searcher.on_trial_complete("s2", result=None, error=True)  # a failed one leaves TPE short of 3
    assert searcher.suggest("random-again") is not None  # so one more start-up trial is sampled
    assert searcher.suggest("modelled") is None
    searcher.on_trial_result("random-again", {"val_loss": 0.2, "epoch": 9})
    searcher.on_trial_complete("random-again", result={"val_loss": 0.2, "epoch": 9})
    assert searcher.suggest("modelled") is not None
    assert searcher.suggest("modelled-too") is not None  # past start-up, concurrency is the limiter's
    states = [t.state for t in searcher.study.trials]
    assert states.count(TrialState.RUNNING) == 2 and len(states) == 6


def test_random_search_has_no_start_up_phase_to_wait_for():
    searcher = SweepSearch(_spec(**{"search.algorithm": "random", "search.n_startup_trials": 2}))
    assert all(searcher.suggest(f"t{i}") is not None for i in range(5))


def test_an_extended_search_puts_earlier_trials_in_the_study_as_they_ended():
    spec = _spec(**{"search.algorithm": "random"})

    def rec(n, status, values, config_lr):
        history = [(float(e), e, v, 0.0) for e, v in enumerate(values, start=1)]
        return TrialRecord(trial_id=f"t{n}", number=n, config={"lr": config_lr, "dropout": 0.1, "batch_size": 64},
                           status=status, epochs=len(values), value=values[-1] if values else None, history=history)

    prior = {r.trial_id: r for r in [
        rec(1, FINISHED, [0.9] * 8 + [0.3], 0.01), rec(2, STOPPED, [0.8, 0.6], 0.02),
        rec(3, "failed", [0.7], 0.03), rec(4, STOPPED, [math.nan], 0.04),
    ]}
    searcher = SweepSearch(spec, round_no=1, prior=prior)
    finished, stopped = searcher.study.trials  # the failed one and the one with no finite value: out
    assert finished.state == TrialState.COMPLETE and finished.value == 0.3 and finished.params["lr"] == 0.01
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {1: 0.8, 2: 0.6}
    assert searcher.suggest("next") is not None and len(searcher.study.trials) == 3


def test_an_extended_search_counts_each_configuration_once_and_an_audited_one_as_it_ended():
    from ray.tune.schedulers import ASHAScheduler

    from raysweep.book import TrialBook
    from raysweep.ray_internals import asha_rungs
    from raysweep.resume import seed_asha
    from raysweep.spec import CONFIRM_KEY

    spec = _spec(**{"search.algorithm": "random"})
    book = TrialBook(spec)

    def add(trial_id, status, values, lr, retrain=None):
        config = {"lr": lr, "dropout": 0.1, "batch_size": 64, **({CONFIRM_KEY: retrain} if retrain else {})}
        book.records[trial_id] = TrialRecord(
            trial_id, len(book.records) + 1, config, status=status, epochs=len(values), value=values[-1],
            history=[(float(e), e, v, 0.0) for e, v in enumerate(values, start=1)],
            confirms=(retrain or {}).get("of"))

    add("t1", FINISHED, [0.9] * 8 + [0.3], 0.01)
    add("t2", STOPPED, [0.8], 0.02)
    add("t3", STOPPED, [0.7], 0.03)
    add("c1", FINISHED, [0.9] * 8 + [0.1], 0.01, {"of": "t1", "seed": 7})  # search.confirm's run of t1
    add("a2", FINISHED, [0.8, 0.5] + [0.4] * 6 + [0.2], 0.02, {"of": "t2", "seed": 1, "kind": "audit"})
    add("a3", "failed", [0.7, 0.6], 0.03, {"of": "t3", "seed": 2, "kind": "audit"})  # never reached the end

    prior = book.searched()
    searcher = SweepSearch(spec, round_no=1, prior=prior)
    t1, t2, t3 = searcher.study.trials  # three configurations, each once
    assert t1.state == TrialState.COMPLETE and t1.value == 0.3  # not also c1's 0.1 under another seed
    # t2 as its audit ended: complete at max_epochs, every epoch, where ASHA had it pruned at 1.
    assert t2.state == TrialState.COMPLETE and t2.value == 0.2 and t2.params["lr"] == 0.02
    assert len(t2.intermediate_values) == 9 and t2.intermediate_values[1] == 0.8
    assert t3.state == TrialState.PRUNED and t3.intermediate_values == {1: 0.7}
    scheduler = ASHAScheduler(metric="val_loss", mode="min", time_attr="epoch", max_t=9, grace_period=1,
                              reduction_factor=3)
    seed_asha(scheduler, prior)
    # ASHA keeps each rung's values negated when it minimises.
    assert {m: sorted(-v for v in r.values()) for m, r in asha_rungs(scheduler)} == {
        9: [0.2, 0.3], 3: [0.4, 0.9], 1: [0.7, 0.8, 0.9]}


def test_fixed_configs_are_suggested_once_each_in_order_and_survive_a_save(tmp_path):
    from ray.tune.search import Searcher

    from raysweep.searcher import FixedConfigs

    searcher = FixedConfigs([{"lr": 1}, {"lr": 2}, {"lr": 3}])
    assert searcher.suggest("a") == {"lr": 1}
    searcher.save(str(tmp_path / "state"))
    restored = FixedConfigs([])
    restored.restore(str(tmp_path / "state"))
    assert [restored.suggest("b"), restored.suggest("c"), restored.suggest("d")] == [{"lr": 2}, {"lr": 3},
                                                                                    Searcher.FINISHED]


# --------------------------------------------------------------------------- several objectives


def _two_objectives(**changes):
    return _spec(**{"search.algorithm": "random", "metric": ["val_loss", "cost_usd"], **changes})


def test_with_two_objectives_a_finished_trial_is_complete_with_both_values_and_a_stopped_one_pruned():
    searcher = SweepSearch(_two_objectives())
    assert searcher.study.directions[1].name == "MINIMIZE" and len(searcher.study.directions) == 2

    def run(trial_id, epochs, cost=0.01, **extra):
        assert searcher.suggest(trial_id) is not None
        for e in range(1, epochs):
            searcher.on_trial_result(trial_id, {"val_loss": 1.0 / e, "cost_usd": cost * e, "epoch": e})
        searcher.on_trial_complete(trial_id, result={"val_loss": 1.0 / epochs, "cost_usd": cost * epochs,
                                                     "epoch": epochs, **extra})

    run("finished", 9)
    run("stopped", 3)  # ASHA stopped it on val_loss at epoch 3 of 9
    run("no-cost", 9, cost_usd=math.nan)  # finished without a finite second objective
    finished, stopped, no_cost = searcher.study.trials
    assert finished.state == TrialState.COMPLETE and finished.values == [1.0 / 9, 0.09]
    assert stopped.state == TrialState.PRUNED and stopped.values is None
    # Tune's own searcher would fail to tell Optuna and leave it RUNNING for good.
    assert no_cost.state == TrialState.FAIL
    assert searcher.suggest("next") is not None


def test_with_two_objectives_an_extended_search_adds_earlier_trials_without_intermediate_values():
    spec = _two_objectives()
    config = {"lr": 0.01, "dropout": 0.1, "batch_size": 64}
    prior = {
        "a": TrialRecord("a", 1, config, status=FINISHED, epochs=9, value=0.3,
                         metrics={"val_loss": 0.3, "cost_usd": 0.02}, history=[(1.0, 9, 0.3, 0.0)]),
        "b": TrialRecord("b", 2, config, status=STOPPED, epochs=1, value=0.8,
                         metrics={"val_loss": 0.8, "cost_usd": 0.002}, history=[(1.0, 1, 0.8, 0.0)]),
        "c": TrialRecord("c", 3, config, status=FINISHED, epochs=9, value=0.2, metrics={"val_loss": 0.2},
                         history=[(1.0, 9, 0.2, 0.0)]),  # no cost: left out
    }
    searcher = SweepSearch(spec, round_no=1, prior=prior)
    finished, stopped = searcher.study.trials
    assert finished.state == TrialState.COMPLETE and finished.values == [0.3, 0.02]
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {}
