"""Progress output: the driver's warning when a worker group's epochs are shorter than Ray
Train's poll. (The status line and leaderboard are checked through searches in test_search.)"""

from __future__ import annotations

import io
import pickle
import time
from types import SimpleNamespace

from rich.console import Console

from raysweep.book import FAILED
from raysweep.progress import QuietTrialWarning, SlowPollWarning


def _results(warning, trial_id, *epoch_times):
    for epoch_s in epoch_times:
        warning.on_trial_result(0, [], SimpleNamespace(trial_id=trial_id), {"epoch_time_s": epoch_s})


def test_slow_poll_warning_speaks_once_after_three_short_epochs_of_one_trial():
    out = io.StringIO()
    warning = SlowPollWarning(0.25, Console(file=out, width=300))
    _results(warning, "a", 0.1, 0.1, 0.5, 0.1, 0.1)  # a longer epoch starts the count again
    _results(warning, "b", 0.1, 0.1)  # counted per trial
    _results(warning, "c", 0.3, 0.4, 0.3, 0.3)  # longer than the poll: nothing to say
    warning.on_trial_result(0, [], SimpleNamespace(trial_id="d"), {"val_loss": 1.0})  # no epoch_time_s
    assert out.getvalue() == ""
    _results(warning, "a", 0.07)
    _results(warning, "b", 0.1, 0.1)
    text = out.getvalue()
    assert text.count("warning:") == 1
    assert ("epochs take 0.07 s, less than Ray Train's poll interval (0.25 s, resources.poll_interval_s): "
            "each waits for the next poll; set it below the epoch time") in text


def test_slow_poll_warning_shows_an_epoch_just_under_the_poll_as_under_it():
    """It said 'epochs take 0.05 s, less than Ray Train's poll interval (0.05 s ...)'."""
    out = io.StringIO()
    warning = SlowPollWarning(0.05, Console(file=out, width=300))
    _results(warning, "a", 0.0483, 0.0483, 0.0483)
    assert "epochs take 0.0483 s, less than Ray Train's poll interval (0.05 s," in out.getvalue()


def test_slow_poll_warning_travels_with_tune_experiment_state():
    warning = SlowPollWarning(0.5, Console(file=io.StringIO()))
    _results(warning, "a", 0.1)
    restored = pickle.loads(pickle.dumps(warning))  # Tune pickles callbacks; a console doesn't travel
    assert restored.poll_s == 0.5 and restored._short == {"a": 1} and restored.console is not None


def test_the_leaderboard_title_counts_the_rows_it_shows():
    """A search of 4 trials said "top 5 of 4 trials"."""
    from raysweep.book import TrialBook
    from raysweep.progress import leaderboard
    from raysweep.spec import validate
    from tests.conftest import make_raw

    book = TrialBook(validate(make_raw(name="few")))
    for n in range(4):
        trial = SimpleNamespace(trial_id=f"t{n}", config={"lr": 0.01}, checkpoint=None)
        book.on_trial_start(0, [], trial)
        book.on_trial_result(0, [], trial, {"epoch": 1, "val_loss": 1.0 + n})
    assert leaderboard(book).title == "top 4 of 4 trials by val_loss (min)"
    assert leaderboard(book, top=2).title == "top 2 of 4 trials by val_loss (min)"
    # A failed trial is one of the search's trials, but not a row: "top 5 of 5" showed 4.
    failed = SimpleNamespace(trial_id="t4", config={"lr": 0.01}, checkpoint=None)
    book.on_trial_start(0, [], failed)
    book.on_trial_result(0, [], failed, {"epoch": 1, "val_loss": 0.5})
    book.records["t4"].status = FAILED
    assert leaderboard(book).title == "top 4 of 5 trials by val_loss (min)" and leaderboard(book).row_count == 4


def test_a_failed_trial_gets_one_line_naming_its_error_and_where_its_traceback_is():
    """Tune printed 40-odd lines of Ray's traceback per failed trial between the status lines."""
    from raysweep.book import TrialBook
    from raysweep.progress import ProgressCallback
    from raysweep.spec import validate
    from tests.conftest import make_raw

    book = TrialBook(validate(make_raw(name="fails")))
    out = io.StringIO()
    progress = ProgressCallback(book, Console(file=out, width=300))
    for n, (epochs, run_id) in enumerate([(1, "run-a"), (0, None)]):
        trial = SimpleNamespace(trial_id=f"t{n}", config={"lr": 0.01}, checkpoint=None)
        book.on_trial_start(0, [], trial)
        for epoch in range(1, epochs + 1):
            book.on_trial_result(0, [], trial, {"epoch": epoch, "val_loss": 1.0})
        rec = book.records[trial.trial_id]
        # What the book's own on_trial_error (callback 0) read from Tune's error files.
        rec.status, rec.error, rec.run_id = FAILED, "NonFiniteLoss: train_loss became nan at epoch [2]", run_id
        progress.on_trial_error(0, [], trial)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("trial ")]
    assert lines == [
        "trial 001 failed after 1 epoch: NonFiniteLoss: train_loss became nan at epoch [2]; "
        "traceback: error/traceback.txt in its MLflow run",
        "trial 002 failed after 0 epochs: NonFiniteLoss: train_loss became nan at epoch [2]",  # no MLflow
    ]


def test_a_running_trial_silent_for_minutes_is_named_once_per_silence():
    """Tune has no trial timeout: a hung trial held its search with nothing said but the clock."""
    out, now = io.StringIO(), [0.0]
    book = SimpleNamespace(records={t: SimpleNamespace(number=n) for t, n in (("a", 3), ("b", 4), ("c", 5))})
    warning = QuietTrialWarning(book, quiet_s=600, console=Console(file=out, width=300), clock=lambda: now[0])
    a, b, c = (SimpleNamespace(trial_id=t, status="RUNNING") for t in "abc")
    for trial in (a, b, c):
        warning.on_trial_start(0, [], trial)
    now[0] = 300
    warning.on_trial_result(0, [], b, {"epoch_time_s": 40.0})  # long epochs: named after 20 of them, 800 s
    warning.on_trial_complete(0, [], c)  # ended: never named
    now[0] = 599
    warning.on_step_end(0, [a, b, c])
    assert out.getvalue() == ""
    now[0] = 600
    warning.on_step_end(0, [a, b, c])
    now[0] = 900
    warning.on_step_end(0, [a, b, c])  # the same silence: not again
    lines = out.getvalue().splitlines()
    assert lines == ["warning: trial 003 has reported nothing for 10 min (it has reported no epoch yet): if it "
                     "hangs, Ctrl-C stops the run; a search's --resume continues that trial from its last checkpoint"]
    now[0] = 1100
    warning.on_step_end(0, [a, b, c])
    assert out.getvalue().splitlines()[-1].startswith(
        "warning: trial 004 has reported nothing for 13 min (its longest epoch took 40 s)")
    warning.on_trial_result(0, [], a, {"epoch_time_s": 1.0})  # a speaks: a new silence may be named
    now[0] = 1700
    warning.on_step_end(0, [a, b, c])
    assert len(out.getvalue().splitlines()) == 3 and "trial 003" in out.getvalue().splitlines()[-1]
    restored = pickle.loads(pickle.dumps(warning))  # Tune pickles callbacks: this process's times stay here
    assert restored._heard == {} and restored.clock is time.monotonic and restored.quiet_s == 600
