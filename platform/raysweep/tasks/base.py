"""The task protocol and the base that built-in supervised tasks share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

from .params import COUNT, LR_SCHEDULES, NON_NEGATIVE, POSITIVE, Bounds, OneOf, check_schedule, check_values

if TYPE_CHECKING:  # torch is imported where a task trains or builds a model, not to resolve it
    import torch
    from torch import nn

    from ..context import TrainContext
    from ..loop import SumMetrics


@runtime_checkable
class Task(Protocol):
    def train(self, config: dict[str, Any], ctx: TrainContext) -> None: ...


@dataclass(frozen=True)
class FunctionTask:
    """A plain ``train(config, ctx)`` function used as a task."""

    fn: Callable[[dict, TrainContext], Any]

    def train(self, config: dict[str, Any], ctx: TrainContext) -> Any:
        return self.fn(config, ctx)  # what it returns is named if it never reported (trial.reported_or_raise)


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


def cross_entropy(out: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """The classifiers' loss: torch's, imported when a trial first computes it (the loop
    passes `reduction`)."""
    from torch.nn.functional import cross_entropy

    return cross_entropy(out, y, **kwargs)


def mlp(n_in: int, n_out: int, *, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """n_in -> hidden (x `layers`, each ReLU then dropout) -> n_out."""
    from torch import nn

    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*blocks, nn.Linear(hidden if layers else n_in, n_out))


def lr_schedule(name: str, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule a config names; None for a constant rate.

    Cosine ends each trial at a near-zero rate, so its last epochs' validation values settle
    instead of moving 5-30% epoch to epoch, as they do at a constant rate.
    """
    import torch

    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"lr_schedule {name!r}: use one of {', '.join(LR_SCHEDULES)}")


class SupervisedTask:
    """Train `build_model(config)` with AdamW on `splits(seed)` through the shared fit loop.

    Hyperparameters read from the config: ``lr``, ``batch_size``, ``weight_decay`` (0),
    ``lr_schedule`` (``constant``, or ``cosine``: annealed to 0 over max_epochs) and whatever
    `build_model` uses. A task whose data itself comes from the config (`tabular`)
    overrides `splits_for` instead.
    """

    loss_fn: Callable = staticmethod(cross_entropy)
    val_metrics: ClassVar[SumMetrics] = {}
    # The spec data: formats the task trains on (streamed, ingest.py); () trains on its own
    # data only. `needs_data`: it has no data of its own.
    data_formats: tuple[str, ...] = ()
    needs_data: bool = False

    def splits(self, seed: int) -> Splits:
        raise NotImplementedError

    def splits_for(self, config: dict[str, Any], seed: int) -> Splits:
        """The splits a configuration trains and is tested on."""
        given = getattr(self, "_given_splits", {}).get(seed)
        return self.splits(seed) if given is None else given

    def shared_splits(self, seed: int) -> Splits | None:
        """The splits every trial of a search trains on, if the seed alone decides them (the
        task overrides `splits`, not `splits_for`): loaded once by the driver and handed to
        each trial process (`give_splits`) through Ray's object store, so that no trial
        process imports scikit-learn and loads the data itself (2 s each on 2 cores)."""
        if type(self).splits_for is not SupervisedTask.splits_for or type(self).splits is SupervisedTask.splits:
            return None
        return self.splits_for({}, seed)

    def give_splits(self, seed: int, splits: Splits) -> None:
        """What `splits_for` returns for `seed` in this process from now on (`shared_splits`)."""
        self._given_splits = {**getattr(self, "_given_splits", {}), seed: splits}

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        """The bare model. A task with `data_formats` takes `build_model(config, info)`: the
        data's description (ingest.py: input_shape, classes), None for its own data."""
        raise NotImplementedError

    def split_metrics(self, y: torch.Tensor) -> SumMetrics:
        """The `val_*` metrics for a split whose targets are `y` (the test split's are renamed
        `test_*`): `val_metrics`, unless one needs the split itself (regression's R^2 its variance)."""
        return self.val_metrics

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
            check_schedule("fixed.lr_schedule", fixed["lr_schedule"])
        if "lr_schedule" in space:
            values = getattr(space["lr_schedule"], "values", None)
            if values is None:
                raise ValueError(f"space.lr_schedule: must be a choice of {', '.join(LR_SCHEDULES)}, not a range")
            for value in values:
                check_schedule("space.lr_schedule.values", value)
        check_values(self.param_rules, fixed, space)

    def train(self, config: dict[str, Any], ctx: TrainContext) -> None:
        import torch

        from ..loop import fit

        missing = [key for key in self.required if key not in config]
        if missing:  # the trial fails with this line as its error, not a bare KeyError
            raise ValueError(f"{type(self).__name__} needs {missing[0]!r}: put it in the spec's space or fixed")
        info = ctx.data_info  # the spec's data: section, streamed; else the task's own splits
        train = val = None
        if info is None:
            data = self.splits_for(config, ctx.seed)
            train, val = data.train, data.val
        torch.manual_seed(ctx.train_seed)
        model = ctx.prepare_model(self._model(config, info))
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0))
        )
        fit(
            ctx, model, optimizer, train, val,
            batch_size=int(config["batch_size"]), loss_fn=self.loss_fn,
            val_metrics=self.val_metrics if val is None else self.split_metrics(val[1]),
            lr_scheduler=lr_schedule(config.get("lr_schedule", "constant"), optimizer, ctx.max_epochs),
            augment=self.augmentation(config),
            # What rebuilds the model from a checkpoint alone (load_model): the data's shape.
            extra_state=None if info is None else {"data_info": info},
        )

    def evaluate(self, config: dict[str, Any], state: dict, seed: int, data: Any = None) -> dict[str, float]:
        """Test-split metrics of a checkpoint's model (`test_loss`, and e.g. `test_accuracy`);
        `data`: the spec's data: splits (ingest.TrialData), whose test split, if any, it streams."""
        from ..loop import evaluate, evaluate_batches

        def renamed(metrics: SumMetrics) -> SumMetrics:
            return {name.replace("val_", "test_", 1): fn for name, fn in metrics.items()}

        model = self.load_model(config, state)
        if data is not None:
            if "test" not in data.info["splits"]:
                return {}
            return evaluate_batches(model, data.batches("test"), self.loss_fn, renamed(self.val_metrics), prefix="test")
        x, y = self.splits_for(config, seed).test
        return evaluate(model, x, y, self.loss_fn, renamed(self.split_metrics(y)), prefix="test")

    def load_model(self, config: dict[str, Any], state: dict) -> nn.Module:
        model = self._model(config, state.get("data_info"))
        model.load_state_dict(state["model"])
        return model.eval()
