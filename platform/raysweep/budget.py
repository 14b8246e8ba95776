"""A search's budget (`search.budget`): what has been spent, what running trials are committed
to, and whether one more trial, or one more rung of a trial, still fits.

Spend is the driver's ledger (`book.TrialBook`): epochs trained, and the billed totals of
`cost_device_hours` and `cost_usd` (cost.py; runs a dead driver left count too), and the
seconds since the search began. Nothing is spent blind: a trial is started, and a trial at a
rung continues, only if what is spent, plus what every other running trial is committed to,
plus this step, stays within every limit. A trial is committed to the epochs up to its next
decision point: ASHA's next rung (`milestones`), or `max_epochs` under FIFO. Its cost per
epoch is its own so far, or for a trial not yet measured the average of those that are;
`wall_s` is not summed over trials (they run side by side), it is a deadline each step must
end before. Until an epoch's device-hours and dollars have been measured, trials start one at
a time (a budget in dollars says nothing about the price of an epoch). A trial suggested but
not started yet (`admitted`) is committed to the first rung at the average price.

The estimates are estimates: a trial may cost more than its earlier epochs said. Whatever
happens, `exhausted()` is true once a limit is reached, and the search stops every trial
then (tuner.StopAfterFailures), so it overshoots by at most one epoch per running trial.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from .book import RUNNING, TrialBook, TrialRecord
from .confirm import reserve_epochs
from .spec import BudgetSection, Spec

# What each limit counts, in a trial's billed metrics (cost.py); epochs and wall_s are the book's.
BILLED_BY = {"device_hours": "cost_device_hours", "usd": "cost_usd"}
UNITS = {"epochs": "epochs", "device_hours": "device-hours", "usd": "USD", "wall_s": "s"}

START, WAIT, FINISHED = "start", "wait", "finished"
# Epochs measured before the forecast estimates from them: a trial's first epoch also carries
# its process's start, which alone would make epochs look several times dearer.
ESTIMATE_AFTER_EPOCHS = 3


def milestones(spec: Spec) -> list[int]:
    """The epochs at which a trial's future is decided: ASHA's rungs (`Spec.asha_rungs`) and
    max_epochs; max_epochs alone under FIFO."""
    return [*(spec.asha_rungs if spec.scheduler.type == "asha" else []), spec.max_epochs]


class Budget:
    def __init__(self, spec: Spec, book: TrialBook):
        self.section: BudgetSection = spec.search.budget
        self.limits = self.section.limits
        self.book = book
        self.milestones = milestones(spec)
        self.admitted: set[str] = set()  # suggested, not yet started: committed to their first rung
        # Epochs kept for after the trials (search.confirm's runs); set to 0 when they start.
        self.reserve = reserve_epochs(spec)
        self.reached: str | None = None  # the limit that ended the search, once one has

    def __getstate__(self):  # a driver's; Tune pickles the progress callback holding it (tuner.pkl)
        return {**self.__dict__, "book": None, "admitted": set()}

    # -- what has been spent, and what it costs
    def spent(self, limit: str) -> float:
        records = self.book.records.values()
        if limit == "epochs":
            return float(self.book.epochs_run)
        if limit == "wall_s":
            return time.monotonic() - self.book.started
        key = BILLED_BY[limit]
        return sum(r.metrics.get(key, 0.0) for r in records) + self.book.orphaned.get(key, 0.0)

    def per_epoch(self, limit: str, rec: TrialRecord | None = None) -> float | None:
        """What an epoch costs: `rec`'s own so far, else the measured trials' average; None
        when no epoch has been measured yet."""
        if limit == "epochs":
            return 1.0
        key = "cost_wall_s" if limit == "wall_s" else BILLED_BY[limit]
        measured: Iterable[TrialRecord] = [rec] if rec is not None and rec.epochs and key in rec.metrics else [
            r for r in self.book.records.values() if r.epochs and key in r.metrics]
        epochs = sum(r.epochs for r in measured)
        return sum(r.metrics[key] for r in measured) / epochs if epochs else None

    def next_milestone(self, epoch: int) -> int:
        return next(m for m in self.milestones if m > epoch) if epoch < self.milestones[-1] else epoch

    def committed(self, limit: str, but: str | None = None) -> float:
        """What running (and admitted) trials other than `but` will spend up to their next rung."""
        total = 0.0
        for rec in self.book.records.values():
            if rec.status == RUNNING and rec.trial_id != but:
                total += (self.next_milestone(rec.epochs) - rec.epochs) * (self.per_epoch(limit, rec) or 0.0)
        waiting = len(self._waiting() - {but})
        return total + (waiting * self.milestones[0] + self.reserve) * (self.per_epoch(limit) or 0.0)

    def _waiting(self) -> set[str]:
        """Admitted trials Tune has not started yet."""
        return self.admitted - set(self.book.records)

    def crossed_by(self, epochs: int, rec: TrialRecord | None = None, unbooked: int = 0) -> str | None:
        """The first limit `epochs` more epochs of `rec` (None: a new trial) would cross, with
        what the others are committed to; `unbooked`: `rec`'s epochs reported but not yet in
        the book (a stopper sees a result before the book does)."""
        for limit, cap in self.limits.items():
            rate = self.per_epoch(limit, rec)
            if rate is None:
                continue
            step = (epochs + unbooked) * rate
            if limit == "wall_s":  # a deadline: trials run side by side (the reserve counted serially)
                if self.spent(limit) + (epochs + self.reserve) * rate > cap:
                    return limit
            elif self.spent(limit) + self.committed(limit, None if rec is None else rec.trial_id) + step > cap:
                return limit
        return None

    # -- the decisions
    def may_start(self, trial_id: str) -> str:
        """START (and the trial is admitted), WAIT (running trials may free room), or FINISHED."""
        if self.exhausted():
            return FINISHED
        running = any(r.status == RUNNING for r in self.book.records.values()) or bool(self._waiting())
        unmeasured = any(self.per_epoch(k) is None for k in self.limits if k in BILLED_BY)
        if running and unmeasured:
            return WAIT  # one trial at a time until an epoch's price is known
        crossed = self.crossed_by(self.milestones[0])
        if crossed is None:
            self.admitted.add(trial_id)
            return START
        if running:
            return WAIT
        self.reached = crossed
        return FINISHED

    def may_continue(self, trial_id: str, result: dict) -> bool:
        """At a rung: whether the trial may train to its next one. Between rungs, whether no
        limit has been reached."""
        rec = self.book.records.get(trial_id)
        if rec is None:
            return True
        epoch = int(result.get("epoch", rec.epochs))
        if self.exhausted(unbooked=(rec, epoch - rec.epochs)):
            return False
        if epoch not in self.milestones or epoch >= self.milestones[-1]:
            return True
        crossed = self.crossed_by(self.next_milestone(epoch) - epoch, rec, unbooked=epoch - rec.epochs)
        return crossed is None

    def exhausted(self, unbooked: tuple[TrialRecord, int] | None = None) -> bool:
        """Whether a limit has been reached (then every trial stops); remembers which."""
        for limit, cap in self.limits.items():
            spent = self.spent(limit)
            if unbooked is not None and limit != "wall_s":
                spent += unbooked[1] * (self.per_epoch(limit, unbooked[0]) or 0.0)
            if spent >= cap:
                self.reached = self.reached or limit
                return True
        return False

    # -- what it says
    def spend(self) -> dict[str, float]:
        return {limit: self.spent(limit) for limit in self.limits}

    def used_fraction(self) -> float:
        """The largest share of a limit spent so far."""
        return max(min(self.spent(limit) / cap, 1.0) for limit, cap in self.limits.items())

    def describe(self) -> str:
        return ", ".join(_amount(limit, cap) for limit, cap in self.limits.items())

    def forecast(self, samples: int | None, max_epochs: int) -> str:
        """What a search with this budget may spend at most, before anything is measured."""
        cap = "" if samples is None else f"; at most {samples} trials x {max_epochs} epochs (search.num_samples)"
        return f"budget: {self.describe()}, the first reached ends the search{cap}"

    def estimate(self) -> str | None:
        """What the measured epochs say the budget buys; None until an epoch is measured."""
        measured = sum(r.epochs for r in self.book.records.values())
        rates = {limit: self.per_epoch(limit) for limit in self.limits}
        if set(rates) == {"epochs"} or measured < ESTIMATE_AFTER_EPOCHS or None in rates.values():
            return None  # an epochs budget is known from the start
        epochs = {limit: (cap - self.spent(limit)) / rates[limit] for limit, cap in self.limits.items()
                  if limit != "wall_s" and rates[limit] > 0}
        price = ", ".join(f"{_amount(limit, rate)}" for limit, rate in rates.items()
                          if limit != "epochs")
        line = f"budget forecast (over {measured} epoch{'s' if measured != 1 else ''})"
        if price:
            line += f": an epoch costs {price}"
        if epochs:
            first = min(epochs, key=epochs.get)
            line += f"; the rest buys about {epochs[first]:.0f} more epochs ({first} runs out first)"
        return line

    def spent_text(self) -> str:
        """Each limit's spend, e.g. "20 of 20 epochs, $0.0012 of $5"."""
        return ", ".join(f"{_amount(limit, self.spent(limit), unit=False)} of {_amount(limit, cap)}"
                         for limit, cap in self.limits.items())

    def summary(self) -> str:
        ended = f"; {self.reached} reached, the search ended there" if self.reached else ""
        return f"budget spent: {self.spent_text()}{ended}"


def _amount(limit: str, value: float, unit: bool = True) -> str:
    if limit == "usd":
        return f"${value:.4g}"
    number = f"{value:.0f}" if limit == "epochs" else f"{value:.3g}"
    return f"{number} {UNITS[limit]}" if unit else number
