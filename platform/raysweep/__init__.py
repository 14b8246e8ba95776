"""raysweep: hyperparameter search for PyTorch on Ray Tune + Ray Train, tracked in MLflow."""

from .context import InProcessContext, TrainContext
from .failures import NonFiniteLoss
from .loop import evaluate, fit
from .spec import Spec, SpecError, load_spec
from .tasks import resolve_task
from .tasks.base import Splits, SupervisedTask

__version__ = "0.1.0"


def __getattr__(name):
    # Ray-dependent names load on first use, so `raysweep validate` starts fast.
    if name in ("run_search", "SearchResult", "SearchFailed", "TooManyFailures", "RunFailed"):
        from . import search

        return getattr(search, name)
    if name in ("run_training", "train_params", "TrainResult", "TrainFailed"):
        from . import train

        return getattr(train, name)
    if name == "Interrupted":
        from .interrupt import Interrupted

        return Interrupted
    if name == "LocalCluster":
        from .localcluster import LocalCluster

        return LocalCluster
    raise AttributeError(name)


__all__ = [
    "InProcessContext", "Interrupted", "LocalCluster", "NonFiniteLoss", "RunFailed", "SearchFailed", "SearchResult", "Spec",
    "SpecError", "Splits", "SupervisedTask", "TooManyFailures", "TrainContext", "TrainFailed", "TrainResult",
    "evaluate", "fit", "load_spec", "resolve_task", "run_search", "run_training", "train_params",
]
