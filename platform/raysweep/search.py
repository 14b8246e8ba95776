"""Spec -> Ray Tune search (Optuna TPE or random, ASHA or FIFO) -> `SearchResult`."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from .audit import (audit_configs, audit_metrics, audit_summary, audit_summary_metrics, describe_audit,
                    rung_correlations)
from .book import FAILED, FINISHED, RUNNING, STOPPED, TrialBook
from .budget import Budget
from .claim import hold
from .confirm import choose, confirm_configs, describe, summary_metrics
from .errors import Interrupted, SearchFailed, SpecError, TooManyFailures
from .failures import no_space, one_line
from .ingest import TrialData
from .pareto import choose as choose_from_front, describe as describe_front
from .plots import write_plots
from .progress import ProgressCallback, leaderboard
from .resume import can_restore, check_resume, find_previous, mark_concluded, retrain_name, round_name
from .runsetup import RunSetup, begin, data_kwargs, end_running_killed
from .signals import uninterrupted
from .spec import Spec
from .storage import join, reason
from .tasks.contract import can_log_model, capabilities
from .totals import cost_sums, search_totals
from .tracking.names import (BEST_RUN_ID_TAG, BEST_TAG, BEST_TRIAL_ID_TAG, BUDGET_REACHED_TAG, ERROR_TAG,
                             IMPORTANCE_EPOCH_TAG, IMPORTANCE_PREFIX, INTERRUPTED_TAG, MODEL_SOURCE_TAG, MODEL_URI_TAG,
                             PARETO_TAG)
from .tracking.uri import runs_url
from .views import warm_up as views_warm_up

if TYPE_CHECKING:  # MLflow loads as Ray starts, torch once it is up (docs/design.md, point 38)
    from .tracking.tracker import Tracker


@dataclass
class SearchResult:
    name: str
    experiment_id: str | None
    parent_run_id: str | None
    metric: str
    mode: str
    best: dict[str, Any] | None
    trials: list[dict[str, Any]]
    epochs_run: int
    epochs_budget: int
    wall_s: float
    test_metrics: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None
    # device_hours, cost_usd, flops, samples, energy_j, co2e_kg (None: no energy figure), compute_saved_fraction
    totals: dict[str, float | None] = field(default_factory=dict)
    model_uri: str | None = None  # the best model, MLflow PyTorch flavor, registered
    error: str | None = None  # why the search failed or stopped (then `run_search` raises)
    status: str = "finished"  # or "failed" (SearchFailed), "interrupted" (Interrupted: Ctrl-C)
    # search.budget: {"limits": {...}, "spent": {...}, "reached": the limit that ended it or None}
    budget: dict[str, Any] | None = None
    # search.confirm: each candidate's values over fresh seeds, mean, sd; which was chosen (confirm.py)
    confirm: dict[str, Any] | None = None
    # scheduler.audit: stopped trials trained to the end, how many beat the chosen one (audit.py)
    audit: dict[str, Any] | None = None
    # several objectives: the Pareto front, each member's values, the one chosen (pareto.py)
    pareto: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ui_url(self) -> str | None:
        if self.tracking_uri is None or self.experiment_id is None:
            return None
        return runs_url(self.tracking_uri, self.experiment_id)


def run_search(
    spec: Spec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    verbose: bool = False,
    console: Console | None = None,
    resume: bool = False,
    more_samples: int | None = None,
    shutdown_ray: bool = False,
) -> SearchResult:
    """Run the search a spec describes; log it to MLflow; return its summary.

    `resume`: continue the search of the same name under `storage` whose driver died
    (finished trials stay, interrupted ones continue from their checkpoints, MLflow runs are
    reused); with `more_samples`, run that many more trials after a finished search.
    `shutdown_ray` (what `raysweep search` does): a Ray this call starts is shut down once the
    trials are done and tested, while the model and the summary are logged.
    """
    run = begin(spec, storage=storage, tracking_uri=tracking_uri, verbose=verbose, console=console,
                shutdown_ray=shutdown_ray)
    # One driver per search; a new search of a name used before keeps the earlier one's files aside.
    with hold(run.storage, spec.name, resume=resume, tracking_uri=run.uri,
              say=lambda line: run.console.print(line, highlight=False)), run.interrupt:
        # Ctrl-C and SIGTERM are a stop from here on (interrupt.py), Ray's start included.
        return _search(spec, run, verbose=verbose, resume=resume, more_samples=more_samples)


def _search(spec: Spec, run: RunSetup, *, verbose: bool, resume: bool, more_samples: int | None) -> SearchResult:
    """`run_search`'s work, by the search's one driver."""
    book, storage, console, uri, started = run.book, run.storage, run.console, run.uri, run.started
    previous = find_previous(storage, spec.name) if resume else None
    if resume:
        check_resume(previous, spec, storage, more_samples)
        for line in previous.mended:
            console.print(line, highlight=False)
    if previous is not None and previous.book_state:
        book.set_state(previous.book_state)
        if more_samples is not None:  # a new round: its target on top of every earlier run's; its own choice
            book.target = None if book.target is None else previous.book_state["target"] + more_samples
            book.chosen = None
    budget = None if spec.search.budget is None else Budget(spec, book)
    if budget is not None:
        if more_samples is not None and budget.exhausted():  # it spans every round of the search
            raise SpecError(f"--samples +{more_samples}: search {spec.name!r} has spent its search.budget "
                            f"({budget.spent_text()}): raise "
                            f"search.budget.{budget.reached} (--set search.budget.{budget.reached}=...) to run more")
        console.print(budget.forecast(spec.search.samples, spec.max_epochs), highlight=False)
    # Ray starts before the parent run: a cluster that can never hold a trial is refused first.
    run.start_ray(None if uri is None else lambda: _open_tracker(spec, storage, uri))
    tracker = run.tracker
    with run.imports():  # torch, once Ray is up (docs/design.md, point 38)
        from .trial import trial_params
        from .tuner import StopAfterFailures, build_tuner, fit, restore_tuner

    def killed(catch: type[BaseException] = BaseException):
        return _ends_runs_killed(book, tracker, run, catch)

    with killed(KeyboardInterrupt):  # a stop from the parent run's creation on ends it KILLED
        if tracker is not None:
            if book.parent_run_id is None:
                with uninterrupted():  # the new run's id is in the book before a stop is acted on
                    book.parent_run_id = tracker.start_search(spec)
            else:  # runs the dead driver left RUNNING are put right; the rest are picked up again
                reopened = tracker.reopen_search(book.parent_run_id, book.records, spec.rank_metric,
                                                 previous.unfinished)
                book.parent_params, book.orphaned, book.parent_tags = reopened.params, reopened.orphaned, reopened.tags
                book.waiting = reopened.waiting
        parent_run_id = book.parent_run_id
        progress = ProgressCallback(book, console, budget)
        # What the parent run's plots (plots.py) and views draw with, readied while the trials train.
        end_work = ("matplotlib.figure", *((views_warm_up,) if spec.tracking.views else ()))
        callbacks = run.callbacks(parent_run_id, lambda c: trial_params(spec, c), progress, *end_work)
    task, interrupt, mlflow_callback = run.task, run.interrupt, run.mlflow_callback
    round_no = 0 if previous is None else previous.round + (more_samples is not None)

    def say(line: str) -> None:
        console.print(line, highlight=False)

    def after_fit() -> None:
        if interrupt.after_fit():
            stopped = _interrupted(spec, book, tracker, mlflow_callback, started, uri, console, verbose, budget)
            stopped.signum = interrupt.signum
            raise stopped

    # --resume of a driver that died after its trials but before its end: it may have died in a
    # confirm or audit round, which then goes on (Tune's experiment, runs from their checkpoints).
    continuing = previous is not None and more_samples is None and not previous.finished

    def retrain_round(configs: list[dict], label: str, stop: StopAfterFailures | None = None) -> None:
        """A further round after the search's own (confirm, audit), on its data: these `configs`,
        or the round a dead driver began, continued."""
        path = join(storage, retrain_name(round_name(spec.name, round_no), label))
        with killed():
            if continuing and can_restore(path):
                tuner = restore_tuner(spec, storage, path, callbacks, book.records, stop, data=data,
                                      splits=splits, retrain=True, say=say)
            elif configs:
                if book.target is not None:
                    book.target += len(configs)
                tuner = build_tuner(spec, storage, callbacks, verbose, round_no=round_no, data=data, splits=splits,
                                    stop=stop, confirm=configs, label=label)
            else:
                return
            fit(tuner)
        after_fit()

    with killed():  # a Ctrl-C before fit() or a second one inside it, a Tune error
        data, splits = run.load_data(), run.shared_splits()
        stop = StopAfterFailures(book, spec.search.max_failed_trials or None, run.wait, budget)
        if previous is None:
            tuner = build_tuner(spec, storage, callbacks, verbose, stop=stop, data=data, splits=splits,
                                budget=budget)
        elif more_samples is None:
            tuner = restore_tuner(spec, storage, previous.path, callbacks, book.searched(), stop, data=data,
                                  splits=splits, budget=budget, say=say)
        else:
            tuner = build_tuner(spec, storage, callbacks, verbose, round_no=round_no,
                                num_samples=more_samples, prior=book.searched(), stop=stop, data=data,
                                splits=splits, budget=budget)
        fit(tuner)
    after_fit()
    confirmed = None
    if spec.search.confirm is not None and stop.failure is None:
        if budget is not None:
            budget.reserve = 0  # the room kept for these runs is theirs now
        retrain_round(confirm_configs(spec, book), "confirm", stop=stop)
        confirmed = choose(spec, book)
        if confirmed is not None:
            console.print(describe(confirmed), highlight=False)
    front = None
    if spec.multi_objective and stop.failure is None:
        front = choose_from_front(book)  # before the audit, which compares with the chosen trial
        if front is not None:
            console.print(describe_front(front), highlight=False)
        else:
            console.print(f"warning: no trial reported a finite value of every objective "
                          f"({', '.join(m for m, _ in spec.objectives)}): no Pareto front", highlight=False)
    audited = None
    if spec.scheduler.audit and stop.failure is None:
        configs = audit_configs(spec, book)
        if configs:
            console.print(f"auditing early stopping: {len(configs)} stopped trial(s) trained to max_epochs",
                          highlight=False)
        retrain_round(configs, "audit")  # no budget stopper: asked for on top of the search
        audited = audit_summary(spec, book)
        if audited is not None:
            console.print(describe_audit(audited), highlight=False)
    try:
        run.warmed_up()
        result, failure = _conclude(spec, task, book, tracker, data, started, uri, stop.failure, budget,
                                    confirmed, audited, front, ray_done=run.ray_done)
    except Exception as exc:  # the trials are saved: a failure here must not lose them
        raise _failed_after_trials(exc, spec, book, tracker, started, uri, verbose) from exc
    finally:
        run.ray_shut_down()
    try:
        mark_concluded(join(storage, round_name(spec.name, round_no)), book.get_state())
    except OSError as exc:  # storage full or gone: MLflow has the search whole
        console.print(f"warning: the search's end could not be written to its storage ({reason(exc)}): "
                      "--resume would take it for unfinished and run its last steps again", highlight=False)
    if not verbose:
        console.print(leaderboard(book))
    if result.model_uri and result.model_uri == book.parent_tags.get(MODEL_URI_TAG):
        console.print(f"best trial unchanged: its model, logged before, stays {result.model_uri} (no new version)",
                      highlight=False)
    if budget is not None:
        console.print(budget.summary(), highlight=False)
    if failure is not None:
        failure.result = result
        raise failure
    return result


def _open_tracker(spec: Spec, storage: str, uri: str) -> Tracker:
    """The search's MLflow store, in a thread while Ray starts (RunSetup.start_ray). MLflow down
    mid-search: its writes wait in the search's storage (spool.py)."""
    from .tracking.spool import Spool
    from .tracking.tracker import Tracker

    return Tracker(uri, spec.experiment, spool=Spool(storage, spec.name, uri))


@contextlib.contextmanager
def _ends_runs_killed(book: TrialBook, tracker: Tracker | None, run: RunSetup,
                      catch: type[BaseException] = BaseException):
    """An exception out of a Tune round ends the running trials' runs KILLED. A Ctrl-C (before
    fit() or a second one inside it) ends the parent KILLED and goes on; any other error (Tune's
    own, storage full) ends it FAILED with the reason and its traceback, and becomes a
    SearchFailed: one line, exit 1, not a traceback. `catch`: the exceptions handled (the
    parent run's creation: a stop only). The parent and the MLflow callback are the book's and
    the run's when the exception comes (a stop may come before the callback exists)."""
    try:
        yield
    except catch as exc:
        # raysweep's own refusals (SpecError, SearchFailed) end it KILLED as a Ctrl-C does.
        failed = isinstance(exc, Exception) and not isinstance(exc, (SearchFailed, SpecError))
        error = one_line(exc)[:5000] if failed else None
        parent_run_id, unrecorded = book.parent_run_id, ""
        if tracker is not None and parent_run_id is not None:
            tags = {INTERRUPTED_TAG: "true"} if isinstance(exc, KeyboardInterrupt) else {}
            try:
                end_running_killed(book, tracker, run.mlflow_callback, tags)
                if failed:
                    with contextlib.suppress(Exception):  # MLflow may be what failed: the line still says why
                        tracker.log_text(parent_run_id, traceback.format_exc(), "error/traceback.txt")
                tracker.end_run(parent_run_id, "FAILED" if failed else "KILLED", {ERROR_TAG: error} if failed else tags)
            except Exception as again:  # noqa: BLE001 - MLflow and its spool's disk full: say so, not a traceback
                why = one_line(again)[:300]
                unrecorded = ("; MLflow could not record the runs' end " + ("either" if why == error else f"({why})")
                              + ": they show RUNNING")
                if not failed:
                    logging.getLogger(__name__).warning(unrecorded.lstrip("; "))
        if not failed:
            raise
        then = ("what ran is recorded up to there: free space, then --resume continues the search from the "
                "trials' last saved state") if no_space(exc) else \
            "what ran is recorded, and the trials' state saved (--resume continues the search once the cause is fixed)"
        raise SearchFailed(f"the search stopped: {error}{unrecorded}; {then}") from exc


def _result(spec: Spec, book: TrialBook, tracker: Tracker | None, started: float, uri: str | None,
            budget: Budget | None = None, **fields) -> SearchResult:
    """The summary of what the book holds (`fields`: test metrics, error, status)."""
    best = book.best()
    return SearchResult(
        name=spec.name,
        experiment_id=tracker.experiment_id if tracker else None,
        parent_run_id=book.parent_run_id,
        metric=spec.rank_metric,
        mode=spec.rank_mode,
        best=None if best is None else {
            "number": best.number, "trial_id": best.trial_id, "run_id": best.run_id, "config": best.config, "value": best.value,
            "epochs": best.epochs, "metrics": best.metrics,
        },
        trials=[
            {"number": r.number, "trial_id": r.trial_id, "run_id": r.run_id, "status": r.status, "epochs": r.epochs,
             "value": r.value, "config": r.config, "metrics": r.metrics,
             # the metric epoch by epoch, timed from the search's start, with the trial's
             # device-hours so far: anytime curves (best value against epochs, seconds or
             # compute spent) without reading Tune's files
             "history": [{"t": round(t, 3), "epoch": epoch, "value": value, "device_hours": hours}
                         for t, epoch, value, hours in r.history],
             # the trial's last checkpoint (a directory under the search's storage), or None
             "checkpoint": None if r.checkpoint is None else r.checkpoint.path,
             **({"error": r.error, "failure": r.failure} if r.error else {})}
            for r in book.records.values()
        ],
        epochs_run=book.epochs_run,
        epochs_budget=len(book.records) * spec.max_epochs,
        wall_s=round(time.monotonic() - started, 3),
        tracking_uri=uri,
        totals=book_totals(book),
        budget=None if budget is None else {"limits": budget.limits, "spent": budget.spend(),
                                            "reached": budget.reached},
        **fields,
    )


def _conclude(spec: Spec, task, book: TrialBook, tracker: Tracker | None, data: TrialData | None,
              started: float, uri: str | None, stopped: str | None = None, budget: Budget | None = None,
              confirmed: dict | None = None, audited: dict | None = None,
              front: dict | None = None, ray_done: Callable[[], None] = lambda: None,
              ) -> tuple[SearchResult, SearchFailed | None]:
    """After the trials: the best trial on the test split, its model, the parent run's summary;
    and why the search failed (`search_failure`; `stopped`: why it stopped early), if it did.
    `ray_done` is called once nothing more needs Ray (a `data:` split is read through it)."""
    from .models import checkpoint_state
    from .trial import trial_params

    best = book.best()
    state = None  # the best checkpoint's state, for tasks that can evaluate or rebuild a model from it
    evaluates, logs_model = capabilities(task).evaluate, can_log_model(task, data)
    if best is not None and best.checkpoint is not None and (evaluates or logs_model):
        state = checkpoint_state(best.checkpoint)
    test_metrics: dict[str, float] = {}
    if state is not None and evaluates:
        test_metrics = task.evaluate(trial_params(spec, best.config), state, spec.seed, **data_kwargs(data))
    model_to_log = tracker is not None and state is not None and spec.tracking.log_model and logs_model
    example = None if data is None or not model_to_log else data.example()
    ray_done()
    failure = search_failure(spec, book, stopped)
    result = _result(spec, book, tracker, started, uri, budget, test_metrics=test_metrics, confirm=confirmed,
                     audit=audited, pareto=front,
                     error=None if failure is None else str(failure),
                     status="finished" if failure is None else "failed")
    if tracker is not None:
        model = None
        # A failed search registers no model version: its best trial is known, not vetted.
        if failure is None and model_to_log:
            logged = _model_logged_before(book, spec, tracker)
            model = (lambda: logged) if logged else _logging_in_a_thread(
                tracker.log_model, book.parent_run_id, spec.task, trial_params(spec, best.config), state, spec.seed,
                registered_name=spec.registered_model_name, example=example,
                version_tags={**test_metrics, MODEL_SOURCE_TAG: model_source(spec, best)},
            )
        _log_summary(tracker, spec, book, result, data, model=model)
        _settle_ids(tracker, result)
    return result, failure


def _logging_in_a_thread(log_model: Callable[..., str | None], *args, **kwargs) -> Callable[[], str | None]:
    """`log_model(*args, **kwargs)` started in a thread of its own; the returned function
    waits for it and gives its model URI (or raises as it did). The model's logging (its export
    and files; with a server, a few dozen round trips) goes on while the summary's plots and
    views are drawn, which need no MLflow call (0.8 s of drawing, under cProfile, in the
    tracking-overhead benchmark's search: docs/design.md, point 41)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="raysweep-model")
    future = pool.submit(log_model, *args, **kwargs)
    pool.shutdown(wait=False)
    return future.result


def model_source(spec: Spec, best) -> str:
    """What the best model is built from: its trial, checkpoint and registered name."""
    checkpoint = None if best.checkpoint is None else best.checkpoint.path
    return json.dumps({"trial_id": best.trial_id, "checkpoint": checkpoint, "registered_model": spec.registered_model_name})


def _model_logged_before(book: TrialBook, spec: Spec, tracker: Tracker | None = None) -> str | None:
    """The model URI an earlier round of this search logged from the same best checkpoint, if
    one did: an extended search (--resume --samples +N) whose choice is unchanged registers no
    second version of the same model. Nor does a resumed search whose dead driver registered
    it but died before the parent run said so: the registry's version of this parent run
    built from the same checkpoint (its tag) is the one."""
    tags, source = book.parent_tags, model_source(spec, book.best())
    if tags.get(MODEL_URI_TAG) and tags.get(MODEL_SOURCE_TAG) == source:
        return tags[MODEL_URI_TAG]
    if tags and tracker is not None:  # parent_tags: a resumed search's
        return tracker.registered_from(spec.registered_model_name, book.parent_run_id, source)
    return None


def _settle_ids(tracker: Tracker, result: SearchResult) -> None:
    """Send what an outage spooled; runs created during it are known by their real ids now."""
    from .tracking.spool import substitute

    ids = tracker.finish()
    result.parent_run_id, result.best, result.trials, result.pareto = substitute(
        (result.parent_run_id, result.best, result.trials, result.pareto), ids)


def _interrupted(spec: Spec, book: TrialBook, tracker: Tracker | None, mlflow_callback, started: float,
                 uri: str | None, console: Console, verbose: bool, budget: Budget | None = None) -> Interrupted:
    """Ctrl-C: running trials' runs end KILLED with their epochs so far, the parent KILLED with
    the summary of what finished; no test evaluation, no model. Tune saved the rest for --resume."""
    running = [r for r in book.records.values() if r.status == RUNNING]
    counts = book.counts()
    message = (f"interrupted: {counts[FINISHED]} trial(s) finished, {counts[STOPPED]} stopped early, "
               f"{counts[FAILED]} failed, {len(running)} running saved at their last checkpoint")
    result = _result(spec, book, tracker, started, uri, budget, status="interrupted", error=message)
    if tracker is not None:
        end_running_killed(book, tracker, mlflow_callback, {INTERRUPTED_TAG: "true"})
        # No views: a Ctrl-C asks to be out quickly; the resumed search draws them at its end.
        _log_summary(tracker, spec, book, result, status="KILLED", tags={INTERRUPTED_TAG: "true"}, views=False)
        _settle_ids(tracker, result)
    if not verbose:
        console.print(leaderboard(book))
    return Interrupted(message, result)


def _failed_after_trials(exc: Exception, spec: Spec, book: TrialBook, tracker: Tracker | None, started: float,
                         uri: str | None, verbose: bool) -> SearchFailed:
    """An error once the trials had run (test evaluation, model registry, summary, MLflow):
    the parent ends FAILED with the reason, the summary is still returned, --resume redoes this part."""
    error = f"after the trials: {one_line(exc)}"
    if verbose:
        logging.getLogger(__name__).exception("the search's last steps failed")
    result = _result(spec, book, tracker, started, uri, status="failed", error=error)
    if tracker is not None:
        try:
            tracker.log_text(book.parent_run_id, traceback.format_exc(), "error/traceback.txt")
            tracker.end_run(book.parent_run_id, "FAILED", {ERROR_TAG: error[:5000]})
            _settle_ids(tracker, result)
        except Exception as again:  # MLflow itself may be what failed: the summary JSON still says why
            result.error = f"{error}; and the parent run could not be ended: {one_line(again)[:300]}"
    return SearchFailed(f"{result.error}; the trials are saved: --resume runs these last steps again", result)


def search_failure(spec: Spec, book: TrialBook, stopped: str | None = None) -> SearchFailed | None:
    """Why the search failed, as the exception `run_search` raises once it has logged what finished.
    `stopped`: why the search stopped before its trials could run (capacity.CapacityWait)."""
    if stopped is not None:
        return SearchFailed(stopped)
    counts, best, limit = book.counts(), book.best(), spec.search.max_failed_trials
    errors = [r.error for r in book.records.values() if r.error]
    first_error = f"; first error: {errors[0]}" if errors else ""
    no_value = f"no trial reported a finite {spec.rank_metric!r}"
    if limit is not None and counts[FAILED] >= limit:
        failed = f"{counts[FAILED]} trial{'s' if counts[FAILED] != 1 else ''} failed"
        outcome = no_value if best is None else f"best {spec.rank_metric} {best.value:.4g} (trial {best.number:03d})"
        return TooManyFailures(
            f"search stopped: {failed} (search.max_failed_trials: {limit}); "
            f"{counts[FINISHED]} finished, {counts[STOPPED]} stopped early; {outcome}{first_error}"
        )
    return SearchFailed(no_value + first_error) if best is None else None


# Per-trial cumulative cost metrics whose sum over trials is the search's (cost.py).
def book_totals(book: TrialBook) -> dict[str, float | None]:
    """The search's totals (totals.py) from the driver's book."""
    return search_totals([rec.metrics for rec in book.records.values()], epochs_run=book.epochs_run,
                         epochs_budget=len(book.records) * book.spec.max_epochs, orphaned=book.orphaned)


def _log_summary(tracker: Tracker, spec: Spec, book: TrialBook, result: SearchResult,
                 data: TrialData | None = None, *, status: str | None = None, tags: dict | None = None,
                 views: bool = True, model: Callable[[], str | None] | None = None) -> None:
    """Parent run: best trial's params and value, test metrics, totals, best checkpoint, and
    what the spec's data: section held (rows, classes, preprocessing statistics); then ended
    with `status` (default FINISHED, or FAILED with the reason). `model`: waits for the best
    model's logging (`_logging_in_a_thread`), whose URI becomes `result.model_uri`: the plots
    and views are drawn first, and the MLflow writes here made only once it is done (one
    writer at a time through the tracker's client)."""
    with tempfile.TemporaryDirectory(prefix="raysweep-summary-") as directory:
        try:
            drawn = _draw_summary(spec, book, directory, views)
        finally:  # an error, or a Ctrl-C, while drawing: the model's writes still end first
            if model is not None:
                result.model_uri = model()
        _write_summary(tracker, spec, book, result, data, drawn, status=status, tags=tags)


@dataclass
class _Drawn:
    """The summary's files and the numbers that came with drawing them."""

    plots: str
    views: str | None = None
    importances: dict[str, float] = field(default_factory=dict)
    compared_epoch: int | None = None


def _draw_summary(spec: Spec, book: TrialBook, directory: str, views: bool) -> _Drawn:
    """The plots, and unless `views` is False or the spec turns them off, the views and the
    hyperparameters' importances, under `directory`; no MLflow call."""
    import os

    drawn = _Drawn(plots=os.path.join(directory, "plots"))
    os.makedirs(drawn.plots)
    write_plots(book, drawn.plots)
    if views and spec.tracking.views:
        from .views import compared_epoch, importances, write_views  # Optuna's plotting: plotly (and pyplot)

        drawn.importances = importances(book)
        if drawn.importances:
            drawn.compared_epoch = compared_epoch(book)
        drawn.views = os.path.join(directory, "views")
        write_views(book, drawn.views, images=spec.tracking.view_images)
    return drawn


def _write_summary(tracker: Tracker, spec: Spec, book: TrialBook, result: SearchResult, data: TrialData | None,
                   drawn: _Drawn, *, status: str | None = None, tags: dict | None = None) -> None:
    from .trial import trial_params

    run_id = result.parent_run_id
    if data is not None:
        tracker.log_text(run_id, json.dumps(data.info, indent=1, default=str), "data_info.json")
    if result.confirm is not None:
        tracker.log_text(run_id, json.dumps(result.confirm, indent=1, default=str), "confirm.json")
    if result.audit is not None:
        tracker.log_text(run_id, json.dumps(result.audit, indent=1, default=str), "audit.json")
    if result.pareto is not None:
        tracker.log_text(run_id, json.dumps(result.pareto, indent=1, default=str), "pareto.json")
        for member in result.pareto["front"]:
            if member["run_id"]:
                tracker.set_tags(member["run_id"], {PARETO_TAG: "true"})
        for left in result.pareto["left_front"]:
            tracker.set_tags(left, {PARETO_TAG: "false"})
    counts = book.counts()
    totals = {
        "trials_total": len(book.records),
        "trials_finished": counts["finished"],
        "trials_stopped_early": counts[STOPPED],
        "trials_failed": counts[FAILED],
        "epochs_run": result.epochs_run,
        "epochs_budget": result.epochs_budget,
        "compute_saved_fraction": result.totals["compute_saved_fraction"],
        "wall_s": result.wall_s,
        # the children's metric names: the parent's value is their sum
        **cost_sums([rec.metrics for rec in book.records.values()], book.orphaned),
        **result.test_metrics,
        **summary_metrics(spec, result.confirm),
        **audit_summary_metrics(result.audit),
        **({} if result.pareto is None else {"pareto_size": len(result.pareto["front"])}),
        # search.budget: each limit's spend (the limits themselves are the run's params)
        **{f"budget_spent_{limit}": spent for limit, spent in (result.budget or {}).get("spent", {}).items()},
    }
    best = book.best()
    tags = dict(tags or {})
    if result.budget and result.budget["reached"]:
        tags[BUDGET_REACHED_TAG] = result.budget["reached"]
    if best is not None:
        totals[f"best_{spec.rank_metric}"] = best.value
        tracker.log_best_params(run_id, trial_params(spec, best.config), book.parent_params)
        tags.update({BEST_TRIAL_ID_TAG: best.trial_id, BEST_RUN_ID_TAG: best.run_id or ""})
        if best.checkpoint is not None:
            with best.checkpoint.as_directory() as directory:
                tracker.log_artifacts(run_id, directory, "best_checkpoint")
        if best.run_id:
            tracker.set_tags(best.run_id, {BEST_TAG: "true"})
        if result.model_uri:
            tags.update({MODEL_URI_TAG: result.model_uri, MODEL_SOURCE_TAG: model_source(spec, best)})
    tracker.log_artifacts(run_id, drawn.plots, "plots")
    totals.update(audit_metrics(rung_correlations(book)))
    totals.update({f"{IMPORTANCE_PREFIX}{param}": share for param, share in drawn.importances.items()})
    if drawn.compared_epoch is not None:
        tags[IMPORTANCE_EPOCH_TAG] = str(drawn.compared_epoch)
    if drawn.views is not None:
        tracker.log_artifacts(run_id, drawn.views, "views")
    # Step: trials so far. An extended search (--resume --samples +N) logs its summary again.
    tracker.log_metrics(run_id, {k: float(v) for k, v in totals.items() if v is not None and math.isfinite(v)},
                        step=len(book.records))
    if status is None and result.error:
        tags[ERROR_TAG] = result.error
    tracker.end_run(run_id, status or ("FAILED" if result.error else "FINISHED"), tags)
