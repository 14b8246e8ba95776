"""The MLflow callback's writer thread (tracking/writer.py): Tune's loop hands writes over and
goes on; they are made in order, and what one raised reaches the loop."""

from __future__ import annotations

import threading

import pytest

from raysweep.tracking.writer import Writer


def test_writes_are_made_in_order_on_one_thread_that_is_not_the_callers():
    writer, made = Writer(), []
    for i in range(50):
        writer.submit(lambda i=i: made.append((i, threading.current_thread().name)))
    writer.drain()
    assert [i for i, _ in made] == list(range(50))
    assert {name for _, name in made} == {"raysweep-mlflow-writer"}


def test_an_error_is_raised_once_in_the_callers_thread_and_later_writes_wait_for_it():
    writer, made = Writer(), []

    def refused():
        raise RuntimeError("disk I/O error")

    writer.submit(refused)
    writer.submit(lambda: made.append("skipped"))  # handed over before the loop heard of the error
    with pytest.raises(RuntimeError, match="disk I/O error"):
        writer.drain()
    assert made == []
    writer.submit(lambda: made.append("after"))  # raised once: the writer goes on
    writer.drain()
    assert made == ["after"]


def test_draining_a_writer_that_never_wrote_starts_no_thread():
    writer = Writer()
    writer.drain()
    assert writer._thread is None


def test_a_trials_report_is_not_held_up_by_a_slow_mlflow(tracking_uri):
    """Tune's loop calls the callback and goes on while MLflow is still writing: the write
    below waits for the test to release it, which it does only after the report returned."""
    from tests.test_tracking import _one_trial

    tracker, book, callback, trial = _one_trial(tracking_uri)
    release, log_points, waited = threading.Event(), tracker.log_points, []

    def slow_log_points(*args, **kwargs):
        waited.append(release.wait(timeout=30))  # False: the report waited for this write
        log_points(*args, **kwargs)

    tracker.log_points = slow_log_points
    book.on_trial_result(0, [], trial, {"epoch": 1, "val_loss": 0.5})
    callback.on_trial_result(0, [], trial, {})  # the first epoch is written at once: by the writer
    release.set()
    callback.drain()
    assert waited == [True]
    run_id = book.records["t1"].run_id
    assert [m.value for m in tracker.client.get_metric_history(run_id, "val_loss")] == [0.5]
    assert book.records["t1"].logged_epoch == 1
