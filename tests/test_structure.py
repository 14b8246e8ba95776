"""The library's shape: imports point one way, light modules stay light, importing changes nothing."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "platform" / "raysweep"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The raysweep modules an import statement names (`from . import x` names x too)."""
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    if not base.startswith("raysweep"):
        return []
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """raysweep module -> the raysweep modules it imports, anywhere in it (function-level
    imports too: a cycle broken by importing late is still a cycle in the design)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                deps |= {d for d in _resolve(module, path.name == "__init__.py", node) if d in paths}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in paths}
        # A package's __init__ is imported with any of its modules; that edge is Python's, not ours.
        graph[module] = {d for d in deps if d != module and not module.startswith(f"{d}.")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_import_graph_has_no_cycles():
    # Package __init__ files re-export lazily (their exports are not imports of the package's
    # users): left out, as Python resolves `raysweep.x` without them.
    graph = {m: {d for d in deps if not _is_lazy_init(d)} for m, deps in import_graph().items() if not _is_lazy_init(m)}
    assert _cycles(graph) == []


def _is_lazy_init(module: str) -> bool:
    return module in ("raysweep", "raysweep.tracking", "raysweep.testing")


@pytest.mark.parametrize("lower,never", [
    ("raysweep.tracking.spool", {"raysweep.tasks", "raysweep.models", "raysweep.tracking.models",
                                 "raysweep.tracking.tracker", "raysweep.tracking.callback", "raysweep.search"}),
    ("raysweep.tracking.uri", {"raysweep.tracking.tracker", "raysweep.tracking.spool", "raysweep.search"}),
    ("raysweep.spec", {"raysweep.search", "raysweep.tasks", "raysweep.tracking.tracker", "raysweep.context"}),
    ("raysweep.errors", {"raysweep.spec", "raysweep.search"}),
    ("raysweep.tracking.names", {"raysweep.spec", "raysweep.tracking.tracker"}),
])
def test_lower_layers_never_import_higher_ones(lower, never):
    graph = import_graph()
    reached = _reaches(graph, lower)
    assert not {m for m in reached if any(m == n or m.startswith(f"{n}.") for n in never)}, sorted(reached)


def _fresh_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "platform")})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_spec_space_and_the_cli_import_neither_ray_nor_torch():
    loaded = _fresh_python(
        "import json, sys\n"
        "import raysweep.spec, raysweep.space, raysweep.cli, raysweep.tracking.uri\n"
        "print(json.dumps(sorted(m for m in ('ray', 'torch', 'mlflow') if m in sys.modules)))\n"
    )
    assert loaded == []


@pytest.mark.parametrize("argv", [
    ["--help"], ["validate", "search_spaces/digits_mlp.yaml"], ["validate", "search_spaces/tabular_wine.yaml"],
    ["validate", "search_spaces/digits_cnn.yaml", "--set", "fixed.channels=8"],
    ["report", "no-such-search", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"],
    ["submit", "--help"], ["ui", "--help"], ["sync", "--help"],
])
def test_commands_that_train_nothing_import_neither_ray_nor_torch(argv, tmp_path):
    # `raysweep validate` resolves the task and checks its params: with torch that took 7-10 s.
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    loaded = _fresh_python(
        "import json, sys\n"
        "from raysweep import cli\n"
        f"try: cli.main({argv!r})\n"
        "except SystemExit: pass\n"
        "print(json.dumps(sorted(m for m in ('ray', 'torch', 'sklearn') if m in sys.modules)))\n"
    )
    assert loaded == []


@pytest.mark.parametrize("job", [False, True], ids=["command", "ray-job-driver"])
def test_a_search_and_a_training_run_start_ray_before_they_import_torch(tmp_path, job):
    """`raysweep search` imported torch and MLflow (2.3 of its 2.6 s of imports on a 2-core
    machine) before Ray started; Ray's start now comes first, MLflow loads in the store's
    thread meanwhile and torch once Ray is up (docs/design.md, point 38). Not in a Ray job's
    driver: Ray deletes and unpacks its working directory again as it starts the job's workers,
    and torch loaded then killed the process (oneMKL "Cannot load libtorch_cpu.so"). Whether
    torch is loaded as each command starts Ray, in a fresh process (a Ctrl-C there ends it)."""
    result = _fresh_python(
        "import json, os, sys\n"
        f"if {job}: os.environ['RAY_JOB_CONFIG_JSON_ENV_VAR'] = '{{}}'\n"
        "from raysweep import cli, runsetup\n"
        "seen = []\n"
        "def ensure_ray(*args, **kwargs):\n"
        "    seen.append('torch' in sys.modules)\n"
        "    raise KeyboardInterrupt\n"
        "runsetup.ensure_ray = ensure_ray\n"
        f"flags = ['--tracking-uri', 'sqlite:///{tmp_path}/mlflow.db', '--storage', '{tmp_path}/results']\n"
        "codes = [cli.main([command, 'search_spaces/digits_mlp.yaml', *flags]) for command in ('search', 'train')]\n"
        "print(json.dumps({'codes': codes, 'torch_as_ray_starts': seen}))\n"
    )
    assert result == {"codes": [130, 130], "torch_as_ray_starts": [job, job]}


def test_ray_data_tasks_import_no_torch():
    # Ray Data's tasks and its split coordinator unpickle `ingest`'s preprocessing: with torch
    # imported there, each fresh task process spent 1.6 s more starting.
    loaded = _fresh_python(
        "import json, sys\n"
        "import raysweep.ingest\n"
        "print(json.dumps(sorted(m for m in ('torch', 'sklearn', 'mlflow') if m in sys.modules)))\n"
    )
    assert loaded == []


def test_importing_raysweep_changes_no_global_state():
    # The libraries raysweep builds on first (they set variables of their own), then every
    # raysweep module: nothing more may change.
    modules = sorted(m for m in import_graph() if m != "raysweep.testing.localcluster")
    changed = _fresh_python(
        "import json, os, sys, logging\n"
        "import ray, ray.tune, ray.train, ray.train.torch, mlflow, torch, optuna, matplotlib, ray.data, sklearn\n"
        "env, backend = dict(os.environ), matplotlib.get_backend()\n"
        "levels = {n: logging.getLogger(n).level for n in ('ray', 'mlflow', 'optuna')}\n"
        f"for m in {modules!r}: __import__(m)\n"
        "out = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))\n"
        "out += ['matplotlib backend'] if matplotlib.get_backend() != backend else []\n"
        "out += [n for n, lv in levels.items() if logging.getLogger(n).level != lv]\n"
        "print(json.dumps(out))\n"
    )
    assert changed == []


def test_model_loggings_import_of_mlflow_pytorch_leaves_raysweeps_warnings_heard():
    """`import mlflow.pytorch` calls logging.basicConfig(level=ERROR) (MLflow 3.17): from the
    model logging's warm-up on, a search dropped its own warnings (MLflow down or full:
    spooling; `raysweep sync` to run). raysweep imports the flavor and puts the root back."""
    heard = _fresh_python(
        "import io, json, logging, sys\n"
        "from raysweep.tracking.models import pytorch_flavor\n"
        "root = logging.getLogger()\n"
        "before = (root.level, list(root.handlers))\n"
        "pytorch_flavor()\n"
        "assert (root.level, root.handlers) == before, (root.level, root.handlers)\n"
        "sys.stderr = io.StringIO()  # where Python's last-resort handler writes\n"
        "logging.getLogger('raysweep.spool').warning('MLflow at x unreachable: spooling')\n"
        "print(json.dumps(sys.stderr.getvalue()))\n"
    )
    assert heard == "MLflow at x unreachable: spooling\n"


def test_mlflow_imported_after_a_run_quieted_the_libraries_stays_quiet():
    """A run imports MLflow while Ray starts (docs/design.md, point 38), after it set MLflow's
    logger to WARNING; MLflow's import set it back to INFO, and a search against a server
    printed MLflow's INFO line about waiting for the model version."""
    level = _fresh_python(
        "import json, logging, sys\n"
        "from raysweep.runsetup import quiet_libraries\n"
        "quiet_libraries()\n"
        "assert 'mlflow' not in sys.modules\n"
        "import mlflow\n"
        "print(json.dumps(logging.getLogger('mlflow.store.model_registry.abstract_store').getEffectiveLevel()))\n"
    )
    assert level == logging.WARNING


def test_every_private_ray_api_raysweep_uses_is_still_there():
    """ray_internals.py, against the installed Ray: a moved private name fails here, not in a
    user's search."""
    import ray
    from ray.tune.schedulers import ASHAScheduler

    from raysweep import ray_internals

    if not ray.__version__.startswith(ray_internals.CHECKED_ON):
        pytest.fail(f"Ray {ray.__version__}: ray_internals.py was checked on {ray_internals.CHECKED_ON}; check "
                    "each function there and update CHECKED_ON")
    raylet = Path(ray._raylet.__file__).read_bytes()  # RayConfig's names are in the binary only
    assert [n for n in ray_internals.NODE_ENV if n.removeprefix("RAY_").encode() not in raylet] == []
    scheduler = ASHAScheduler(metric="m", mode="min", time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)
    rungs = ray_internals.asha_rungs(scheduler)
    assert [m for m, _ in rungs] == [9, 3, 1] and all(isinstance(r, dict) for _, r in rungs)
    assert ray_internals.asha_sign(scheduler) == -1.0
    from ray._private.state import state
    from ray.train._internal.session import get_session
    from ray.train.v2._internal import constants

    assert callable(state.get_cluster_config) and isinstance(constants.ENV_VARS_TO_PROPAGATE, set)
    from ray.tune.execution import class_cache

    from raysweep.tuner import STAY_IN_WORKING_DIR

    # Tune's trial actors' variables: its defaults all set on the node raysweep starts, and
    # the working directory's (which Tune hands its trial actors on a cluster: tuner.fit).
    assert set(ray_internals.LOCAL_NODE_ENV) == {constants.ENABLE_PREEMPTION_WATCHER_ENV_VAR, *class_cache.DEFAULT_ENV_VARS,
                                                 *STAY_IN_WORKING_DIR}
    assert STAY_IN_WORKING_DIR.items() <= ray_internals.LOCAL_NODE_ENV.items()
    assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set) and set(STAY_IN_WORKING_DIR) <= class_cache.ENV_VARS_TO_PROPAGATE
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.data_integration.interfaces import DatasetShardMetadata
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    trainer = ray_internals.torch_trainer_class()(lambda: None)
    (datasets,) = [c for c in trainer._create_default_callbacks() if isinstance(c, DatasetsCallback)]
    assert isinstance(trainer, DataParallelTrainer) and type(datasets) is not DatasetsCallback
    providers = datasets.before_init_train_context([object(), object()])["dataset_shard_provider"]
    assert len(providers) == 2 and datasets._dataset_shard_provider is None  # no DatasetManager actor
    with pytest.raises(KeyError, match="Dataset shard for 'train' not found"):
        providers[0].get_dataset_shard(DatasetShardMetadata(dataset_name="train", world_rank=0))
    assert callable(get_session)
    from ray.train._internal.session import _TrainSession

    assert callable(getattr(_TrainSession, "_get_or_create_inter_actor_queue"))
    from ray.tune.impl.tuner_internal import TunerInternal

    assert callable(TunerInternal.get_run_config) and "_tune_config" in TunerInternal.__init__.__code__.co_names
    from optuna.distributions import FloatDistribution
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space={"x": FloatDistribution(0, 1)}, metric="m", mode="min")
    assert ray_internals.optuna_study(searcher).trials == []
    from ray.tune.experiment import Trial

    assert "max_failures" in Trial.__init__.__code__.co_varnames
    # _saved_unfinished_trials (unfinished_checkpoints, unfinished_trial_ids) reads Tune's saved state as its controller does
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    assert callable(_find_newest_experiment_checkpoint) and callable(Trial.from_json_state)
    assert callable(Trial.restore_run_metadata) and isinstance(_CheckpointManager.best_checkpoint_results, property)
    # driver_staging_copies: where a Tune driver stages its state, and what it names the file;
    # trial_storage: the trial's storage context, its checkpoint numbering.
    import inspect

    from ray._common.utils import get_default_system_temp_dir
    from ray.train._internal.session import get_storage
    from ray.train._internal.storage import StorageContext
    from ray.train.constants import _get_ray_train_session_dir
    from ray.tune.execution.tune_controller import TuneController

    assert callable(get_default_system_temp_dir) and callable(get_storage)
    from ray._private.node import Node

    assert callable(Node.get_session_dir_path) and hasattr(ray._private.worker, "_global_node")
    assert '"artifacts"' in inspect.getsource(_get_ray_train_session_dir)
    assert '"driver_artifacts"' in inspect.getsource(StorageContext.experiment_driver_staging_path.fget)
    assert TuneController.CKPT_FILE_TMPL == ray_internals.TUNE_STATE_PREFIX + "{}.json"
    assert "current_checkpoint_index" in inspect.signature(StorageContext.__init__).parameters
    # keep_trial_actors: the controller builds its actor cache from the module's name
    assert "_ObjectCache(may_keep_one=True)" in inspect.getsource(TuneController.__init__)
    # state_saves_spaced: the controller tells its state's manager of each checkpoint; the
    # manager's flag for a forced save and the time of its last save
    assert "self._checkpoint_manager.on_trial_checkpoint(trial)" in inspect.getsource(TuneController)
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    assert {"_last_save_time", "_should_force_sync_up"} <= set(_ExperimentCheckpointManager.__init__.__code__.co_names)
    # quiet_trial_errors: the controller's switch for its per-failure traceback, and the line
    # Tune's module logger ends a search with failed trials on
    assert '"TUNE_PRINT_ALL_TRIAL_ERRORS"' in inspect.getsource(TuneController.__init__)
    from ray.tune import tune as tune_module

    assert tune_module.logger.name == ray_internals.TUNE_LOGGER
    assert '"Trials did not complete: %s"' in inspect.getsource(tune_module)
    # raised_building_results: Tuner.fit() ends by building a ResultGrid, in that module's file
    from ray.tune import result_grid

    assert "return ResultGrid(self._experiment_analysis)" in inspect.getsource(TunerInternal.fit)
    assert result_grid.__file__.replace("\\", "/").endswith(ray_internals.RESULT_GRID_FILE)
    import logging

    assert ray_internals.AUTH_SETUP_LOGGER in logging.Logger.manager.loggerDict or \
        __import__("importlib").util.find_spec(ray_internals.AUTH_SETUP_LOGGER) is not None
    # sigterm_left_alone: ray.init (in that module) installs its driver's SIGTERM handler through utils
    assert "ray._private.utils.set_sigterm_handler(sigterm_handler)" in inspect.getsource(ray._private.worker)


def test_tunes_copy_racing_its_own_temporary_file_logs_no_traceback_and_other_failures_still_do(caplog):
    """Tune copies its staged experiment state in a thread while the next save writes files under
    temporary names: a copy that lists one before its rename fails (CI saw its traceback in a
    search's stderr). That race is dropped; any other failure to save the state still shows."""
    import inspect
    import logging

    from ray.tune.execution import experiment_state
    from ray.tune.search import Searcher
    from ray.tune.utils import util

    from raysweep import ray_internals

    # What the filter relies on, in the installed Ray: the logger, and temporary names with "-tmp-".
    assert experiment_state.logger.name == ray_internals.EXPERIMENT_STATE_LOGGER
    assert "Saving experiment state to storage" in inspect.getsource(experiment_state)
    assert '-tmp-' in inspect.getsource(Searcher.save_to_dir) and "tmp_file_name" in inspect.getsource(util._atomic_save)

    ray_internals.quiet_staging_race()
    ray_internals.quiet_staging_race()  # a second search in the same process adds nothing
    logger = logging.getLogger(ray_internals.EXPERIMENT_STATE_LOGGER)
    assert logger.filters.count(ray_internals._not_a_staging_race) == 1
    race = FileNotFoundError(2, "Failed to open local file '/tmp/ray/x/driver_artifacts/"
                                ".b62c-tmp-searcher-state-2026.pkl'")
    for error in (race, FileNotFoundError(2, "No such file: '/data/storage/exp'"), PermissionError(13, "denied")):
        try:
            raise error
        except OSError:
            logger.error("Saving experiment state to storage at '/x' failed with exception: ", exc_info=True)
    shown = [r.exc_info[1] for r in caplog.records if r.name == ray_internals.EXPERIMENT_STATE_LOGGER]
    assert len(shown) == 2 and race not in shown
