"""Spec validation: every malformed spec gets one line naming its key path and value."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from raysweep.errors import SpecError
from raysweep.spec import Spec, apply_override, load_spec, parse_yaml, validate
from tests.conftest import BASE_SPEC, ROOT, make_raw


def test_base_spec_is_valid_and_frozen():
    spec = validate(make_raw())
    assert spec.search.num_samples == 8 and spec.space["lr"].low == 1e-4
    with pytest.raises(Exception):
        spec.max_epochs = 3  # frozen: a running search's spec can't drift


def test_defaults_fill_optional_sections():
    raw = {"name": "x", "task": "digits_mlp", "max_epochs": 3, "space": {"lr": {"type": "uniform", "low": 0, "high": 1}}}
    spec = validate(raw)
    assert spec.metric == "val_loss" and spec.mode == "min" and spec.scheduler.type == "asha"
    assert spec.resources.workers_per_trial == 1 and spec.tracking.uri is None
    assert spec.experiment == "x"
    assert spec.failures.max_failures == 0 and spec.precision == "fp32"
    assert spec.search.max_failed_trials is None  # no limit: every sampled trial runs


@pytest.mark.parametrize("text", ["1e-4", "1E-4", "5e3", "-2.5e-3", "1.0e-4"])
def test_yaml_reads_exponent_floats_as_numbers(text):
    value = parse_yaml(f"v: {text}")["v"]
    assert isinstance(value, float) and math.isclose(value, float(text))


def test_string_exponent_in_spec_is_a_number(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: a\ntask: digits_mlp\nmax_epochs: 2\nspace:\n  lr: {type: loguniform, low: 1e-4, high: 1e-1}\n"
    )
    assert load_spec(path).space["lr"].low == pytest.approx(1e-4)


MALFORMED = [
    # (changes to the base spec, expected message fragment)
    ({"space.lr.low": 0.1, "space.lr.high": 0.001}, "space.lr: low (0.1) must be below high (0.001)"),
    ({"space.lr.low": 0.0}, "space.lr: low (0) must be positive for a loguniform parameter"),
    ({"space.lr.type": "logunifrom"}, "space.lr.type: unknown parameter type 'logunifrom'"),
    ({"space.lr": {"low": 1, "high": 2}}, "space.lr.type: required key is missing"),
    ({"space.lr.high": "big"}, "space.lr.high: input should be a valid number"),
    ({"space.batch_size.values": []}, "space.batch_size.values: values must list at least one option"),
    ({"space.batch_size.values": [32, 32]}, "space.batch_size.values: values [32, 32] contain duplicates"),
    ({"space.batch_size.values": [[1, 2]]}, "space.batch_size.values.0: must be a number, string or boolean, got [1, 2]"),
    ({"space.units": {"type": "int", "low": 8, "high": 4}}, "space.units: low (8) must be below high (4)"),
    ({"space.units": {"type": "int", "low": 1, "high": 4, "step": 0}}, "space.units: step (0) must be at least 1"),
    ({"space.lr.log": True}, "space.lr.log: unknown key (did you mean 'low'?)"),
    ({"space.lr.scale": 2}, "space.lr.scale: unknown key (known keys: low, high, type)"),
    ({"space": {}}, "space: must define at least one parameter to search"),
    ({"space.bad name": {"type": "uniform", "low": 0, "high": 1}}, "parameter name 'bad name' must be an identifier"),
    ({"max_epochs": 0}, "max_epochs: input should be greater than or equal to 1, got 0"),
    ({"max_epochs": "ten"}, "max_epochs: input should be a valid integer"),
    ({"mode": "minimize"}, "mode: 'minimize' is not allowed"),
    ({"search.algorithm": "grid"}, "search.algorithm: 'grid' is not allowed"),
    ({"search.num_samples": 0}, "search.num_samples: input should be greater than or equal to 1"),
    ({"search.num_sample": 4}, "search.num_sample: unknown key (did you mean 'num_samples'?)"),
    ({"search.max_concurrent": -1}, "search.max_concurrent: input should be greater than or equal to 1"),
    ({"scheduler.type": "pbt"}, "scheduler.type: 'pbt' is not allowed"),
    ({"scheduler.reduction_factor": 1}, "scheduler.reduction_factor: input should be greater than 1"),
    ({"scheduler.grace_period": 9}, "scheduler.grace_period (9) must not exceed max_epochs (6)"),
    ({"resources.cpus_per_worker": 0}, "resources.cpus_per_worker: input should be greater than 0"),
    ({"resources.gpus_per_worker": -1}, "resources.gpus_per_worker: input should be greater than or equal to 0"),
    ({"resources.poll_interval_s": 0}, "resources.poll_interval_s: input should be greater than 0"),
    ({"resources.poll_interval_s": 120}, "resources.poll_interval_s: input should be less than or equal to 60"),
    ({"resources.workers_per_trial": 2, "resources.gpus_per_worker": 0.5}, "gpus_per_worker (0.5) must be a whole number"),
    ({"resources.gpu": 1}, "resources.gpu: unknown key"),
    ({"fixed.lr": 0.1}, "fixed.lr: also defined in space"),
    ({"name": "my search!"}, "name: 'my search!' must start with a letter or digit"),
    ({"task": ""}, "task: must name a built-in task"),
    ({"epochs": 10}, "epochs: unknown key"),
    ({"tracking.url": "x"}, "tracking.url: unknown key (did you mean 'uri'?)"),
    ({"tracking.views": False, "tracking.view_images": True}, "view_images: true draws the views as PNGs, but views is false"),
    ({"checkpoint.every": 0}, "checkpoint.every: input should be greater than or equal to 1"),
    ({"failures.max_failures": -2}, "failures.max_failures: input should be greater than or equal to -1"),
    ({"failures.max_failure": 1}, "failures.max_failure: unknown key (did you mean 'max_failures'?)"),
    ({"search.max_failed_trials": 0}, "search.max_failed_trials: input should be greater than or equal to 1"),
    ({"precision": "fp16"}, "precision: 'fp16' is not allowed; input should be 'fp32' or 'bf16'"),
]


@pytest.mark.parametrize("changes,expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_specs_fail_with_one_line_naming_the_key(changes, expected):
    with pytest.raises(SpecError) as err:
        validate(make_raw(**changes))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_missing_required_keys():
    raw = make_raw()
    del raw["task"]
    with pytest.raises(SpecError, match=r"^task: required key is missing$"):
        validate(raw)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", "the spec is empty"),
        ("- a\n- b\n", "a spec is a YAML mapping of keys, got list"),
        ("name: [unclosed\n", "not valid YAML"),
        ("just a string", "a spec is a YAML mapping of keys, got str"),
    ],
)
def test_unreadable_files(tmp_path, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_missing_file():
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec("/nonexistent/spec.yaml")


def test_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match=r"^name: YAML tag !!python/object/apply:os.system is not allowed"):
        load_spec(path)


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    raw = apply_override(make_raw(), "search.num_samples=3")
    raw = apply_override(raw, "space.lr.low=1e-5")
    raw = apply_override(raw, "space.batch_size.values=[16, 32]")
    spec = validate(raw)
    assert spec.search.num_samples == 3
    assert spec.space["lr"].low == pytest.approx(1e-5)
    assert spec.space["batch_size"].values == [16, 32]
    assert BASE_SPEC["search"]["num_samples"] == 8  # the input is not mutated


@pytest.mark.parametrize(
    "assignment,expected",
    [
        ("search.num_samples", "expected key.path=value"),
        ("=3", "expected key.path=value"),
        ("search..x=3", "expected key.path=value"),
        ("name.sub=3", "name is 'test-search', not a mapping"),
    ],
)
def test_malformed_overrides(assignment, expected):
    with pytest.raises(SpecError, match=expected):
        apply_override(make_raw(), assignment)


def test_override_of_unknown_key_is_rejected_by_validation():
    with pytest.raises(SpecError, match="search.samples: unknown key"):
        validate(apply_override(make_raw(), "search.samples=4"))


def test_override_is_validated_like_the_file():
    with pytest.raises(SpecError, match=r"space.lr: low \(0.5\) must be below high \(0.1\)"):
        validate(apply_override(make_raw(), "space.lr.low=0.5"))


SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_specs_validate_and_open_with_their_command(path: Path):
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# raysweep search ") and path.name in first


def test_spec_round_trips_through_yaml():
    spec = validate(make_raw())
    assert validate(parse_yaml(spec.to_yaml())) == spec


# --------------------------------------------------------------------------- hyperparameter names


def test_every_setting_the_parent_run_logs_is_a_reserved_hyperparameter_name():
    """A hyperparameter named like one of them would change that param at the end of a search
    (the best trial's params are logged on the parent run), which MLflow refuses."""
    from types import SimpleNamespace

    from raysweep.spec import RESERVED_PARAM_NAMES, SEARCH_SETTINGS
    from raysweep.tracking import Tracker

    logged: list[str] = []

    class Client:  # records the params start_search logs, whatever MLflow calls it makes
        def __getattr__(self, name):
            def call(*args, **kwargs):
                logged.extend(p.key for p in kwargs.get("params") or [])
                return SimpleNamespace(info=SimpleNamespace(run_id="run"))
            return call

    tracker = object.__new__(Tracker)
    tracker.experiment_id, tracker.client = "0", Client()
    tracker.start_search(validate(make_raw()))
    assert logged and set(logged) <= RESERVED_PARAM_NAMES
    assert set(SEARCH_SETTINGS) <= RESERVED_PARAM_NAMES
    assert set(Spec.model_fields) - {"data"} <= RESERVED_PARAM_NAMES


@pytest.mark.parametrize("section", ["space", "fixed"])
@pytest.mark.parametrize("name", ["seed", "max_epochs", "metric", "workers_per_trial", "name", "precision"])
def test_reserved_names_are_refused_in_space_and_fixed(section, name):
    value = {"type": "uniform", "low": 0, "high": 1} if section == "space" else 1
    with pytest.raises(SpecError, match=rf"^{section}\.{name}: '{name}' is the name of a search setting .*"
                                        r"rename the hyperparameter$"):
        validate(make_raw(**{f"{section}.{name}": value}))


def test_tabular_fixed_data_file_is_still_a_hyperparameter():
    """`data` is a spec section too, but the tabular task's documented `fixed: {data: file.csv}` stays."""
    spec = validate(make_raw(task="tabular", fixed={"data": "t.csv", "target": "label"}))
    assert spec.fixed["data"] == "t.csv" and spec.data is None


# --------------------------------------------------------------------------- registered model name


@pytest.mark.parametrize("tracking,expected", [
    ({}, "test-search"),  # the experiment: the spec's name
    ({"registered_model": "digits-classifier"}, "digits-classifier"),
    ({"experiment": "/Users/me@example.com/digits"}, "Users-me@example.com-digits"),  # Databricks-style
    ({"experiment": "team:vision//digits:"}, "team-vision-digits"),
    ({"experiment": "/:/"}, "test-search"),  # nothing left: the spec's name
    ({"experiment": "/Users/me/exp", "registered_model": "exp-model"}, "exp-model"),
])
def test_registered_model_name(tracking, expected):
    spec = validate(make_raw(tracking=tracking))
    assert spec.registered_model_name == expected


@pytest.mark.parametrize("name", ["team/digits", "models:/digits", "a:b"])
def test_registered_model_with_slash_or_colon_is_refused(name):
    with pytest.raises(SpecError, match=r"^tracking.registered_model: .* must not contain '/' or ':'"):
        validate(make_raw(**{"tracking.registered_model": name}))


# --------------------------------------------------------------------------- YAML 1.2 numbers


@pytest.mark.parametrize("text,expected", [
    ("+.5", 0.5), ("-.5e-1", -0.05), ("1.", 1.0), ("01.5", 1.5), ("0o17", 15), ("0x1f", 31), ("+12", 12), ("-0", 0),
    # text to YAML 1.2, a number (90) or a date to PyYAML's YAML 1.1
    ("1:30", "1:30"), ("2024-01-01", "2024-01-01"), ("=", "="),
])
def test_yaml_reads_numbers_as_yaml_1_2(text, expected):
    value = parse_yaml(f"v: {text}")["v"]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text,expected", [
    ("010", "v: 010 has a leading zero"),
    ("-007", "v: -007 has a leading zero, which makes it octal to YAML 1.1; write -7"),
    ("1_000", "v: 1_000: write numbers without '_'"),
    ("1_000.5", "v: 1_000.5: write numbers without '_'"),
    ("0b101", "v: 0b101 is a binary number to YAML 1.1"),
    ("!!float abc", "v: 'abc' is not a number"),
])
def test_yaml_number_forms_the_versions_disagree_on_are_refused(text, expected):
    with pytest.raises(SpecError, match=f"^{re.escape(expected)}"):
        parse_yaml(f"v: {text}")


def test_yaml_keeps_anchors_and_merge_keys():
    raw = parse_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\nd: *b\n")
    assert raw == {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}, "d": {"x": 1, "y": 2}}


def test_duplicate_keys_name_the_path_and_lines():
    with pytest.raises(SpecError, match=r"^a\.b: given twice \(s\.yaml lines 2 and 4\); keep one$"):
        parse_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", source="s.yaml")
    with pytest.raises(SpecError, match=r"^x\.k: given twice \(--set x lines 1 and 1\)"):
        apply_override({}, "x={k: 1, k: 2}")
    # `true` and `yes` are one key (both read as true)
    with pytest.raises(SpecError, match=r"^yes: given twice"):
        parse_yaml("true: 1\nyes: 2\n")


def test_a_small_alias_expansion_is_fine_and_a_bomb_is_refused():
    small = "a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n"
    assert parse_yaml(small)["b"][3] == [1, 2, 3]
    bomb = "a: &a [" + ", ".join(["x"] * 10) + "]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcde", "bcdef"))
    with pytest.raises(SpecError, match=r"^s\.yaml: YAML aliases expand 23 values into 1,234,573; refusing it"):
        parse_yaml(bomb, source="s.yaml")


def test_text_that_reads_as_a_number_is_dumped_quoted():
    """'0o17' and '+.5' were text to YAML 1.1; a spec's dump quotes them so they read back as text."""
    fixed = {"a": "0o17", "b": "+.5", "c": "010", "d": "1e5", "e": "1:30", "f": 15, "g": 0.5, "h": 1e-05}
    spec = validate(make_raw(fixed=fixed))
    assert parse_yaml(spec.to_yaml())["fixed"] == fixed


@pytest.mark.parametrize("grace", [1, 2, 3, 5])
@pytest.mark.parametrize("factor", [1.1, 1.5, 2, 2.5, 3, 4])
@pytest.mark.parametrize("max_epochs", [5, 6, 9, 20, 27, 100])
def test_asha_rungs_are_the_epochs_tunes_asha_decides_at(grace, factor, max_epochs):
    # Where Tune's ASHAScheduler (Ray 2.60) puts its rungs, and the first epoch at or past each:
    # the epochs a trial may be stopped at, which save a checkpoint and which the budget and the
    # audit count on. Fails when Ray places them differently.
    from ray.tune.schedulers import ASHAScheduler

    if grace > max_epochs:
        pytest.skip("grace_period above max_epochs is refused")
    spec = validate(make_raw(**{"scheduler.grace_period": grace, "scheduler.reduction_factor": factor,
                                "max_epochs": max_epochs}))
    asha = ASHAScheduler(metric="val_loss", mode="min", time_attr="epoch", max_t=max_epochs, grace_period=grace,
                         reduction_factor=factor)
    decided = {math.ceil(milestone) for milestone, _ in asha._brackets[0]._rungs}
    assert spec.asha_rungs == sorted(e for e in decided if e < max_epochs)
    if (grace, factor, max_epochs) == (1, 2.5, 20):  # rungs at 2.5, 6.25 and 15.6 epochs decide at 3, 7 and 16
        assert spec.asha_rungs == [1, 3, 7, 16]
