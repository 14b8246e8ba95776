"""search.budget: what is spent and committed, the decisions to start a trial or let one past a
rung, and a real search that ends on its budget, FINISHED, with the spend in MLflow."""

from __future__ import annotations

import io
import math
import time

import pytest
from mlflow import MlflowClient
from rich.console import Console

from raysweep.book import FINISHED as DONE, RUNNING, STOPPED, TrialBook, TrialRecord
from raysweep.budget import FINISHED, START, WAIT, Budget, milestones
from raysweep.errors import SpecError
from raysweep.search import run_search
from raysweep.spec import validate
from tests.conftest import make_raw


def _spec(**changes):
    return validate(make_raw(**{"max_epochs": 9, "scheduler.grace_period": 1, "scheduler.reduction_factor": 3,
                                **changes}))


def _book(spec, *trials) -> TrialBook:
    """A book holding trials as (status, epochs, usd so far)."""
    book = TrialBook(spec)
    for n, (status, epochs, usd) in enumerate(trials):
        rec = TrialRecord(trial_id=f"t{n}", number=n + 1, config={}, status=status, epochs=epochs)
        if epochs:
            rec.metrics = {"cost_usd": usd, "cost_device_hours": usd / 10, "cost_wall_s": epochs * 2.0}
        book.records[rec.trial_id] = rec
    return book


# -- the spec


def _uncounted(**changes) -> dict:
    raw = make_raw(**changes)
    del raw["search"]["num_samples"]
    return raw


def test_a_budget_needs_a_limit_and_makes_the_trial_count_a_cap():
    assert validate(_uncounted()).search.samples == 32  # no budget: the default count
    spec = validate(_uncounted(**{"search.budget": {"usd": 5}}))
    assert spec.search.samples is None and spec.search.budget.limits == {"usd": 5.0}
    capped = validate(make_raw(**{"search.budget": {"epochs": 480, "wall_s": 600}, "search.num_samples": 40}))
    assert capped.search.samples == 40 and capped.search.budget.limits == {"epochs": 480.0, "wall_s": 600.0}
    for bad, says in [({}, "set at least one of epochs, device_hours, usd, wall_s"),
                      ({"usd": 0}, "greater than 0"), ({"epochs": 1.5}, "epochs"), ({"dollars": 5}, "dollars")]:
        with pytest.raises(SpecError, match=says):
            validate(make_raw(**{"search.budget": bad}))


def test_rungs_are_where_asha_decides_and_fifo_decides_only_at_the_end():
    assert milestones(_spec()) == [1, 3, 9]
    assert milestones(_spec(**{"max_epochs": 20, "scheduler.grace_period": 2, "scheduler.reduction_factor": 2})) \
        == [2, 4, 8, 16, 20]
    assert milestones(_spec(**{"scheduler.type": "fifo"})) == [9]


# -- the decisions


def test_a_trial_starts_only_when_its_first_rung_fits_beside_what_the_others_are_committed_to():
    spec = _spec(**{"search.budget": {"usd": 10}})
    # t0 ran 3 epochs at $1 each and goes on to rung 9: committed to 6 more, $6. Spent $3.
    book = _book(spec, (RUNNING, 3, 3.0))
    budget = Budget(spec, book)
    assert budget.spent("usd") == 3.0 and budget.committed("usd") == 6.0
    assert budget.may_start("new") == START  # $3 + $6 + 1 epoch at $1 = $10: fits
    assert budget.may_start("another") == WAIT  # the admitted one is committed to $1 too
    budget.admitted.clear()
    book.records["t0"].status = STOPPED  # ASHA stopped it: its commitment is gone
    assert budget.may_start("new") == START
    # Nothing running, and not one epoch fits: the search ends, saying why.
    budget = Budget(spec, _book(spec, (DONE, 9, 9.5)))
    assert budget.may_start("new") == FINISHED and budget.reached == "usd"


def test_until_an_epoch_is_priced_trials_start_one_at_a_time():
    spec = _spec(**{"search.budget": {"usd": 10, "epochs": 100}})
    book = _book(spec)
    budget = Budget(spec, book)
    assert budget.may_start("first") == START
    assert budget.may_start("second") == WAIT  # "first" has not reported an epoch
    book.records.update(_book(spec, (RUNNING, 1, 0.5)).records)
    budget.admitted.clear()
    assert budget.may_start("second") == START
    # An epochs budget alone is priced from the start.
    spec = _spec(**{"search.budget": {"epochs": 20}})
    budget = Budget(spec, _book(spec))
    assert budget.may_start("a") == START and budget.may_start("b") == START


def test_at_a_rung_a_trial_goes_on_only_if_its_next_rung_fits():
    spec = _spec(**{"search.budget": {"usd": 10}})
    book = _book(spec, (RUNNING, 2, 2.0), (RUNNING, 1, 1.0))
    budget = Budget(spec, book)
    # t0 reports epoch 3 (a rung; the book has 2): spent $3 + $1 unbooked = $4, t1 committed to
    # 2 more epochs ($2); 6 more epochs of t0 ($6) would make $12.
    assert not budget.may_continue("t0", {"epoch": 3})
    # Between rungs nothing is decided; below a limit nothing is cut.
    assert budget.may_continue("t1", {"epoch": 2})
    # With t1 gone, t0's 6 epochs to rung 9 fit exactly: $3 + $1 + $6 = $10.
    book.records["t1"].status = STOPPED
    book.records["t1"].metrics["cost_usd"] = 0.0
    assert budget.may_continue("t0", {"epoch": 3})


def test_a_reached_limit_stops_everything_and_says_which():
    spec = _spec(**{"search.budget": {"epochs": 10, "wall_s": 3600}})
    book = _book(spec, (DONE, 9, 1.0), (RUNNING, 1, 0.1))
    budget = Budget(spec, book)
    assert budget.exhausted() and budget.reached == "epochs"
    assert budget.summary().startswith("budget spent: 10 of 10 epochs, ")
    assert budget.summary().endswith(" of 3.6e+03 s; epochs reached, the search ended there")
    spec = _spec(**{"search.budget": {"wall_s": 5}})
    book = _book(spec)
    book.started = time.monotonic() - 6
    assert Budget(spec, book).exhausted()


def test_the_forecast_says_the_limits_then_what_the_measured_epochs_buy():
    spec = _spec(**{"search.budget": {"usd": 10, "epochs": 100}})
    book = _book(spec)
    budget = Budget(spec, book)
    assert budget.forecast(None, 9) == "budget: 100 epochs, $10, the first reached ends the search"
    assert budget.forecast(16, 9).endswith("at most 16 trials x 9 epochs (search.num_samples)")
    assert budget.estimate() is None
    book.records.update(_book(spec, (RUNNING, 2, 0.2)).records)
    assert budget.estimate() is None  # 2 epochs, the first with its process's start: too few
    book.records.update(_book(spec, (RUNNING, 4, 0.2), (DONE, 1, 0.1)).records)
    # $0.3 over 5 epochs: $0.06 an epoch; $9.7 left buys 161 epochs, the 95 epochs left fewer.
    assert budget.estimate() == ("budget forecast (over 5 epochs): an epoch costs $0.06; the rest buys about "
                                 "95 more epochs (epochs runs out first)")


# -- a real search


def test_a_search_ends_on_its_budget_finished_within_an_epoch_of_it(ray_session, tmp_path, tracking_uri):
    # $1 per CPU-second: a digits epoch (plus its trial's start) costs cents to dollars here.
    spec = validate(_uncounted(**{"name": "budgeted", "max_epochs": 4, "search.budget": {"usd": 6},
                                "search.max_concurrent": 2, "cost.cpu_hour_usd": 3600}))
    out = io.StringIO()
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri,
                        console=Console(file=out, width=300))
    lines = out.getvalue().splitlines()
    assert lines[0] == "budget: $6, the first reached ends the search"  # before anything ran
    assert any(line.startswith("budget forecast (over ") for line in lines)
    assert result.status == "finished" and result.best is not None and result.budget["reached"] == "usd"
    spent = result.budget["spent"]["usd"]
    # Within one epoch of the cap: each trial's costliest epoch bounds what one epoch can add.
    epoch_cost = max(t["metrics"]["cost_usd"] / t["epochs"] for t in result.trials)
    assert 6 - 2 * epoch_cost <= spent <= 6 + epoch_cost
    assert math.isclose(spent, sum(t["metrics"]["cost_usd"] for t in result.trials))
    parent = MlflowClient(tracking_uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["raysweep.budget_reached"] == "usd"
    assert parent.data.params["search.budget.usd"] == "6.0"
    assert parent.data.params["search.num_samples"] == "until the budget is spent"
    assert math.isclose(parent.data.metrics["cost_usd"], spent) and parent.data.metrics["budget_spent_usd"] == spent
    assert "raysweep.model_uri" in parent.data.tags  # an orderly end: the best model is logged


def test_an_epochs_budget_is_never_crossed(ray_session, tmp_path):
    raw = {"name": "epoch-budget", "max_epochs": 4, "search.budget": {"epochs": 14}, "search.num_samples": 50,
           "search.max_concurrent": 3, "tracking.enabled": False}
    spec = validate(make_raw(**raw))
    result = run_search(spec, storage=str(tmp_path / "results"), console=Console(file=io.StringIO()))
    assert result.status == "finished" and result.epochs_run <= 14 and result.budget["reached"] == "epochs"
    assert result.epochs_run >= 14 - 3  # nothing fitted beside the trials committed at the end
    assert len(result.trials) < 50

    # Ended on its budget, the search has run all it meant to: --resume alone has nothing to do,
    # and more trials need more budget (it spans every round). Raised, it grows from the book
    # the search ended with: the trials the budget cut off ended, none is picked up again.
    storage = str(tmp_path / "results")
    with pytest.raises(SpecError, match=f"already ran all its {len(result.trials)} trials"):
        run_search(spec, storage=storage, resume=True, console=Console(file=io.StringIO()))
    with pytest.raises(SpecError, match=r"^--samples \+2: search 'epoch-budget' has spent its search.budget "
                                        r"\(1\d of 14 epochs\): raise search.budget.epochs \(--set search.budget.epochs=...\)"):
        run_search(spec, storage=storage, resume=True, more_samples=2, console=Console(file=io.StringIO()))
    raised = validate(make_raw(**{**raw, "search.budget": {"epochs": 40}}))
    grown = run_search(raised, storage=storage, resume=True, more_samples=2, console=Console(file=io.StringIO()))
    assert len(grown.trials) == len(result.trials) + 2 and "running" not in {t["status"] for t in grown.trials}
    assert grown.epochs_run <= 40 and grown.epochs_run - result.epochs_run <= 2 * 4


def test_a_search_that_confirms_its_winner_keeps_room_for_it():
    """search.confirm's runs (top_k x seeds x max_epochs epochs) are paid from the budget too:
    sampling stops early enough to leave them room, which is theirs once they start."""
    spec = _spec(**{"search.budget": {"epochs": 30}, "search.confirm": {"top_k": 1, "seeds": 2}})
    book = _book(spec, (DONE, 9, 0.0), (STOPPED, 1, 0.0))  # 10 spent; 18 kept for 2 x 9
    budget = Budget(spec, book)
    assert budget.reserve == 18
    assert budget.may_start("new") == START  # 10 + 18 + 1 = 29
    budget.admitted.clear()
    book.records["t1"].epochs = 3
    assert budget.may_start("new") == FINISHED and budget.reached == "epochs"  # 12 + 18 + 1 > 30
    budget.reserve = 0  # confirmation starts: the room is its own
    assert budget.crossed_by(9) is None
