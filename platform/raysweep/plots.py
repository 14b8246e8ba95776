"""The two pictures on a search's parent run: learning curves, and best-so-far against cost."""

from __future__ import annotations

import os

from .book import STOPPED, TrialBook


def figure():
    """A figure drawn straight to a file with matplotlib's object API: no pyplot, so no backend
    is chosen for the whole process (a notebook importing raysweep keeps its own). Imported
    here, once the trials are done, not while a search starts (0.4 s)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(8, 5))


def learning_curves(book: TrialBook, path: str) -> None:
    """The metric against epoch for every trial; early-stopped trials end in a red cross."""
    spec = book.spec
    fig = figure()
    ax = fig.subplots()
    for rec in book.records.values():
        points = [(e, v) for _, e, v, _ in rec.history if v is not None]
        if not points:
            continue
        epochs, values = zip(*points)
        stopped = rec.status == STOPPED
        ax.plot(epochs, values, color="tab:gray" if stopped else "tab:blue", alpha=0.6 if stopped else 0.9, lw=1)
        if stopped:
            ax.plot(epochs[-1], values[-1], "x", color="tab:red", ms=6)
    ax.plot([], [], "x", color="tab:red", label="stopped early (ASHA)")
    ax.plot([], [], color="tab:blue", label="ran to max_epochs")
    ax.set(xlabel="epoch", ylabel=spec.rank_metric, title=f"{spec.name}: {len(book.records)} trials")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def best_so_far(book: TrialBook) -> tuple[list[float], list[float]]:
    """(cumulative device-hours, best metric so far) after each epoch, epochs taken in the
    order they ran."""
    spec = book.spec
    events = []  # (time, device-hours this epoch cost, value)
    for rec in book.records.values():
        previous = 0.0
        for t, _, value, cost in rec.history:
            events.append((t, cost - previous, value))
            previous = cost
    events.sort()
    spent, best, xs, ys = 0.0, None, [], []
    for _, cost, value in events:
        spent += cost
        if value is not None and (best is None or (value < best if spec.rank_mode == "min" else value > best)):
            best = value
        if best is not None:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def best_vs_cost(book: TrialBook, path: str) -> None:
    """Best metric so far against cumulative device-hours, epochs taken in the order they ran."""
    spec = book.spec
    xs, ys = best_so_far(book)
    fig = figure()
    ax = fig.subplots()
    ax.step(xs, ys, where="post")
    ax.set(xlabel="cumulative device-hours", ylabel=f"best {spec.rank_metric} so far", title=f"{spec.name}: anytime performance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_plots(book: TrialBook, directory: str) -> list[str]:
    paths = [os.path.join(directory, "learning_curves.png"), os.path.join(directory, "best_vs_cost.png")]
    learning_curves(book, paths[0])
    best_vs_cost(book, paths[1])
    return paths
