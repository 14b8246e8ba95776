"""The task protocol and the base that built-in supervised tasks share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from ..context import TrainContext
from ..loop import SumMetrics, evaluate, evaluate_batches, fit


@runtime_checkable
class Task(Protocol):
    def train(self, config: dict[str, Any], ctx: TrainContext) -> None: ...


@dataclass(frozen=True)
class FunctionTask:
    """A plain ``train(config, ctx)`` function used as a task."""

    fn: Callable[[dict, TrainContext], None]

    def train(self, config: dict[str, Any], ctx: TrainContext) -> None:
        self.fn(config, ctx)


@dataclass(frozen=True)
class TrainLoopTask:
    """A plain Ray Train ``train_loop_per_worker(config)`` that calls ``ray.train.report``.

    It runs unchanged on a `TorchTrainer` worker group (every trial takes the Ray Train path,
    one worker or more); the config it gets holds the trial's hyperparameters.
    """

    fn: Callable[[dict], None]

    def train_loop_per_worker(self, config: dict[str, Any]) -> None:
        self.fn(config)


@dataclass(frozen=True)
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def accuracy_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correctly classified samples in a batch (a `SumMetrics` function: the loop averages it)."""
    return (out.argmax(dim=1) == y).sum()


def mlp(n_in: int, n_out: int, *, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """n_in -> hidden (x `layers`, each ReLU then dropout) -> n_out."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*blocks, nn.Linear(hidden if layers else n_in, n_out))


LR_SCHEDULES = ("constant", "cosine")


def lr_schedule(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule a config names; None for a constant rate.

    Cosine ends each trial at a near-zero rate, so its last epochs' validation values settle
    instead of moving 5-30% epoch to epoch, as they do at a constant rate.
    """
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"lr_schedule {name!r}: use one of {', '.join(LR_SCHEDULES)}")


def _check_schedule(key: str, name: Any) -> None:
    if name not in LR_SCHEDULES:
        raise ValueError(f"{key}: {name!r} is not a schedule (use one of {', '.join(LR_SCHEDULES)})")


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Bounds:
    """The numbers a task's hyperparameter may be: finite, an integer if `integer`, from `low`
    to `high`, each end included unless open. Checked before any trial runs (`check_values`):
    out of range, each trial would fail on its own (batch_size 0) or train on nonsense
    (dropout 1.5 raises in torch; a float batch_size is silently truncated)."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((value > self.low) if self.low_open else (value >= self.low)) and (
            (value < self.high) if self.high_open else (value <= self.high))

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low, high = f"{self.low:g}", f"{self.high:g}"
        if math.isinf(self.high):
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class OneOf:
    """A hyperparameter that takes one of these values (of the same type: `augment: 'false'`
    is a truthy string, not false)."""

    values: tuple

    def allows(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(_shown(v).strip("'") for v in self.values)


POSITIVE = Bounds(0, low_open=True)  # lr
NON_NEGATIVE = Bounds(0)  # weight_decay
COUNT = Bounds(1, integer=True)  # batch_size, hidden units, channels
PROBABILITY = Bounds(0, 1, high_open=True)  # dropout: at 1 every activation is zeroed


def check_values(rules: dict[str, Bounds | OneOf], fixed: dict[str, Any], space: dict[str, Any],
                 fixed_at: str = "fixed.") -> None:
    """Each value a config can hold for a key with a rule: the fixed one (its key named
    `fixed_at` + key), a choice's every value, a range's both ends (a sampler may return
    either). A ValueError naming the spec key."""
    for key, rule in rules.items():
        if key in fixed and not rule.allows(fixed[key]):
            raise ValueError(f"{fixed_at}{key}: {_shown(fixed[key])} is not {rule}")
        param = space.get(key)
        if param is None:
            continue
        values = getattr(param, "values", None)
        if values is not None:
            bad = [v for v in values if not rule.allows(v)]
            if bad:
                raise ValueError(f"space.{key}.values: {_shown(bad[0])} is not {rule}")
        elif isinstance(rule, OneOf):
            raise ValueError(f"space.{key}: must be a choice of {str(rule).removeprefix('one of ')}, not a range")
        elif rule.integer and param.type != "int":
            raise ValueError(f"space.{key}: must be an int or choice parameter ({rule}), not {param.type}")
        else:
            for end in ("low", "high"):
                value = getattr(param, end)
                if not rule.allows(value):  # ints as written (`:g` overflows on a huge one)
                    shown = f"{value:g}" if isinstance(value, float) else _shown(value)
                    raise ValueError(f"space.{key}: {end} ({shown}) is not {rule}")


class SupervisedTask:
    """Train `build_model(config)` with AdamW on `splits(seed)` through the shared fit loop.

    Hyperparameters read from the config: ``lr``, ``batch_size``, ``weight_decay`` (0),
    ``lr_schedule`` (``constant``, or ``cosine``: annealed to 0 over max_epochs) and whatever
    `build_model` uses. A task whose data itself comes from the config (`tabular`)
    overrides `splits_for` instead.
    """

    loss_fn: Callable = staticmethod(nn.functional.cross_entropy)
    val_metrics: SumMetrics = {}
    # The spec data: formats the task trains on (streamed, ingest.py); () trains on its own
    # data only. `needs_data`: it has no data of its own.
    data_formats: tuple[str, ...] = ()
    needs_data: bool = False

    def splits(self, seed: int) -> Splits:
        raise NotImplementedError

    def splits_for(self, config: dict[str, Any], seed: int) -> Splits:
        """The splits a configuration trains and is tested on."""
        return self.splits(seed)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        """The bare model. A task with `data_formats` takes `build_model(config, info)`: the
        data's description (ingest.py: input_shape, classes), None for its own data."""
        raise NotImplementedError

    def augmentation(self, config: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A transform of each training batch's inputs on the device, or None."""
        return None

    def _model(self, config: dict[str, Any], info: dict | None) -> nn.Module:
        return self.build_model(config) if info is None else self.build_model(config, info)

    required: tuple[str, ...] = ("lr", "batch_size")
    # What `train` reads from the config, and the values it takes; subclasses add theirs.
    param_rules: ClassVar[dict[str, Bounds | OneOf]] = {
        "lr": POSITIVE, "batch_size": COUNT, "weight_decay": NON_NEGATIVE,
    }

    def check_params(self, fixed: dict[str, Any], space: dict[str, Any]) -> None:
        """Before any trial runs: every config has the keys `train` needs, an lr_schedule it
        knows and values in `param_rules`' ranges. A `ValueError` naming the spec key, rather
        than every trial failing."""
        for key in self.required:
            if key not in fixed and key not in space:
                raise ValueError(f"{key}: {type(self).__name__} needs it: put it in the spec's space or fixed")
        if "lr_schedule" in fixed:
            _check_schedule("fixed.lr_schedule", fixed["lr_schedule"])
        if "lr_schedule" in space:
            values = getattr(space["lr_schedule"], "values", None)
            if values is None:
                raise ValueError(f"space.lr_schedule: must be a choice of {', '.join(LR_SCHEDULES)}, not a range")
            for value in values:
                _check_schedule("space.lr_schedule.values", value)
        check_values(self.param_rules, fixed, space)

    def train(self, config: dict[str, Any], ctx: TrainContext) -> None:
        missing = [key for key in self.required if key not in config]
        if missing:  # the trial fails with this line as its error, not a bare KeyError
            raise ValueError(f"{type(self).__name__} needs {missing[0]!r}: put it in the spec's space or fixed")
        info = ctx.data_info  # the spec's data: section, streamed; else the task's own splits
        train = val = None
        if info is None:
            data = self.splits_for(config, ctx.seed)
            train, val = data.train, data.val
        torch.manual_seed(ctx.seed)
        model = ctx.prepare_model(self._model(config, info))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0))
        )
        fit(
            ctx, model, optimizer, train, val,
            batch_size=int(config["batch_size"]), loss_fn=self.loss_fn, val_metrics=self.val_metrics,
            lr_scheduler=lr_schedule(config.get("lr_schedule", "constant"), optimizer, ctx.max_epochs),
            augment=self.augmentation(config),
            # What rebuilds the model from a checkpoint alone (load_model): the data's shape.
            extra_state=None if info is None else {"data_info": info},
        )

    def evaluate(self, config: dict[str, Any], state: dict, seed: int, data: Any = None) -> dict[str, float]:
        """Test-split metrics of a checkpoint's model (`test_loss`, and e.g. `test_accuracy`);
        `data`: the spec's data: splits (ingest.TrialData), whose test split, if any, it streams."""
        model = self.load_model(config, state)
        metrics = {name.replace("val_", "test_", 1): fn for name, fn in self.val_metrics.items()}
        if data is not None:
            if "test" not in data.info["splits"]:
                return {}
            return evaluate_batches(model, data.batches("test"), self.loss_fn, metrics, prefix="test")
        x, y = self.splits_for(config, seed).test
        return evaluate(model, x, y, self.loss_fn, metrics, prefix="test")

    def load_model(self, config: dict[str, Any], state: dict) -> nn.Module:
        model = self._model(config, state.get("data_info"))
        model.load_state_dict(state["model"])
        return model.eval()
