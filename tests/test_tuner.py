"""The Tune side of a search, without running one: what Tune gets back when it unpickles the
search's stopper."""

from __future__ import annotations

import pickle

from ray import tune

from raysweep.book import TrialBook
from raysweep.spec import validate
from raysweep.tuner import StopAfterFailures
from tests.conftest import make_raw


def test_an_unpickled_stopper_is_the_live_search_s():
    """Tune saves the stopper with its experiment state and, on --resume, puts the unpickled one
    in place of the one it was given. It must count this driver's failures and spend, not a
    stale copy of the dead driver's book."""
    spec = validate(make_raw(**{"search.max_failed_trials": 2}))
    saved = pickle.dumps(StopAfterFailures(TrialBook(spec), 2))  # the dead driver's
    book = TrialBook(spec)
    live = StopAfterFailures(book, 2)  # the resumed driver's
    assert pickle.loads(saved) is live
    assert pickle.loads(pickle.dumps(live)).book is book


def test_a_stopper_unpickled_where_no_search_runs_stops_nothing(monkeypatch):
    import raysweep.tuner as tuner

    saved = pickle.dumps(StopAfterFailures(TrialBook(validate(make_raw())), 1))
    monkeypatch.setattr(tuner, "_live_stopper", None)
    assert isinstance(pickle.loads(saved), tune.stopper.NoopStopper)
