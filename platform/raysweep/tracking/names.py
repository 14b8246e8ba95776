"""The MLflow layout's names: what a search leaves in MLflow is a contract (docs: the MLflow
layout), read back by `raysweep report`, `--resume` and users' own queries. No imports."""

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a trial's run under its search's
# Without it MLflow 3's UI opens an experiment on its GenAI overview, hiding training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}

KIND_TAG = "raysweep.kind"  # "search" (the parent run), "trial" (a child), "train" (raysweep train)
TASK_TAG = "raysweep.task"
METRIC_TAG = "raysweep.metric"
TRIAL_ID_TAG = "raysweep.trial_id"  # Tune's trial id: how --resume finds a trial's run again
ERROR_TAG = "raysweep.error"  # one line: why a run failed
FAILURE_TAG = "raysweep.failure"  # its kind (failures.py)
STOPPED_EARLY_TAG = "raysweep.stopped_early"  # "true": ASHA (or the search's end) stopped the trial
INTERRUPTED_TAG = "raysweep.interrupted"  # "true": ended by Ctrl-C
BUDGET_REACHED_TAG = "raysweep.budget_reached"  # on a parent run: the search.budget limit that ended the search
CONFIRMS_TAG = "raysweep.confirms"  # a run retraining that trial's configuration with a fresh seed (search.confirm)
AUDITS_TAG = "raysweep.audits"  # a run training that stopped trial's configuration to max_epochs (scheduler.audit)
TRAIN_SEED_TAG = "raysweep.train_seed"  # its training seed
ORPHANED_TAG = "raysweep.orphaned"  # a dead driver's run of a trial --resume could not continue
BEST_CONFIG_TAG = "raysweep.best_config"  # the parent's: the best trial's hyperparameters, as JSON
FROM_SEARCH_TAG = "raysweep.from_search"  # a `raysweep train --from-search` run's: the search's parent run id
BEST_TRIAL_ID_TAG = "raysweep.best_trial_id"
BEST_RUN_ID_TAG = "raysweep.best_run_id"
BEST_TAG = "raysweep.best"  # "true" on the best trial's run
PARETO_TAG = "raysweep.pareto"  # "true" on a trial's run on the Pareto front of several objectives (pareto.py)
MODEL_URI_TAG = "raysweep.model_uri"  # the parent's: the logged model
# The parent's: what its logged model was built from (search.model_source); an extended search whose
# choice is the same logs no second model and registers no new version.
MODEL_SOURCE_TAG = "raysweep.model_source"
RUN_KEY_TAG = "raysweep.run_key"  # every run's: how a replayed spool finds a run it created (spool.py)
IMPORTANCE_EPOCH_TAG = "raysweep.importance_epoch"  # the parent's: the epoch its importances compare trials at

# Parent-run metric prefixes of the search's views (views.py) and early-stopping audit (audit.py).
IMPORTANCE_PREFIX = "importance_"  # + a hyperparameter: its importance, the shares summing to 1
RUNG_CORR_PREFIX = "rung_corr_"  # + a rung's epoch: Spearman correlation of its ranking with the later one
RUNG_N_PREFIX = "rung_n_"  # + a rung's epoch: the trials that correlation rests on


# A trial's run name: its number, as the console says it, and its first hyperparameters.
TRIAL_RUN_PREFIX = "trial-"


def trial_run_name(number: int, config: dict, keys: int = 4) -> str:
    shown = " ".join(f"{k}={f'{v:.3g}' if isinstance(v, float) else v}" for k, v in list(config.items())[:keys])
    return f"{TRIAL_RUN_PREFIX}{number:03d} {shown}".strip()


def trial_number(run_name: str | None) -> int | None:
    """The number in a trial's run name (`trial-014 lr=...`), or None for another name."""
    head = (run_name or "").split(" ", 1)[0]
    digits = head.removeprefix(TRIAL_RUN_PREFIX)
    return int(digits) if head.startswith(TRIAL_RUN_PREFIX) and digits.isdigit() else None
