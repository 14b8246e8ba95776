"""The early-stopping audit (audit.py): rank correlations at ASHA's rungs, on hand-built trials."""

from __future__ import annotations

import pytest

from raysweep.audit import audit_configs, audit_metrics, rung_correlations
from raysweep.book import FAILED, FINISHED, STOPPED, TrialBook, TrialRecord
from raysweep.spec import CONFIRM_KEY, validate
from tests.conftest import make_raw


def _book(curves: dict[str, list[float]], status: dict[str, str] | None = None) -> TrialBook:
    book = TrialBook(validate(make_raw()))  # max_epochs 6, grace 1, rf 3: rungs 1 and 3
    for n, (trial_id, values) in enumerate(curves.items()):
        default = FINISHED if len(values) == 6 else STOPPED
        rec = TrialRecord(trial_id, n, {}, status=(status or {}).get(trial_id, default), epochs=len(values))
        rec.history = [(float(e), e, v, 0.0) for e, v in enumerate(values, start=1)]
        book.records[trial_id] = rec
    return book


def test_a_rung_that_ranked_trials_as_they_ended_correlates_fully():
    book = _book({
        "a": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "b": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],
        "c": [3.0, 2.9, 2.8, 2.7, 2.6, 2.5], "d": [4.0, 3.9, 3.8],  # stopped at 3: in rung 1's pairs
        "e": [9.0],  # stopped at 1: never went past a rung
    })
    corr = rung_correlations(book)
    assert corr[1] == {"rho": pytest.approx(1.0), "n": 4, "against_epoch": 3}  # a-d, at the epoch all reached
    assert corr[3] == {"rho": pytest.approx(1.0), "n": 3, "against_epoch": 6}
    assert audit_metrics(corr) == {"rung_corr_1": pytest.approx(1.0), "rung_n_1": 4.0,
                                   "rung_corr_3": pytest.approx(1.0), "rung_n_3": 3.0}


def test_a_rung_whose_leaders_fell_behind_correlates_negatively():
    # Fast starters (low at epoch 1) end worst: the rung's ranking was backwards.
    book = _book({
        "fast": [0.5, 0.6, 0.9, 1.0, 1.1, 1.2], "mid": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
        "slow": [2.0, 1.0, 0.5, 0.3, 0.2, 0.1],
    })
    assert rung_correlations(book)[1]["rho"] == pytest.approx(-1.0)


def test_rungs_with_too_few_trials_past_them_and_failed_trials_are_left_out():
    book = _book({"a": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "b": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],
                  "broken": [0.1, 5.0, 5.0]}, status={"broken": FAILED})
    assert rung_correlations(book) == {}  # two trials past each rung: no correlation worth a number


def test_an_audit_run_is_never_the_best_and_a_trial_audited_before_is_not_drawn_again():
    """The audit reports on early stopping; it does not pick, in any round (an extended search
    chooses anew among its trials), and a trial an earlier round audited is not retrained twice."""
    book = _book({"done": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "s1": [2.0], "s2": [2.1], "s3": [2.2],
                  "s1-audit": [2.0, 1.0, 0.5, 0.3, 0.2, 0.1]})
    audit = book.records["s1-audit"]
    audit.config, audit.confirms = {CONFIRM_KEY: {"of": "s1", "seed": 0, "kind": "audit"}}, "s1"
    for rec in book.records.values():
        rec.value = rec.history[-1][2]
    assert book.ranked()[0] is audit and book.best().trial_id == "done"
    spec = validate(make_raw(**{"scheduler.audit": 3}))
    assert sorted(c[CONFIRM_KEY]["of"] for c in audit_configs(spec, book)) == ["s2", "s3"]


def test_an_audit_trains_stopped_trials_to_the_end_and_reports_what_stopping_cost(ray_session, tmp_path,
                                                                                   tracking_uri, capsys):
    import json

    from mlflow import MlflowClient
    from rich.console import Console

    from raysweep.cli import main
    from raysweep.search import run_search

    spec = validate(make_raw(**{"name": "audited", "search.num_samples": 8, "max_epochs": 4,
                                "scheduler.audit": 2}))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri,
                        console=Console(file=open(tmp_path / "out.txt", "w")))
    audit = result.audit
    assert audit["runs"] == 2 and len(audit["audited"]) == 2
    trials = {t["trial_id"]: t for t in result.trials}
    client = MlflowClient(tracking_uri)
    for audited in audit["audited"]:
        stopped = trials[audited["trial_id"]]
        assert stopped["status"] == "stopped" and audited["stopped_at"] == stopped["epochs"] < 4
        run = client.get_run(audited["run_id"])
        assert run.data.tags["raysweep.audits"] == audited["trial_id"] and run.info.run_name.endswith("(audit)")
        replay = {p.step: p.value for p in client.get_metric_history(audited["run_id"], "val_loss")}
        assert sorted(replay) == [1, 2, 3, 4]  # trained to max_epochs...
        for h in stopped["history"]:  # ...replaying the stopped trial's epochs exactly (its own seed)
            assert replay[h["epoch"]] == pytest.approx(h["value"], rel=1e-6)
        assert replay[4] == pytest.approx(audited["final"])
    # The chosen trial is the search's own, and the count of audited runs that beat it is right.
    audit_runs = {a["run_id"] for a in audit["audited"]}
    searched = [t for t in result.trials if t["run_id"] not in audit_runs]
    assert len(searched) == 8 and result.best["trial_id"] == audit["chosen"]
    assert audit["beat_chosen"] == sum(a["final"] < audit["chosen_value"] for a in audit["audited"])
    assert audit["regret"] == pytest.approx(max(0.0, audit["chosen_value"] - min(a["final"] for a in audit["audited"])))
    # A longer grace period: the rung above grace 1 (rf 3: epoch 3), and max_epochs (4).
    assert set(audit["grace"]) == {3, 4}
    for grace in (3, 4):
        assert audit["grace"][grace]["extra_epochs"] == sum(max(0, grace - t["epochs"]) for t in searched)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["audit_runs"] == 2
    assert parent.data.metrics["audit_beat_chosen"] == audit["beat_chosen"]
    saved = json.loads(open(client.download_artifacts(result.parent_run_id, "audit.json")).read())
    assert saved["beat_chosen"] == audit["beat_chosen"]
    assert "auditing early stopping: 2 stopped trial(s)" in (tmp_path / "out.txt").read_text()
    assert main(["report", "audited", "--tracking-uri", tracking_uri]) == 0
    assert f"audit: {audit['beat_chosen']} of 2 stopped trials trained to the end" in capsys.readouterr().out


def test_audit_needs_early_stopping():
    from raysweep.errors import SpecError

    with pytest.raises((SpecError, ValueError), match="scheduler.audit: 2 audits early stopping"):
        validate(make_raw(**{"scheduler.type": "fifo", "scheduler.audit": 2}))


def test_a_trial_whose_history_skips_the_compared_epoch_is_left_out_of_that_pair_not_an_error():
    """A history may miss an epoch whose report never came (a plain Ray Train loop's; before the
    fix, a trial --resume continued past several deleted checkpoints): the search's summary once
    failed on it with KeyError."""
    book = _book({"a": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "b": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],
                  "c": [3.0, 2.9, 2.8, 2.7, 2.6, 2.5], "d": [4.0, 3.9, 3.8, 3.7, 3.6, 3.5]})
    book.records["d"].history = [h for h in book.records["d"].history if h[1] != 6]  # epoch 6 never said
    book.records["d"].history.append((7.0, 7, 3.4, 0.0))  # ... and a later one was
    corr = rung_correlations(book)
    assert corr[3] == {"rho": pytest.approx(1.0), "n": 3, "against_epoch": 6}  # a-c at epoch 6; d has none
