"""A second Ctrl-C never cuts a call to a SQLite MLflow store in half: it is raised as the call
ends, and the store stays writable for the writes that end the runs KILLED."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow import MlflowClient
from sqlalchemy import event

from raysweep.interrupt import Interrupt
from raysweep.tracking.tracker import Tracker
from raysweep.uninterrupted import interrupt_now, uninterrupted


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the handler runs in this thread at its next instruction: well before this ends


def test_a_ctrl_c_inside_the_block_is_raised_as_the_outermost_block_ends():
    reached = []
    with Interrupt(), pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            with uninterrupted():
                _ctrl_c()
                reached.append("inner")
            reached.append("outer")
    assert reached == ["inner", "outer"]
    with Interrupt(), pytest.raises(KeyboardInterrupt):  # nothing left pending: the next is at once
        _ctrl_c()
        reached.append("after")
    assert reached == ["inner", "outer"]


def test_outside_a_block_it_is_raised_at_once():
    with pytest.raises(KeyboardInterrupt):
        interrupt_now()
    with uninterrupted():  # and nothing waits for this block
        pass


def test_a_ctrl_c_during_a_sqlite_write_lets_it_finish_and_the_store_stays_writable(tracking_uri):
    tracker = Tracker(tracking_uri, "halt")
    run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
    engine = tracker.client.client._tracking_client.store.engine
    fired = []

    def ctrl_c_in_the_insert(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO metrics") and not fired:
            fired.append(statement)
            _ctrl_c()

    event.listen(engine, "before_cursor_execute", ctrl_c_in_the_insert)
    with Interrupt(), pytest.raises(KeyboardInterrupt):
        tracker.log_points(run_id, [(1, {"val_loss": 0.5}, int(time.time() * 1000))])
    assert fired
    tracker.end_run(run_id, "KILLED", {"raysweep.interrupted": "true"})
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "KILLED" and run.data.metrics == {"val_loss": 0.5}
    assert run.data.tags["raysweep.interrupted"] == "true"
