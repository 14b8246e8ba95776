"""Why a search chose what it chose: the views on its parent run, drawn by Optuna.

MLflow has no view made for a hyperparameter search, so the search builds in-memory Optuna
studies from its trials and lets Optuna's own importance evaluator and plots answer "which
hyperparameters mattered" and "what happened to each trial". Two studies, because Optuna's
importance, slice and parallel-coordinate code reads COMPLETE trials only:

* `history_study`: every trial as it happened: finished trials COMPLETE, trials early
  stopping ended PRUNED at the epoch it stopped them (as Optuna records its own pruned
  trials), failed ones FAIL; each epoch's value and when the trial ran. For the timeline and
  the learning curves.
* `rung_study`: every trial COMPLETE, valued at the `compared_epoch`, the latest epoch every
  trial reached (the grace period under ASHA, max_epochs without early stopping), so a
  1-epoch value is never ranked against a 20-epoch one. For importance, slice and parallel
  coordinates. Whether that epoch's ranking predicts the final one is the audit's question
  (audit.py).

Each view is a section of one HTML page (`views/search.html`: plotly.js is embedded once,
about 4.6 MB, so the page renders in MLflow's artifact viewer with no network), and with
`tracking.view_images` a PNG beside it for reports (Optuna's matplotlib plots: ten times the
page's drawing time, so not by default; opened in a browser, each plot on the page downloads as
`<view>.png` from its camera button, which MLflow's sandboxed viewer blocks).
Imported once the trials are done: Optuna's plotting pulls in plotly (and matplotlib).
"""

from __future__ import annotations

import datetime
import html
import logging
import os
import warnings
from typing import Callable

import optuna

from .book import FAILED, FINISHED, TrialBook, TrialRecord
from .space import config_params

# Below this many trials the importance and the per-parameter plots say nothing reliable;
# fANOVA's forest needs a handful of points per parameter.
MIN_TRIALS = 4


def _searched(book: TrialBook) -> list[TrialRecord]:
    """The search's own trials: with a value, not runs confirming a configuration (confirm.py)."""
    return [r for r in sorted(book.records.values(), key=lambda r: r.number)
            if r.confirms is None and any(v is not None for _, _, v, _ in r.history)]


def _study(book: TrialBook) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="minimize" if book.spec.rank_mode == "min" else "maximize",
                               study_name=book.spec.name)


def history_study(book: TrialBook) -> optuna.Study:
    study = _study(book)
    for rec in _searched(book):
        params, distributions = config_params(book.spec, rec.config)
        values = rec.values_by_epoch()
        state = {FINISHED: optuna.trial.TrialState.COMPLETE, FAILED: optuna.trial.TrialState.FAIL}.get(
            rec.status, optuna.trial.TrialState.PRUNED)  # stopped, or cut off running by a Ctrl-C
        if state == optuna.trial.TrialState.COMPLETE and rec.value is None:
            state = optuna.trial.TrialState.FAIL  # Optuna refuses a complete trial without a value
        trial = optuna.trial.create_trial(
            state=state, value=rec.value if state == optuna.trial.TrialState.COMPLETE else None, params=params,
            distributions=distributions, intermediate_values=values,
            user_attrs={"trial_id": rec.trial_id, "epochs": rec.epochs, "status": rec.status})
        start = rec.started_t if rec.started_t is not None else rec.history[0][0]
        trial.datetime_start = _when(book, start)
        trial.datetime_complete = _when(book, rec.history[-1][0])
        study.add_trial(trial)
    return study


def _when(book: TrialBook, t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(book.started_at + t)


def compared_epoch(book: TrialBook) -> int | None:
    """The latest epoch every trial of the search reported a value at."""
    reached = [max(r.values_by_epoch()) for r in _searched(book) if r.status != FAILED]
    return min(reached) if reached else None


def rung_study(book: TrialBook) -> tuple[optuna.Study, int | None]:
    study, epoch = _study(book), compared_epoch(book)
    if epoch is None:
        return study, None
    for rec in _searched(book):
        values = rec.values_by_epoch()
        if rec.status == FAILED or epoch not in values:
            continue
        params, distributions = config_params(book.spec, rec.config)
        study.add_trial(optuna.trial.create_trial(
            value=values[epoch], params=params, distributions=distributions,
            user_attrs={"trial_id": rec.trial_id, "epochs": rec.epochs, "status": rec.status}))
    return study, epoch


def _evaluator():
    """Optuna's PED-ANOVA: how differently the best 10% of trials are spread over each
    hyperparameter than all of them. On a search's few dozen trials it found the one
    hyperparameter that mattered where fANOVA's forest gave a third of the credit to noise
    (tests/test_views.py: lr 0.93 against fANOVA's 0.51 over 12 trials); and it is fast."""
    return optuna.importance.PedAnovaImportanceEvaluator()


def importances(book: TrialBook) -> dict[str, float]:
    """Each searched hyperparameter's importance for the metric at the compared epoch, the
    shares summing to 1 (`_evaluator`): {} with fewer than MIN_TRIALS trials."""
    study, _ = rung_study(book)
    if len(study.trials) < MIN_TRIALS or not study.trials[0].params:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shares = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    return {param: float(share) for param, share in shares.items()}


# --------------------------------------------------------------------------- drawing


def _optuna_plot(name: str, *args, **kwargs) -> tuple[Callable, Callable]:
    """Optuna's plot `name` (`plot_slice`, ...) on these arguments: drawn as a plotly figure,
    and as matplotlib axes (optuna.visualization.matplotlib has the same functions)."""
    from optuna import visualization as vis
    from optuna.visualization import matplotlib as mpl

    return lambda: getattr(vis, name)(*args, **kwargs), lambda: getattr(mpl, name)(*args, **kwargs)


def _views(book: TrialBook) -> list[tuple[str, str, str, Callable, Callable]]:
    """(file stem, title, what it shows, plotly figure, matplotlib axes) of every view there is
    data for."""
    spec = book.spec
    history = history_study(book)
    rung, epoch = rung_study(book)
    at = f"{spec.rank_metric} at epoch {epoch}"
    why = (f"{at}, the latest epoch every trial reached: a trial early stopping ended is compared with the others"
           " where it stood when they all still ran")
    views = []
    if len(rung.trials) >= MIN_TRIALS and rung.trials[0].params:
        views += [
            ("importance", "Hyperparameter importance",
             f"How much each hyperparameter mattered for {why}. Optuna's PED-ANOVA: how differently the best 10% "
             "of trials are spread over each hyperparameter than all trials; the shares sum to 1.",
             *_optuna_plot("plot_param_importances", rung, evaluator=_evaluator(), target_name=at)),
            ("parallel_coordinates", "Parallel coordinates",
             f"One line per trial through its hyperparameters, coloured by {why}.",
             *_optuna_plot("plot_parallel_coordinate", rung, target_name=at)),
            ("slice", "Slice per hyperparameter",
             f"{at} against each hyperparameter; the colour is the trial's number (later trials are TPE's).",
             *_optuna_plot("plot_slice", rung, target_name=at)),
        ]
    # Optuna draws no failed trial's curve, and says so in a warning when no other is left.
    if any(t.state != optuna.trial.TrialState.FAIL for t in history.trials):
        views.append(
            ("learning_curves", "Learning curves",
             f"{spec.rank_metric} at every epoch of every trial; a trial's line ends where it finished or was stopped.",
             *_optuna_plot("plot_intermediate_values", history)))
    if history.trials:
        views += [
            ("timeline", "Timeline",
             "When each trial ran; Pruned: early stopping ended it at a rung; Complete: it ran to max_epochs.",
             *_optuna_plot("plot_timeline", history)),
            *_pareto_view(book),
            *_audit_view(book),
            ("best_vs_cost", "Best so far against compute",
             f"The best {spec.rank_metric} reported so far against the device-hours spent, epochs in the order they ran.",
             lambda: _best_vs_cost_figure(book), None),
        ]
    return views


def _pareto_view(book: TrialBook) -> list[tuple[str, str, str, Callable, Callable]]:
    """Several objectives: every candidate trial by its first two objectives, the front
    highlighted (Optuna's plot; three objectives make it 3-D, more: the first two)."""
    if not book.spec.multi_objective:
        return []
    from .pareto import pareto_study

    study = pareto_study(book)
    names = [m for m, _ in book.spec.objectives]
    shown = names if len(names) <= 3 else names[:2]
    targets = None if len(names) <= 3 else (lambda t: tuple(t.values[:2]))
    return [("pareto_front", "Pareto front",
             f"Each trial by {' and '.join(shown)} (its last report; a stopped trial's cost is what it ran). The "
             "front: the trials no other trial beats on every objective. The model registered is the front's best "
             f"{names[0]} within the spec's limits.",
             *_optuna_plot("plot_pareto_front", study, target_names=shown, targets=targets))]


def _audit_view(book: TrialBook) -> list[tuple[str, str, str, Callable, Callable]]:
    """The early-stopping audit (audit.py): each rung's rank correlation and, with
    scheduler.audit, the audited trials' curves against the chosen trial's final value."""
    from .audit import rung_correlations

    correlations = rung_correlations(book)
    audited = [r for r in book.records.values() if r.retrain == "audit" and r.values_by_epoch()]
    if not correlations and not audited:
        return []
    metric = book.spec.rank_metric
    caption = ("Left: at each ASHA rung, the Spearman rank correlation between the values of the trials that went on "
               "past it and their later values (n: how many); near 1 the rung ranked trials as they ended, near 0 "
               "its stops were a coin toss.")
    if audited:
        caption += (f" Right: stopped trials trained to max_epochs (scheduler.audit), each {metric} curve marked where "
                    "ASHA had stopped it, against the chosen trial's final value (dashed): a curve ending on the "
                    "better side of it is a winner early stopping threw away.")
    return [("audit", "Early-stopping audit", caption, lambda: _audit_figure(book, correlations, audited),
             lambda: _audit_axes(book, correlations, audited))]


def _audit_series(book: TrialBook, audited: list[TrialRecord]):
    """Each audited run: (label, epochs, values, the epoch ASHA stopped it at); the chosen value."""
    chosen = book.best()
    series = []
    for rec in sorted(audited, key=lambda r: r.number):
        values = rec.values_by_epoch()
        stopped = book.records[rec.confirms].epochs if rec.confirms in book.records else None
        series.append((f"trial {book.records[rec.confirms].number:03d}" if stopped else rec.trial_id,
                       sorted(values), [values[e] for e in sorted(values)], stopped))
    return series, None if chosen is None or chosen.retrain else chosen.value


def _audit_figure(book: TrialBook, correlations: dict, audited: list[TrialRecord]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2 if audited else 1, subplot_titles=(
        "rank correlation at each rung", *(["audited trials to max_epochs"] if audited else [])))
    rungs = sorted(correlations)
    fig.add_trace(go.Bar(x=[f"epoch {e}" for e in rungs], y=[correlations[e]["rho"] for e in rungs],
                         text=[f"n={correlations[e]['n']}" for e in rungs], name="rung correlation"), row=1, col=1)
    fig.update_yaxes(range=[-1, 1], title_text="Spearman rho", row=1, col=1)
    if audited:
        series, chosen = _audit_series(book, audited)
        for label, epochs, values, stopped in series:
            fig.add_trace(go.Scatter(x=epochs, y=values, mode="lines", name=label), row=1, col=2)
            if stopped in epochs:
                fig.add_trace(go.Scatter(x=[stopped], y=[values[epochs.index(stopped)]], mode="markers",
                                         marker={"symbol": "x", "size": 10}, name=f"{label}: stopped",
                                         showlegend=False), row=1, col=2)
        if chosen is not None:
            fig.add_hline(y=chosen, line_dash="dash", annotation_text="chosen trial", row=1, col=2)
        fig.update_xaxes(title_text="epoch", row=1, col=2)
        fig.update_yaxes(title_text=book.spec.rank_metric, row=1, col=2)
    return fig


def _audit_axes(book: TrialBook, correlations: dict, audited: list[TrialRecord]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if audited else 1, figsize=(11 if audited else 6, 4), squeeze=False)
    rungs = sorted(correlations)
    left = axes[0][0]
    left.bar([f"epoch {e}\n(n={correlations[e]['n']})" for e in rungs], [correlations[e]["rho"] for e in rungs])
    left.set(ylim=(-1, 1), ylabel="Spearman rho", title="rank correlation at each rung")
    left.axhline(0, color="grey", linewidth=0.8)
    if audited:
        right = axes[0][1]
        series, chosen = _audit_series(book, audited)
        for label, epochs, values, stopped in series:
            (line,) = right.plot(epochs, values, label=label)
            if stopped in epochs:
                right.plot([stopped], [values[epochs.index(stopped)]], "x", color=line.get_color(), markersize=9)
        if chosen is not None:
            right.axhline(chosen, linestyle="--", color="black", label="chosen trial")
        right.set(xlabel="epoch", ylabel=book.spec.rank_metric, title="audited trials to max_epochs")
        right.legend(fontsize=7)
    return axes


def _best_vs_cost_figure(book: TrialBook):
    import plotly.graph_objects as go

    from .plots import best_so_far

    xs, ys = best_so_far(book)
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv"}))
    fig.update_layout(title="Best so far against compute", xaxis_title="cumulative device-hours",
                      yaxis_title=f"best {book.spec.rank_metric} so far")
    return fig


def write_views(book: TrialBook, directory: str, images: bool = False) -> list[str]:
    """`search.html` with every view in `directory`, and with `images` a PNG per view; the
    files written. A view Optuna cannot draw (too few trials of a kind) is left out, not an error."""
    os.makedirs(directory, exist_ok=True)
    sections, written, first = [], [], True
    for stem, title, caption, plotly_figure, matplotlib_axes in _views(book):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on every plot
                fig = plotly_figure()
        except (ValueError, RuntimeError) as exc:
            logging.getLogger(__name__).info("view %s left out: %s", stem, exc)
            continue
        # The camera button saves the plot as `<view>.png` (plotly's default name: newplot.png).
        body = fig.to_html(full_html=False, include_plotlyjs="inline" if first else False, default_height="480px",
                           config={"toImageButtonOptions": {"filename": stem, "scale": 2}, "displaylogo": False})
        first = False
        sections.append(f'<section id="{stem}"><h2>{html.escape(title)}</h2><p>{html.escape(caption)}</p>{body}</section>')
        if images and matplotlib_axes is not None and _save_png(matplotlib_axes, os.path.join(directory, f"{stem}.png")):
            written.append(os.path.join(directory, f"{stem}.png"))
    page = os.path.join(directory, "search.html")
    with open(page, "w") as f:
        f.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(book.spec.name)}: search views"
                f"</title><style>body{{font-family:sans-serif;margin:1em 2em}} p{{color:#444}}</style></head><body>"
                f"<h1>{html.escape(book.spec.name)}: why the search chose what it chose</h1>"
                + "".join(sections) + "</body></html>")
    return [page, *written]


def warm_up() -> None:
    """Do ahead what the first drawing in a process pays, about a second on 2 cores: import
    Optuna's plots (plotly and pyplot) and importance evaluators, build plotly's figure
    validators and load matplotlib's fonts (plots.py draws with it too) by drawing a tiny figure
    each way. runsetup.WarmUp calls it while the trials train; errors wait for the real drawing."""
    try:
        import importlib
        import io

        import plotly.graph_objects as go
        from matplotlib.figure import Figure

        # Optuna loads these on first attribute access only: `from optuna import importance` would not.
        for name in ("optuna.importance", "optuna.visualization", "optuna.visualization.matplotlib"):
            importlib.import_module(name)
        go.Figure(go.Scatter(x=[0, 1], y=[0, 1], name="warm-up")).to_html(full_html=False, include_plotlyjs=False)
        # Without pyplot: no backend switched from this thread (a GUI backend wants the main one).
        figure = Figure(figsize=(2, 1))
        axes = figure.subplots()
        axes.plot([0, 1], [0, 1], label="warm-up")
        axes.set_title("warm-up")
        axes.legend()
        figure.savefig(io.BytesIO(), format="png", dpi=90, bbox_inches="tight")
    except Exception:  # noqa: BLE001 - write_views meets and reports the same error
        logging.getLogger(__name__).debug("warming up the views failed", exc_info=True)


def _save_png(draw: Callable, path: str) -> bool:
    import matplotlib

    # Optuna's matplotlib plots draw through pyplot: keep them off any interactive backend.
    backend = matplotlib.get_backend()
    import matplotlib.pyplot as plt

    plt.switch_backend("Agg")
    try:
        # Optuna's plots warn on every call, and matplotlib when a crowded figure's tight layout
        # cannot fit its labels (bbox_inches below still keeps them in the PNG): not the user's business.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = draw()
            axes = result.flat[0] if hasattr(result, "flat") else result
            fig = axes.figure
            fig.savefig(path, dpi=90, bbox_inches="tight")  # rotated labels would be clipped
        plt.close(fig)
        return True
    except (ValueError, RuntimeError) as exc:
        logging.getLogger(__name__).info("%s left out: %s", os.path.basename(path), exc)
        return False
    finally:
        plt.close("all")
        if backend.lower() != "agg":
            plt.switch_backend(backend)
