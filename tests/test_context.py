"""What a trial's context does between the task and Tune: asynchronous reports (`scheduler.report: async`)."""

from __future__ import annotations

import threading

import pytest

from raysweep.context import _PendingReport


def test_a_pending_report_lets_training_go_on_and_keeps_reports_in_order():
    pending, landed, cleaned = _PendingReport(), [], []
    driver = {1: threading.Event(), 2: threading.Event()}  # the driver taking epoch N's result

    def report(epoch):
        def send():
            driver[epoch].wait(10)
            landed.append(epoch)
        return send

    pending.send(report(1), after=lambda: cleaned.append(1))
    assert landed == []  # send returned while the report still waits on the driver
    driver[1].set()
    pending.send(report(2), after=lambda: cleaned.append(2))  # waits for epoch 1's first
    assert landed == [1] and cleaned == [1]
    driver[2].set()
    pending.wait()
    assert landed == [1, 2] and cleaned == [1, 2]


@pytest.mark.parametrize("error", [SystemExit(0), RuntimeError("storage unreachable")])
def test_a_stop_or_an_error_in_the_report_is_raised_where_the_next_epoch_reports(error):
    pending, cleaned = _PendingReport(), []

    def fails():
        raise error

    pending.send(fails, after=lambda: cleaned.append(1))
    with pytest.raises(type(error)) as raised:
        pending.send(lambda: None, after=lambda: None)  # the next epoch's report: not sent
    assert raised.value is error and cleaned == [1]
    pending.send(fails, after=lambda: None)
    pending.wait(raise_error=False)  # the trial's own error wins over the last report's
