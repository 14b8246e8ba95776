"""What a task is, and the optional capabilities raysweep looks for in it: one place.

A task trains; that is all it must do. It is one of

* a function ``train(config, ctx)`` that trains with the `TrainContext` and calls
  ``ctx.report(metrics)`` once per epoch (`FunctionTask` wraps it),
* a Ray Train function ``train_loop_per_worker(config)`` (one parameter) that calls
  ``ray.train.report(metrics, checkpoint=...)`` itself: it runs on a `TorchTrainer`
  (`TrainLoopTask` wraps it), or
* an object with that ``train(config, ctx)`` method (a class is instantiated with no arguments).

An object may also have these; each enables one feature, and `capabilities` finds them once,
when the task is resolved:

| capability | method or attribute | what it enables |
|---|---|---|
| `evaluate` | `evaluate(config, state, seed)`, with `data=` when the spec has a `data:` section | test metrics of the best checkpoint, on the search's parent run |
| `rebuild` | `load_model(config, state)` returning the `nn.Module` | the best model logged to MLflow (PyTorch flavor) and registered |
| `examples` | `splits_for(config, seed)` or `splits(seed)` (a `Splits`) | the logged model's input example (with a `data:` section, the data's own are used) |
| `check_params` | `check_params(fixed, space)` raising `ValueError` naming the key | bad hyperparameters refused before Ray starts |
| `param_rules` | `param_rules`: name -> `Bounds` / `OneOf` | `raysweep train --set` values range-checked |
| `data_formats` | `data_formats`: the `data.format` values it trains on (`()`: its own data only) and `needs_data` | a spec's `data:` section checked against the task |

`SupervisedTask` (tasks/base.py) has them all. A capability half there (``load_model`` with no
examples and no ``data:``; ``build_model`` without ``load_model``) is named in one line by
`gaps`, which `raysweep search` and `train` print before they start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    evaluate: bool
    rebuild: bool
    examples: bool
    check_params: bool
    param_rules: bool
    data_formats: tuple[str, ...] | None  # None: not declared (a user task may read any data)
    needs_data: bool


def capabilities(task: Any) -> Capabilities:
    formats = getattr(task, "data_formats", None)
    return Capabilities(
        evaluate=callable(getattr(task, "evaluate", None)),
        rebuild=callable(getattr(task, "load_model", None)),
        examples=callable(getattr(task, "splits_for", None)) or callable(getattr(task, "splits", None)),
        check_params=callable(getattr(task, "check_params", None)),
        param_rules=bool(getattr(task, "param_rules", None)),
        data_formats=None if formats is None else tuple(formats),
        needs_data=bool(getattr(task, "needs_data", False)),
    )


def can_log_model(task: Any, data: Any = None) -> bool:
    """Whether the best checkpoint can become a logged model: the task rebuilds it, and there
    are input examples for it (its own splits, or the spec's `data:`)."""
    caps = capabilities(task)
    return caps.rebuild and (data is not None or caps.examples)


def example_inputs(task: Any, params: dict[str, Any], seed: int):
    """A few of the task's own test inputs, as a numpy array (the logged model's input example).
    `splits_for`: a task whose data comes from its config (tabular) needs the params to find it."""
    splits = task.splits_for(params, seed) if callable(getattr(task, "splits_for", None)) else task.splits(seed)
    return splits.test[0][:5].numpy()


def gaps(name: str, task: Any, *, has_data: bool, log_model: bool) -> list[str]:
    """One line per feature the spec asks for that the task cannot serve, saying what it lacks."""
    caps = capabilities(task)
    lines = []
    if log_model and not caps.rebuild and callable(getattr(task, "build_model", None)):
        lines.append(f"task {name!r} has build_model but no load_model(config, state): its best model is not logged "
                     "to MLflow (subclass raysweep.SupervisedTask, or add load_model; tracking.log_model: false "
                     "silences this)")
    elif log_model and caps.rebuild and not has_data and not caps.examples:
        lines.append(f"task {name!r} has load_model but no splits(seed) or splits_for(config, seed) for the model's "
                     "input example: its best model is not logged to MLflow")
    return lines
