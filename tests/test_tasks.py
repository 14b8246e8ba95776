"""Tasks: built-in digits data, user tasks by import path, and the guide's example task."""

from __future__ import annotations

import re

import numpy as np
import pytest

from raysweep.search import run_search
from raysweep.errors import SpecError
from raysweep.spec import validate
from raysweep.tasks import FunctionTask, TrainLoopTask, resolve_task
from raysweep.tasks.digits import digits_splits
from tests.conftest import ROOT, make_raw


def test_digits_split_is_stratified_seeded_and_disjoint():
    a, b = digits_splits(0), digits_splits(1)
    sizes = [len(a.train[0]), len(a.val[0]), len(a.test[0])]
    assert sum(sizes) == 1797 and sizes[1] == pytest.approx(0.2 * 1797, abs=2)
    rows = [{tuple(r) for r in part[0].numpy().round(4)} for part in (a.train, a.val, a.test)]
    assert not (rows[0] & rows[2]) or len(rows[0] & rows[2]) < 5  # digits has a few duplicate images
    for part in (a.train, a.val, a.test):  # every class in proportion
        counts = np.bincount(part[1].numpy(), minlength=10) / len(part[1])
        assert counts.min() > 0.08 and counts.max() < 0.12
    assert not np.array_equal(a.test[1].numpy(), b.test[1].numpy())
    assert digits_splits(0) is a  # cached per process


def test_resolve_function_and_class_tasks():
    assert isinstance(resolve_task("tests.user_tasks:missing_metric"), FunctionTask)
    assert hasattr(resolve_task("tests.user_tasks:Quadratic"), "train")
    # One parameter: a Ray Train train_loop_per_worker(config), run on a TorchTrainer.
    assert isinstance(resolve_task("tests.user_tasks:ray_train_loop"), TrainLoopTask)


def test_resolve_errors_name_the_task():
    with pytest.raises(SpecError, match=r"^task: unknown task 'digits' \(built-in: digits_cnn, digits_mlp"):
        resolve_task("digits")
    with pytest.raises(SpecError, match="task: 'tests.user_tasks' has no attribute 'Nope'"):
        resolve_task("tests.user_tasks:Nope")
    with pytest.raises(SpecError, match=r"task: 'tests.user_tasks:three_args' takes 3 arguments; expected"):
        resolve_task("tests.user_tasks:three_args")


def test_class_task_without_torch_is_searched(ray_session, tmp_path, tracking_uri):
    spec = validate(make_raw(**{
        "name": "quadratic", "task": "tests.user_tasks:Quadratic", "max_epochs": 3,
        "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}}, "fixed": {},
        "search.num_samples": 12, "search.max_concurrent": 2,
    }))
    result = run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    assert len(result.trials) == 12
    assert result.test_metrics == {}  # no evaluate(): nothing to test
    # TPE should have closed in on x = 0.3 (random sampling alone rarely gets this near in 12).
    assert abs(result.best["config"]["x"] - 0.3) < 0.15


def test_the_guides_user_task_is_the_shipped_example_and_runs(ray_session, tmp_path, tracking_uri):
    guide = (ROOT / "docs" / "guides" / "own-task.md").read_text()
    example = (ROOT / "examples" / "wine_task.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert example in blocks, "docs/guides/own-task.md's user task must be examples/wine_task.py verbatim"
    assert len(example.strip().splitlines()) <= 40

    from raysweep.spec import load_spec

    spec = load_spec(ROOT / "examples" / "wine.yaml", ["search.num_samples=4", "max_epochs=4"])
    result = run_search(spec, storage=str(tmp_path), tracking_uri=tracking_uri)
    assert len(result.trials) == 4
    assert result.best["metrics"]["val_accuracy"] > 0.8  # wine is easy once standardised


SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_specs_pass_their_tasks_checks(path):
    """The built-in tasks' value ranges (param_rules) take every shipped spec."""
    from raysweep.spec import load_spec
    from raysweep.tasks import check_task_params

    check_task_params(load_spec(path))


def test_value_rules_describe_themselves():
    from raysweep.tasks.params import COUNT, POSITIVE, PROBABILITY, Bounds, OneOf

    assert str(PROBABILITY) == "a finite number in [0, 1)" and str(POSITIVE) == "a finite number > 0"
    assert str(COUNT) == "an integer >= 1" and str(Bounds(1, 5, integer=True)) == "an integer in [1, 5]"
    assert str(OneOf((False, True))) == "one of false, true"
    assert PROBABILITY.allows(0) and PROBABILITY.allows(0.99) and not PROBABILITY.allows(1.0)
    assert not POSITIVE.allows(float("inf")) and not POSITIVE.allows(float("nan")) and not POSITIVE.allows(0)
    assert COUNT.allows(10**400) and not COUNT.allows(True) and not COUNT.allows(64.0) and not COUNT.allows("64")
    assert not OneOf((False, True)).allows(0) and not OneOf((False, True)).allows("false")


def test_a_train_value_out_of_range_is_named_as_its_set():
    from raysweep.tasks import check_train_params

    spec = validate(make_raw())
    check_train_params(spec, {"lr": 0.01, "batch_size": 64, "dropout": 0.2, "hidden": 32})
    with pytest.raises(SpecError, match=r"^--set dropout: 1\.5 is not a finite number in \[0, 1\)$"):
        check_train_params(spec, {"lr": 0.01, "batch_size": 64, "dropout": 1.5, "hidden": 32})


def test_splits_the_seed_alone_decides_are_shared_and_given_ones_are_trained_on():
    from raysweep.tasks.digits import DigitsCNN, DigitsMLP
    from raysweep.tasks.images import ImageFolder
    from raysweep.tasks.tabular import Tabular

    driver, trial = DigitsMLP(), DigitsCNN()
    shared = driver.shared_splits(3)
    assert shared is digits_splits(3)
    # Config decides them (a CSV named in the config), or the spec's data: does: each trial loads its own.
    assert Tabular().shared_splits(3) is None and ImageFolder().shared_splits(3) is None
    trial.give_splits(3, shared)
    assert trial.splits_for({"channels": 8}, 3) is shared
    assert trial.splits_for({}, 4) is digits_splits(4)  # another seed: not given
