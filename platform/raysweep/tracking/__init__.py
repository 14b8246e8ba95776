"""MLflow: what a search leaves there, and how it gets there.

- `names`: the layout's tag and run names (no imports);
- `uri`: which tracking store, and whether it can be used (no MLflow import);
- `spool`: writes MLflow could not take during an outage, on disk until replayed;
- `tracker`: the handful of MLflow operations raysweep makes, through the spool;
- `callback`: the Tune callback that mirrors the trials into MLflow as they report;
- `models`: the best model logged with MLflow's PyTorch flavor;
- `sync`: `raysweep sync`, replaying a spool.

Dependencies point down that list. Names load lazily, so `raysweep validate` imports neither
MLflow nor Ray through here.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "uri": ("DEFAULT_URI", "UI_PORT", "check_tracking_uri", "resolve_tracking_uri", "runs_url", "unreachable"),
    "names": ("ORPHANED_TAG", "PARENT_TAG", "trial_number", "trial_run_name"),
    "tracker": ("Tracker", "refused_tags"),
    "callback": ("FLUSH_INTERVAL_S", "MLflowCallback"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
