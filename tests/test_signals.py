"""How a Ctrl-C or SIGTERM reaches the code: never in the middle of a call to a SQLite MLflow
store (the store stays writable for the writes that end the runs KILLED), and named for the exit code."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future

import pytest
from mlflow import MlflowClient
from ray._private import utils as ray_utils
from sqlalchemy import event

from raysweep.interrupt import Interrupt
from raysweep.ray_internals import sigterm_left_alone
from raysweep.signals import interrupt_now, raise_if_requested, received, reset, uninterrupted, wait_for
from raysweep.tracking.tracker import Tracker


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


def test_a_sigterm_is_taken_as_a_ctrl_c_and_named_for_the_exit_code():
    with Interrupt(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
    assert received() == signal.SIGTERM
    with Interrupt(), pytest.raises(KeyboardInterrupt):
        _ctrl_c()
    assert received() == signal.SIGINT


def test_sigterm_is_taken_back_from_the_handler_ray_installs_and_ray_s_restored_at_the_end():
    def rays(signum, frame):  # what `ray.init` installs in a driver: sys.exit(15)
        raise SystemExit(signum)

    before = signal.getsignal(signal.SIGTERM)
    interrupt = Interrupt()
    with interrupt:
        signal.signal(signal.SIGTERM, rays)  # Ray starts inside the block
        interrupt.take_sigterm_back()
        assert signal.getsignal(signal.SIGTERM) == interrupt._terminated
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
    assert signal.getsignal(signal.SIGTERM) == rays  # Ray's again once the run is over
    signal.signal(signal.SIGTERM, before)
    with sigterm_left_alone() as left_out:  # the run starts Ray: Ray's handler is left out ...
        ray_utils.set_sigterm_handler(rays)
    assert left_out == [rays] and signal.getsignal(signal.SIGTERM) == before
    with interrupt:
        interrupt.take_sigterm_back(*left_out)
        assert signal.getsignal(signal.SIGTERM) == interrupt._terminated
    assert signal.getsignal(signal.SIGTERM) == rays  # ... and in place as the run ends, as ray.init left it
    signal.signal(signal.SIGTERM, before)
    interrupt.take_sigterm_back()  # outside the block: nothing to take
    assert signal.getsignal(signal.SIGTERM) == before


class _SwallowsAStop:
    """A stop raised in `__del__`, one of the places where Python reports an exception and goes
    on (as in the import system's weakref callbacks, where a SIGTERM at start-up once landed)."""

    def __del__(self):
        interrupt_now(signal.SIGTERM)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing is the case
def test_a_stop_python_swallowed_is_raised_at_the_next_safe_point_and_a_new_run_starts_clean():
    reset()
    _SwallowsAStop()  # "Exception ignored in ... __del__": the code goes on
    with pytest.raises(KeyboardInterrupt):
        raise_if_requested()
    assert received() == signal.SIGTERM
    with Interrupt():  # a new run in the same process: nothing asked for
        raise_if_requested()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing is the case
def test_a_wait_on_a_thread_that_never_ends_acts_on_a_swallowed_stop():
    reset()
    assert wait_for(_done(7)) == 7
    stuck: Future = Future()  # the MLflow store's opener, stuck on an import lock
    _SwallowsAStop()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        wait_for(stuck, poll_s=0.05)
    assert time.monotonic() - started < 5
    reset()


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def test_a_repeated_sigterm_or_sighup_is_no_second_ctrl_c_but_a_ctrl_c_after_one_is():
    """A hang-up reaches a session leader from the kernel and from the shell: two SIGHUPs."""
    stops = []

    def tunes(signum, frame):  # Tune's handler during fit(): stop the loop, put ours back
        stops.append(signum)
        signal.signal(signal.SIGINT, interrupt._handler)

    interrupt = Interrupt()
    with interrupt:
        interrupt.take_sigterm_back()
        signal.signal(signal.SIGINT, tunes)
        interrupt._tune_handler = None
        interrupt.setup()  # as fit() starts: the first stop goes to Tune's handler
        for signum in (signal.SIGHUP, signal.SIGHUP, signal.SIGTERM):
            os.kill(os.getpid(), signum)
            time.sleep(0.2)
        assert stops == [signal.SIGINT] and interrupt.signum == signal.SIGHUP and interrupt.happened
        with pytest.raises(KeyboardInterrupt):  # a person pressing Ctrl-C after it: out at once
            _ctrl_c()
