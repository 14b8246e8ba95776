"""search.confirm: the best configurations retrained with fresh seeds, the best mean chosen."""

from __future__ import annotations

import io
import json
import math

from mlflow import MlflowClient
from rich.console import Console

from raysweep.book import FINISHED, STOPPED, TrialBook, TrialRecord
from raysweep.confirm import candidates, choose, confirm_configs, confirm_seeds, reserve_epochs
from raysweep.search import run_search
from raysweep.spec import CONFIRM_KEY, validate
from raysweep.trial import train_seed, trial_params
from tests.conftest import make_raw


def _book(spec, *trials) -> TrialBook:
    """(status, value, confirms) per trial; config {"lr": n}."""
    book = TrialBook(spec)
    for n, (status, value, confirms) in enumerate(trials, start=1):
        rec = TrialRecord(f"t{n}", n, {"lr": float(n)}, status=status, epochs=spec.max_epochs, value=value)
        rec.confirms = confirms
        book.records[rec.trial_id] = rec
    return book


def test_fresh_seeds_are_fixed_and_keep_the_data_split():
    assert confirm_seeds(0, 3) == confirm_seeds(0, 3) and len(set(confirm_seeds(0, 3))) == 3
    assert 0 not in confirm_seeds(0, 3) and confirm_seeds(1, 3) != confirm_seeds(0, 3)
    spec = validate(make_raw(**{"seed": 7}))
    config = {"lr": 0.01, CONFIRM_KEY: {"of": "t1", "seed": 12345}}
    # The split stays the spec's seed's (ctx.seed); the model's initialisation and order change.
    assert train_seed(spec, config) == 12345 and train_seed(spec, {"lr": 0.01}) == 7
    assert trial_params(spec, config) == {**spec.fixed, "lr": 0.01}  # not a hyperparameter


def test_candidates_are_the_best_trials_that_ran_every_epoch():
    spec = validate(make_raw(**{"search.confirm": {"top_k": 2, "seeds": 3}}))
    book = _book(spec, (FINISHED, 0.5, None), (STOPPED, 0.1, None), (FINISHED, 0.3, None), (FINISHED, 0.4, None))
    assert [r.trial_id for r in candidates(book, 2)] == ["t3", "t4"]  # t2's 0.1 is of fewer epochs
    configs = confirm_configs(spec, book)
    assert len(configs) == 6 and {c[CONFIRM_KEY]["of"] for c in configs} == {"t3", "t4"}
    assert [c[CONFIRM_KEY]["seed"] for c in configs[:3]] == confirm_seeds(spec.seed, 3)
    assert reserve_epochs(spec) == 2 * 3 * spec.max_epochs


def test_the_best_mean_wins_and_its_best_run_is_registered():
    spec = validate(make_raw(**{"search.confirm": {"top_k": 2, "seeds": 2}}))
    # t1 was the lucky one (0.20, then 0.40 and 0.42); t2 is steadily 0.25-0.27.
    book = _book(spec, (FINISHED, 0.20, None), (FINISHED, 0.27, None), (FINISHED, 0.40, "t1"), (FINISHED, 0.42, "t1"),
                 (FINISHED, 0.25, "t2"), (FINISHED, 0.26, "t2"), ("failed", None, "t2"))
    assert book.best().trial_id == "t1"
    confirmed = choose(spec, book)
    assert confirmed["chosen"] == "t2" and confirmed["registered"] == "t5" and book.best().trial_id == "t5"
    t2 = next(r for r in confirmed["candidates"] if r["trial_id"] == "t2")
    assert t2["values"] == [0.27, 0.25, 0.26] and math.isclose(t2["mean"], 0.26) and math.isclose(t2["std"], 0.01)
    # mode max: the highest mean
    spec = validate(make_raw(**{"metric": "val_accuracy", "mode": "max", "search.confirm": {"top_k": 2, "seeds": 1}}))
    book = _book(spec, (FINISHED, 0.99, None), (FINISHED, 0.95, None), (FINISHED, 0.80, "t1"), (FINISHED, 0.96, "t2"))
    assert choose(spec, book)["chosen"] == "t2" and book.best().trial_id == "t4"


def test_an_extended_search_runs_only_the_confirming_runs_it_lacks_and_counts_each_once():
    """--resume --samples +N after a confirmed search (or a driver that died while confirming):
    a candidate's runs already finished are not trained again with the same seed, and an audit's
    retraining of a trial is not one of its confirming values."""
    spec = validate(make_raw(**{"search.confirm": {"top_k": 2, "seeds": 3}}))
    seeds = confirm_seeds(spec.seed, 3)
    book = _book(spec, (FINISHED, 0.30, None), (FINISHED, 0.31, "t1"), (FINISHED, 0.33, "t1"), ("failed", None, "t1"),
                 (FINISHED, 0.20, "t1"), (FINISHED, 0.35, None))
    # t2, t3: seeds 0 and 1 finished; t4: seed 2 failed (run again); t5: an audit of t1, not a confirming run
    for rec, extra in zip(list(book.records.values())[1:5], ({"seed": seeds[0]}, {"seed": seeds[1]},
                                                            {"seed": seeds[2]}, {"seed": 7, "kind": "audit"})):
        rec.config = {**rec.config, CONFIRM_KEY: {"of": "t1", **extra}}
    configs = confirm_configs(spec, book)
    assert [(c[CONFIRM_KEY]["of"], c[CONFIRM_KEY]["seed"]) for c in configs] == \
        [("t1", seeds[2])] + [("t6", s) for s in seeds]
    t1 = next(r for r in choose(spec, book)["candidates"] if r["trial_id"] == "t1")
    assert t1["values"] == [0.30, 0.31, 0.33]


def test_a_confirmed_search_registers_the_best_mean_and_bills_every_run(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{"name": "confirmed", "max_epochs": 2, "search.num_samples": 4,
                                "search.max_concurrent": 2, "scheduler.type": "fifo",
                                "search.confirm": {"top_k": 2, "seeds": 2}}))
    out = io.StringIO()
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri,
                        console=Console(file=out, width=300))
    assert result.status == "finished" and len(result.trials) == 4 + 2 * 2
    confirm = result.confirm
    assert "confirmed val_loss (mean ± sd over fresh seeds): " in out.getvalue()
    chosen = next(r for r in confirm["candidates"] if r["trial_id"] == confirm["chosen"])
    assert len(chosen["values"]) == 3 and result.best["trial_id"] == confirm["registered"]
    # A fresh seed trains a different model on the same split: every run's value differs.
    for row in confirm["candidates"]:
        assert len(set(row["values"])) == 3
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    confirming = [c for c in children if "raysweep.confirms" in c.data.tags]
    assert len(confirming) == 4 and all(c.info.run_name.endswith("(confirm)") for c in confirming)
    assert {c.data.tags["raysweep.confirms"] for c in confirming} == {r["trial_id"] for r in confirm["candidates"]}
    assert all("_raysweep_confirm" not in c.data.params for c in children)
    assert math.isclose(parent.data.metrics["confirm_mean_val_loss"], chosen["mean"])
    assert math.isclose(parent.data.metrics["confirm_std_val_loss"], chosen["std"])
    # The ledger bills the confirming runs too.
    assert math.isclose(parent.data.metrics["cost_usd"], sum(c.data.metrics["cost_usd"] for c in children))
    registered = parent.data.tags["raysweep.best_run_id"]
    assert registered == next(t["run_id"] for t in result.trials if t["trial_id"] == confirm["registered"])
    saved = json.loads(client.download_artifacts(result.parent_run_id, "confirm.json", str(tmp_path)) and
                       (tmp_path / "confirm.json").read_text())
    assert saved["chosen"] == confirm["chosen"]

    # Extended (--resume --samples +2): the earlier round's confirming runs are the search's,
    # none is trained again with its seed, and the new trials are numbered after them.
    grown = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri, resume=True,
                       more_samples=2, console=Console(file=io.StringIO(), width=300))
    children = client.search_runs([result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    new_candidates = {r["trial_id"] for r in grown.confirm["candidates"]} - {r["trial_id"] for r in confirm["candidates"]}
    assert len(grown.trials) == len(children) == len(result.trials) + 2 + 2 * len(new_candidates)
    pairs = [(c.data.tags["raysweep.confirms"], c.data.tags["raysweep.train_seed"]) for c in children
             if "raysweep.confirms" in c.data.tags]
    assert len(pairs) == len(set(pairs))
    assert sorted(int(c.info.run_name.split()[0].split("-")[1]) for c in children) == list(range(1, len(children) + 1))
    for row in grown.confirm["candidates"]:
        assert len(row["values"]) == 3
    assert math.isclose(client.get_run(result.parent_run_id).data.metrics["cost_usd"],
                        sum(c.data.metrics["cost_usd"] for c in children))
