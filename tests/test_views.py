"""The search views (views.py) drawn by Optuna from a hand-built book of trials."""

from __future__ import annotations

import logging
import math
import random
import re

import optuna
import pytest

from raysweep.book import FAILED, FINISHED, STOPPED, TrialBook, TrialRecord
from raysweep.spec import validate
from raysweep.views import compared_epoch, history_study, importances, rung_study, write_views
from tests.conftest import make_raw


def _book(n: int = 12, confirm: bool = False) -> TrialBook:
    """An ASHA-like search over lr, batch_size and dropout where only lr matters: val_loss is
    |log10(lr) + 2| + 0.1 / epoch; the four best trials ran to max_epochs (6), the next four
    to the rung at 3, the rest stopped at 1."""
    spec = validate(make_raw())
    book = TrialBook(spec)
    lrs = [10 ** (-4 + 3 * i / (n - 1)) for i in range(n)]
    noise = random.Random(0)  # batch_size and dropout drawn apart from lr: they must not matter
    ranked = sorted(range(n), key=lambda i: abs(lrs[i] - 1e-2))
    for rank, i in enumerate(ranked):
        epochs = 6 if rank < 4 else 3 if rank < 8 else 1
        config = {"lr": lrs[i], "batch_size": noise.choice([64, 128]), "dropout": noise.uniform(0, 0.3)}
        rec = TrialRecord(f"t{i}", i + 1, config, status=FINISHED if epochs == 6 else STOPPED, epochs=epochs)
        rec.history = [(10.0 * i + e, e, abs(math.log10(lrs[i]) + 2) + 0.1 / e, 0.001 * e) for e in range(1, epochs + 1)]
        rec.value, rec.started_t = rec.history[-1][2], 10.0 * i
        book.records[rec.trial_id] = rec
    if confirm:  # a run confirming t0's configuration with a fresh seed: no trial of the search
        rec = TrialRecord("c0", n + 1, dict(book.records["t0"].config), status=FINISHED, epochs=6, confirms="t0")
        rec.history = [(500.0 + e, e, 0.05, 0.001 * e) for e in range(1, 7)]
        rec.value = 0.05
        book.records["c0"] = rec
    return book


def test_the_history_study_records_stopped_trials_as_pruned_with_every_epoch():
    study = history_study(_book(confirm=True))
    assert len(study.trials) == 12  # the confirming run is not a trial of the search
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert states.count(optuna.trial.TrialState.PRUNED) == 8
    pruned = next(t for t in study.trials if t.user_attrs["epochs"] == 3)
    assert sorted(pruned.intermediate_values) == [1, 2, 3] and pruned.value is None
    assert all(t.datetime_start < t.datetime_complete for t in study.trials)


def test_the_rung_study_values_every_trial_at_the_latest_epoch_all_reached():
    book = _book()
    assert compared_epoch(book) == 1
    study, epoch = rung_study(book)
    assert epoch == 1 and len(study.trials) == 12
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    by_id = {t.user_attrs["trial_id"]: t.value for t in study.trials}
    assert by_id["t0"] == book.records["t0"].history[0][2]  # its epoch-1 value, not its last


def test_importance_finds_the_hyperparameter_that_matters():
    shares = importances(_book())
    assert set(shares) == {"lr", "batch_size", "dropout"}
    assert shares["lr"] > 0.8 and shares["lr"] == max(shares.values())
    assert sum(shares.values()) == pytest.approx(1.0)


def test_importance_needs_a_few_trials():
    assert importances(_book(n=3)) == {}


def test_views_page_holds_every_view_with_plotly_embedded_once(tmp_path):
    written = write_views(_book(), str(tmp_path))
    page = (tmp_path / "search.html").read_text()
    for section in ("importance", "parallel_coordinates", "slice", "learning_curves", "timeline", "audit",
                    "best_vs_cost"):
        assert f'<section id="{section}">' in page
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the library once, for every figure: no network needed
    # Each plot's camera button saves it as <view>.png, what stands in for the images by default.
    assert page.count('"toImageButtonOptions": {"filename": "') == 7 and '{"filename": "slice"' in page
    assert written == [str(tmp_path / "search.html")] and not list(tmp_path.glob("*.png"))


def test_view_images_draw_a_png_beside_the_page_for_each_view_matplotlib_can_draw(tmp_path):
    written = write_views(_book(), str(tmp_path), images=True)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["audit.png", "importance.png", "learning_curves.png", "parallel_coordinates.png", "slice.png",
                    "timeline.png"]
    assert all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    assert len(written) == 7


def test_a_search_too_small_to_compare_still_gets_its_curves_and_timeline(tmp_path):
    write_views(_book(n=2), str(tmp_path))
    page = (tmp_path / "search.html").read_text()
    assert '<section id="importance">' not in page and '<section id="timeline">' in page


def test_a_search_whose_trials_all_failed_gets_its_timeline_and_no_empty_curves(tmp_path, caplog):
    """Optuna warned 'Study instance does not contain trials.' after the search's failure line."""
    book = _book(n=2)
    for rec in book.records.values():
        rec.status, rec.value = FAILED, None
    optuna.logging.enable_propagation()  # Optuna's logger keeps its records to itself otherwise
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            page = write_views_page(book, tmp_path)
    finally:
        optuna.logging.disable_propagation()
    assert '<section id="learning_curves">' not in page and '<section id="timeline">' in page
    assert [r.getMessage() for r in caplog.records if r.name.startswith("optuna")] == []


def test_a_search_of_two_objectives_gets_its_pareto_front_drawn(tmp_path):
    book = _book()
    book.spec = validate(make_raw(metric=["val_loss", "cost_usd"]))
    for rec in book.records.values():
        rec.metrics = {"val_loss": rec.value, "cost_usd": 0.001 * rec.epochs}
    write_views(book, str(tmp_path), images=True)
    page = (tmp_path / "search.html").read_text()
    section = page.split('<section id="pareto_front">')[1].split("</section>")[0]
    assert "val_loss and cost_usd" in section and "Pareto front" in section
    assert (tmp_path / "pareto_front.png").stat().st_size > 5000
    assert '<section id="pareto_front">' not in write_views_page(_book(), tmp_path / "single")


def write_views_page(book, directory) -> str:
    write_views(book, str(directory))
    return (directory / "search.html").read_text()


def test_the_audit_view_shows_each_rungs_correlation_and_the_audited_trials_against_the_chosen(tmp_path):
    from raysweep.spec import CONFIRM_KEY

    book = _book()
    write_views(book, str(tmp_path / "rungs"))
    page = (tmp_path / "rungs" / "search.html").read_text()
    section = page.split('<section id="audit">')[1].split("</section>")[0]
    assert "rank correlation at each rung" in section and "audited trials" not in section

    stopped = next(r for r in book.records.values() if r.epochs == 1)
    config = {**stopped.config, CONFIRM_KEY: {"of": stopped.trial_id, "seed": 7, "kind": "audit"}}
    audit = TrialRecord("a0", 13, config, status=FINISHED, epochs=6, confirms=stopped.trial_id)
    audit.history = [(600.0 + e, e, 0.5 / e, 0.001 * e) for e in range(1, 7)]
    book.records["a0"] = audit
    write_views(book, str(tmp_path / "audited"), images=True)
    section = (tmp_path / "audited" / "search.html").read_text().split('<section id="audit">')[1]
    assert "audited trials to max_epochs" in section and f"trial {stopped.number:03d}" in section
    assert (tmp_path / "audited" / "audit.png").stat().st_size > 5000
