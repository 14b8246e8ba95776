"""tasks/contract.py: what a task may offer, found once, and one line for what it lacks."""

from __future__ import annotations

import yaml

from raysweep.cli import main
from raysweep.tasks import resolve_task
from raysweep.tasks.contract import can_log_model, capabilities, gaps
from tests.conftest import make_raw


class OnlyBuildsModels:
    """Trains, and has build_model, but nothing to rebuild a checkpoint's model with."""

    def train(self, config, ctx):
        ctx.report({"val_loss": 1.0})

    def build_model(self, config):
        raise NotImplementedError


class RebuildsWithoutExamples(OnlyBuildsModels):
    def load_model(self, config, state):
        raise NotImplementedError


def test_a_supervised_task_has_every_capability():
    caps = capabilities(resolve_task("digits_mlp"))
    assert caps.evaluate and caps.rebuild and caps.examples and caps.check_params and caps.param_rules
    assert caps.data_formats == () and not caps.needs_data
    assert can_log_model(resolve_task("digits_mlp"))


def test_a_plain_function_task_only_trains():
    caps = capabilities(resolve_task("tests.user_tasks:missing_metric"))
    assert not (caps.evaluate or caps.rebuild or caps.examples or caps.check_params or caps.param_rules)
    assert caps.data_formats is None and gaps("f", resolve_task("tests.user_tasks:missing_metric"),
                                              has_data=False, log_model=True) == []


def test_half_a_capability_is_named_in_one_line():
    (line,) = gaps("mine:Task", OnlyBuildsModels(), has_data=False, log_model=True)
    assert "has build_model but no load_model(config, state)" in line and "not logged" in line
    (line,) = gaps("mine:Task", RebuildsWithoutExamples(), has_data=False, log_model=True)
    assert "no splits(seed) or splits_for(config, seed)" in line
    assert gaps("mine:Task", RebuildsWithoutExamples(), has_data=True, log_model=True) == []  # data: gives examples
    assert gaps("mine:Task", OnlyBuildsModels(), has_data=False, log_model=False) == []  # not asked for


def test_validate_and_search_print_the_gap_before_anything_runs(tmp_path, capsys, monkeypatch):
    from raysweep import runsetup

    def no_ray(*args, **kwargs):
        raise RuntimeError("stop here: the note must come before Ray starts")

    monkeypatch.setattr(runsetup, "ensure_ray", no_ray)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(make_raw(**{"task": "tests.test_contract:OnlyBuildsModels",
                                                                   "space": {"lr": {"type": "uniform", "low": 0.1,
                                                                                    "high": 0.2}}})))
    try:
        main(["search", str(tmp_path / "spec.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
              "--storage", str(tmp_path / "r")])
    except RuntimeError:
        pass
    err = capsys.readouterr().err
    assert err.count("raysweep: note: task 'tests.test_contract:OnlyBuildsModels' has build_model but no load_model") == 1


def test_the_guides_local_context_example_runs():
    """docs/guides/own-task.md's `LocalContext` block, as written: a task run by hand, no Ray."""
    import re

    from tests.conftest import ROOT

    guide = (ROOT / "docs" / "guides" / "own-task.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "LocalContext(" in b]
    scope: dict = {}
    exec(compile(block.replace("print(", "_shown = ("), "own-task.md", "exec"), scope)  # noqa: S102
    ctx = scope["ctx"]
    assert [r["epoch"] for r in ctx.reports] == [1, 2, 3] and ctx.reports[-1]["val_accuracy"] > 0.8
    assert ctx.reports[-1]["cost_wall_s"] > 0
