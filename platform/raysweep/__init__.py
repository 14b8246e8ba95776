"""raysweep: hyperparameter search for PyTorch on Ray Tune + Ray Train, tracked in MLflow.

The public API, loaded on first use: `import raysweep.spec` (what `raysweep validate` needs)
pulls in neither torch nor Ray, and importing raysweep changes no global state.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "context": ("InProcessContext", "LocalContext", "TrainContext"),
    "errors": ("Interrupted", "NonFiniteLoss", "RunFailed", "SearchFailed", "SpecError", "TooManyFailures",
               "TrainFailed"),
    "loop": ("evaluate", "fit"),
    "spec": ("Spec", "load_spec"),
    "tasks": ("resolve_task",),
    "tasks.base": ("Splits", "SupervisedTask"),
    "search": ("SearchResult", "run_search"),
    "train": ("TrainResult", "run_training", "train_params"),
    "testing": ("LocalCluster",),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
