"""A task whose trials wait at fixed points for test_spool's fault injection ("tests.outage_tasks:...")."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from raysweep.tasks.digits import DigitsMLP

GATE_TIMEOUT_S = 300  # a gate that never opens fails the trial instead of hanging the test


def _ticket(gates: Path) -> int:
    """This trial's start order: 1 for the first trial to start, 2 for the next..."""
    for n in itertools.count(1):
        try:
            (gates / f"ticket-{n}").open("x").close()
            return n
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _wait(gate: Path) -> None:
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.05)


class OutageGated(DigitsMLP):
    """digits_mlp (FIFO, 2 concurrent trials) whose trials wait for the test's files in
    `config["gate_dir"]`, so the outage falls where the test needs it on any machine:

    - trials 1 and 2 report epoch 1, then wait for `down` (the server is stopped) before epoch 2:
      their later epochs and their ends are logged while it is down, and trials 3 and 4 start then;
    - with `hold_until_up`, trials 3 and 4 wait for `up` (it answers again) before epoch 3,
      announcing it with `holding-<n>`; without, the search ends while the server is down.
    """

    def train(self, config, ctx):
        gates = Path(config["gate_dir"])
        ticket = _ticket(gates)
        real_report = ctx.report

        def report(metrics, checkpoint=None):
            if ticket <= 2 and metrics["epoch"] == 2:
                _wait(gates / "down")
            if config["hold_until_up"] and ticket in (3, 4) and metrics["epoch"] == 3:
                (gates / f"holding-{ticket}").touch()
                _wait(gates / "up")
            real_report(metrics, checkpoint=checkpoint)

        ctx.report = report
        super().train(config, ctx)
