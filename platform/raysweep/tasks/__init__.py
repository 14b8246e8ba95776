"""Tasks: what a trial trains. Built-in ones by name, user ones by import path.

What a task is and which optional capabilities raysweep uses is defined in `contract.py`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import SpecError
from .base import FunctionTask, Task, TrainLoopTask, check_values
from .contract import capabilities, gaps
from .digits import DigitsCNN, DigitsMLP
from .images import ImageFolder
from .regression import Regression
from .tabular import Tabular

BUILTIN: dict[str, type] = {"digits_mlp": DigitsMLP, "digits_cnn": DigitsCNN, "tabular": Tabular,
                            "regression": Regression, "image_folder": ImageFolder}

_resolved: dict[str, Any] = {}


def resolve_task(name: str) -> Any:
    """The task object for a spec's `task` value; a `SpecError` naming it if it can't be had."""
    if name in _resolved:
        return _resolved[name]
    if name in BUILTIN:
        task = BUILTIN[name]()
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise SpecError(f"task: cannot import {module_name!r} for {name!r} ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
            raise SpecError(f"task: importing {module_name!r} failed: {exc.__class__.__name__}: {exc}") from None
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise SpecError(f"task: {module_name!r} has no attribute {attr!r}")
        task = _as_task(name, obj)
    else:
        known = ", ".join(sorted(BUILTIN))
        raise SpecError(f"task: unknown task {name!r} (built-in: {known}; or 'package.module:object')")
    _resolved[name] = task
    return task


def check_task_params(spec: Any) -> None:
    """What the spec's task can check before any trial runs, through its optional
    `check_params(fixed, space)` and `data_formats` / `needs_data` (SupervisedTask): a
    `SpecError` naming the key, not a failure per trial."""
    task = resolve_task(spec.task)
    caps = capabilities(task)
    formats = caps.data_formats  # None: a user task, which may read any data
    if spec.data is not None and formats is not None and spec.data.format not in formats:
        trains_on = f"data: format {' or '.join(formats)}" if formats else "its own data only"
        raise SpecError(f"data.format: task {spec.task!r} trains on {trains_on}, not {spec.data.format}")
    if spec.data is None and caps.needs_data:
        raise SpecError(f"data: task {spec.task!r} needs a data: section (format: {' or '.join(formats)})")
    if spec.data is not None:
        # null is not given: a shipped spec's `dataset` is dropped with `--set fixed.dataset=null`.
        own = sorted(k for k in ("dataset", "data", "target") if spec.fixed.get(k) is not None)
        if own and formats is not None:
            raise SpecError(f"fixed.{own[0]}: the spec's data: section already names the data; keep one "
                            f"(--set fixed.{own[0]}=null drops this one)")
    if not caps.check_params:
        return
    try:
        task.check_params(spec.fixed, spec.space)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def task_gaps(spec: Any) -> list[str]:
    """A line per feature the spec asks of its task that the task lacks (contract.gaps)."""
    return gaps(spec.task, resolve_task(spec.task), has_data=spec.data is not None,
                log_model=spec.tracking.enabled and spec.tracking.log_model)


def check_train_params(spec: Any, params: dict[str, Any]) -> None:
    """`raysweep train`'s hyperparameters, checked as the task checks its spec's values
    (`param_rules`); run after check_task_params, a value at fault can only be a `--set` one,
    which train.train_params takes as given."""
    task = resolve_task(spec.task)
    if not capabilities(task).param_rules:
        return
    try:
        check_values(task.param_rules, params, {}, fixed_at="--set ")
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _as_task(name: str, obj: Any) -> Any:
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - the user's constructor raised, or needs arguments
            raise SpecError(f"task: {name!r} could not be created with no arguments: "
                            f"{exc.__class__.__name__}: {exc}") from None
    if callable(getattr(obj, "train", None)):
        return obj
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        params = [
            p for p in inspect.signature(obj).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(params) == 1:
            return TrainLoopTask(obj)
        if len(params) == 2:
            return FunctionTask(obj)
        raise SpecError(
            f"task: {name!r} takes {len(params)} arguments; expected train(config, ctx) "
            "or a Ray Train train_loop_per_worker(config)"
        )
    raise SpecError(f"task: {name!r} is neither a function train(config, ctx) nor an object with .train")


def needs_ray_train(spec, task: Any) -> bool:
    """Whether a trial runs as a `TorchTrainer` worker group rather than in its Tune process."""
    return spec.resources.workers_per_trial > 1 or isinstance(task, TrainLoopTask)


__all__ = ["BUILTIN", "FunctionTask", "Task", "TrainLoopTask", "needs_ray_train", "resolve_task", "task_gaps"]
