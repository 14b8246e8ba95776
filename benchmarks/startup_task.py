"""The 2-worker trial's task in benchmarks/startup.py: digits_mlp, with each rank's times
written to $RAYSWEEP_STARTUP_STAMPS (a module of its own: startup.py imports no torch). A subclass, not a function around it, so that the trial
takes the built-in task's path (its splits loaded once by the driver and shared)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from raysweep.tasks.digits import DigitsMLP
from startup import STAMPS_ENV


class StampedDigits(DigitsMLP):
    def train(self, config, ctx):
        stamps = {"entered": time.time()}
        out = Path(os.environ[STAMPS_ENV]) / f"rank{ctx.rank}.json"
        report = ctx.report

        def stamped_report(metrics, *args, **kwargs):
            if "first_report" not in stamps:
                stamps["first_report"] = time.time()
                out.write_text(json.dumps(stamps))
            return report(metrics, *args, **kwargs)

        ctx.report = stamped_report
        super().train(config, ctx)
