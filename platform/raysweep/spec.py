"""YAML -> validated, frozen `Spec`, with `--set a.b=value` overrides.

Every problem a user can make in a spec surfaces as one `SpecError` whose message is a
single line naming the key path and the value, e.g.
``space.lr: low (0.1) must be below high (0.001)``.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SpecError


# --------------------------------------------------------------------------- YAML loading


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` that reads numbers as YAML 1.2 does (as users and other tools do).

    PyYAML follows YAML 1.1: `1e-4` is text, `010` octal 8, `1:30` the number 90, `0o17` and
    `+.5` text, `2024-01-01` a date. Here, as in YAML 1.2, `1e-4`, `+.5` and `0o17` (15) are
    numbers and `1:30` and `2024-01-01` text (where a spec needs a number, validation then
    names the key). The forms the two versions read as different numbers, or that 1.2 reads
    as text but no user means as text (`010`, `0b101`, `1_000`), are refused by `_check_tree`,
    naming the key.
    """


_TAG = "tag:yaml.org,2002:"
_INT, _FLOAT, _MERGE = _TAG + "int", _TAG + "float", _TAG + "merge"
# YAML 1.1's implicit ints, floats, timestamps and `=` (tag:value, which SafeLoader cannot
# even construct) go; booleans, nulls and `<<` merges stay.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in (_TAG + "bool", _TAG + "null", _MERGE)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# Ints before floats: the float pattern also matches `10`. Both match more than YAML 1.2's
# forms (signs on hex, '_', leading zeros) so that `_check_tree` can refuse those by name.
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _scalar(construct, what: str):
    """A scalar constructor whose bad input (`!!int abc`, `!!bool maybe`) is a YAML error, not a
    ValueError or KeyError out of PyYAML's internals."""

    def wrapped(loader, node):
        try:
            return construct(loader, node)
        except (ValueError, KeyError):
            raise yaml.constructor.ConstructorError(
                None, None, f"{_format_value(node.value)} is not {what}", node.start_mark
            ) from None

    return wrapped


# int(text, 0): decimal, 0x and 0o as YAML 1.2 (and Python) read them; `_check_tree` has refused
# the rest. Its ValueError also covers a number too long for int() (over 4,300 digits).
_Loader.add_constructor(_INT, _scalar(lambda loader, node: int(loader.construct_scalar(node), 0), "an integer"))
_Loader.add_constructor(_FLOAT, _scalar(yaml.SafeLoader.construct_yaml_float, "a number"))
_Loader.add_constructor(_TAG + "bool", _scalar(yaml.SafeLoader.construct_yaml_bool, "a boolean"))

# Tags a spec may use: plain data. Not !!binary (bytes), !!set, !!omap, !!pairs, !!timestamp,
# nor !!python/... (SafeLoader refuses those too, less clearly).
_DATA_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")  # 010: octal 8 to YAML 1.1, 10 to YAML 1.2
_MAX_DEPTH = 32  # a spec nests 4 levels; deeper input would hit Python's recursion limit later
# An alias bomb ("billion laughs"): a few lines whose aliases expand into millions of values,
# which the spec's dump, MLflow params and pydantic would each expand again.
_MAX_EXPANSION, _MIN_EXPANDED = 100, 10_000


def _number_problem(node: yaml.ScalarNode) -> str | None:
    """Why a number as written must not be read, or None."""
    text = node.value
    if len(text) > 1000:  # int() refuses over 4,300 digits; float() makes them inf
        return f"{text[:12]}... has {len(text):,} characters, too many for a number"
    if "_" in text:
        return f"{text}: write numbers without '_' (YAML 1.2 reads {text} as text, YAML 1.1 as a number)"
    if node.tag == _INT and _LEADING_ZERO.fullmatch(text):
        sign, digits = "-" if text[0] == "-" else "", text.lstrip("+-").lstrip("0") or "0"
        return (f"{text} has a leading zero, which makes it octal to YAML 1.1; "
                f"write {sign}{digits} (or {sign}0o{digits} for octal, or quote it for text)")
    if node.tag == _INT and text.lstrip("+-").startswith("0b"):
        return f"{text} is a binary number to YAML 1.1 but text to YAML 1.2; write it in decimal, or quote it for text"
    return None


def _check_tree(loader: _Loader, root: yaml.Node, source: str, at: str) -> None:
    """Refuse, naming the key, what `yaml.safe_load` would silently misread or blow up on,
    before anything is constructed: duplicate keys (the last would silently win), tags other
    than plain data, ambiguous number forms, recursive aliases and alias bombs."""
    sizes: dict[int, int] = {}  # id(node) -> values under it once aliases are expanded
    walking: set[int] = set()

    def name(path: list[str]) -> str:
        return ".".join([at, *path] if at else path) or source

    def walk(node: yaml.Node, path: list[str]) -> int:
        if id(node) in sizes:  # an alias to a node already checked
            return sizes[id(node)]
        if id(node) in walking:
            raise SpecError(f"{name(path)}: a YAML alias refers to a value that contains it")
        if len(path) > _MAX_DEPTH:
            raise SpecError(f"{name(path[:3])}: nested more than {_MAX_DEPTH} levels deep")
        if node.tag not in _DATA_TAGS:
            tag = node.tag.replace(_TAG, "!!")
            raise SpecError(f"{name(path)}: YAML tag {tag} is not allowed in a spec (plain numbers, text, "
                            "booleans, lists and mappings only)")
        walking.add(id(node))
        size = 1
        if isinstance(node, yaml.ScalarNode):
            problem = _number_problem(node) if node.tag in (_INT, _FLOAT) else None
            if problem is None and node.tag != _MERGE:  # `<<` has no constructor of its own
                try:
                    loader.construct_object(node)  # `!!int abc` named by its key, not "not valid YAML"
                except yaml.constructor.ConstructorError as exc:
                    problem = exc.problem
            if problem:
                raise SpecError(f"{name(path)}: {problem}")
        elif isinstance(node, yaml.SequenceNode):
            size += sum(walk(child, [*path, str(i)]) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key_path = path if key_node.tag == _MERGE else [*path, str(key_node.value)]
                size += walk(key_node, key_path) + walk(value_node, key_path)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                    continue  # `<<` merges may repeat; a list as a key fails in construction
                key = loader.construct_object(key_node)  # `lr` and "lr", `1` and `0x1`: one key
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise SpecError(f"{name(key_path)}: given twice ({source} lines {lines[key]} and {line}); "
                                    "keep one")
                lines[key] = line
        walking.discard(id(node))
        sizes[id(node)] = size
        return size

    expanded = walk(root, [])
    if expanded > _MIN_EXPANDED and expanded > _MAX_EXPANSION * len(sizes):
        raise SpecError(f"{source}: YAML aliases expand {len(sizes):,} values into {expanded:,}; "
                        "refusing it (an alias bomb?)")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes the text `_Loader` would read as a number (`'0o17'`, `'+.5'`), so
    a dumped spec reads back as it was."""


_Dumper.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def dump_yaml(data: Any) -> str:
    """`data` as YAML that `parse_yaml` reads back unchanged (keys in their order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def parse_yaml(text: str, source: str = "<string>", at: str = "") -> Any:
    """`text` as plain data (`yaml.safe_load`, read as YAML 1.2, see `_Loader`); `source`
    names it in errors, `at` is the key path of the value it gives (`--set space.lr=...`)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_tree(loader, node, source, at)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{source}:{where} not valid YAML: {problem}") from None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise SpecError(f"{source}: nested more than {_MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- parameters


def _is_number_type(annotation: Any) -> bool:
    """`int`, `float` or an optional one; not `bool`, and not a union that allows booleans."""
    options = get_args(annotation) or (annotation,)
    return bool({int, float} & set(options)) and bool not in options


def _no_boolean_numbers(cls, value, info):
    # Pydantic would read `max_epochs: true` as 1 (and YAML reads yes/no/on/off as booleans).
    field = cls.model_fields.get(info.field_name)
    if isinstance(value, bool) and field is not None and _is_number_type(field.annotation):
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


class _Frozen(BaseModel):
    # allow_inf_nan: `.inf` / `.nan` in a number field (resources, cost, ranges, choices) is
    # refused; `gt=0` alone lets `cpus_per_worker: .inf` through to Ray.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _numbers = field_validator("*", mode="before")(classmethod(_no_boolean_numbers))


class _Param(BaseModel):
    """A space parameter. Pydantic allows no `before` check on the `type` tag, so the
    boolean check names the number fields."""

    model_config = _Frozen.model_config

    _numbers = field_validator("low", "high", "step", mode="before", check_fields=False)(
        classmethod(_no_boolean_numbers)
    )


class _Range(_Param):
    low: float = Field(description="lower end of the range")
    high: float = Field(description="upper end of the range (above `low`)")

    @model_validator(mode="after")
    def _ordered(self):  # finite already: allow_inf_nan=False
        if not self.low < self.high:
            low, high = (v if isinstance(v, int) else f"{v:g}" for v in (self.low, self.high))
            raise ValueError(f"low ({low}) must be below high ({high})")
        return self


class Uniform(_Range):
    """A number drawn uniformly between `low` and `high`."""

    type: Literal["uniform"]


class LogUniform(_Range):
    """A number drawn between `low` and `high` on a log scale (learning rates); `low` > 0."""

    type: Literal["loguniform"]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"low ({self.low:g}) must be positive for a loguniform parameter")
        return self


class IntParam(_Range):
    """An integer from `low` to `high` (both included)."""

    type: Literal["int"]
    low: int = Field(description="lowest value")
    high: int = Field(description="highest value (above `low`)")
    step: int = Field(1, description="spacing of the values (at least 1)")
    log: bool = Field(
        False, description="sample on a log scale (e.g. hidden sizes 16..1024); needs `low` >= 1 and `step` 1")

    @model_validator(mode="after")
    def _steps(self):
        if self.step < 1:
            raise ValueError(f"step ({self.step}) must be at least 1")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scale int parameter needs low >= 1 and step 1")
        return self


Scalar = Union[bool, int, float, str]


class Choice(_Param):
    """One of a list of values."""

    type: Literal["choice"]
    values: list[Scalar] = Field(description="the options: numbers, strings or booleans, at least one, no duplicates")

    @field_validator("values")
    @classmethod
    def _non_empty(cls, values):
        if not values:
            raise ValueError("values must list at least one option")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"values {values} contain duplicates")
        return values


Param = Annotated[Union[Uniform, LogUniform, IntParam, Choice], Field(discriminator="type")]
PARAM_TYPES = ("uniform", "loguniform", "int", "choice")


# --------------------------------------------------------------------------- sections


class BudgetSection(_Frozen):
    """What a search may spend; the first limit reached ends it (budget.py)."""

    epochs: int | None = Field(None, ge=1, description="epochs trained, all trials together")
    device_hours: float | None = Field(None, gt=0, description="device-hours (a GPU's, else a CPU core's; "
                                                               "`cost_device_hours`), all trials together")
    usd: float | None = Field(None, gt=0, description="dollars at the `cost` prices (`cost_usd`), all trials "
                                                      "together")
    wall_s: float | None = Field(None, gt=0, description="seconds from the search's start")

    @model_validator(mode="after")
    def _some_limit(self):
        if not self.limits:
            raise ValueError("set at least one of epochs, device_hours, usd, wall_s")
        return self

    @property
    def limits(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items() if v is not None}


class ConfirmSection(_Frozen):
    """Retrain the best configurations with fresh seeds before registering one (confirm.py)."""

    top_k: int = Field(3, ge=1, description="how many of the best configurations (of trials that ran `max_epochs`) "
                                            "are retrained")
    seeds: int = Field(3, ge=1, description="fresh training seeds for each (model initialisation and batch order; "
                                            "the data split stays the spec's `seed`'s)")


DEFAULT_NUM_SAMPLES = 32


class SearchSection(_Frozen):
    algorithm: Literal["tpe", "random"] = Field(
        "tpe", description="`tpe`: Optuna's TPE sampler (multivariate, constant liar, built with `seed`); "
                           "`random`: Optuna's random sampler")
    num_samples: int | None = Field(
        None, ge=1, description=f"trials; null: {DEFAULT_NUM_SAMPLES}, or with a `budget` as many as it buys")
    budget: BudgetSection | None = Field(
        None, description="what the search may spend (keys below); it samples until the first limit is reached "
                          "and never starts a trial, or lets one past a rung, that would cross it")
    confirm: ConfirmSection | None = Field(
        None, description="after the trials, retrain the top configurations with fresh seeds and register the one "
                          "with the best mean (keys below; the runs count in the cost and the budget); null: the best "
                          "single trial is registered")
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at once; null: as many as the cluster's nodes hold, looked at again as "
                                "nodes join or leave")
    # Optuna's default is 10.
    n_startup_trials: int = Field(8, ge=1, description="random trials before TPE starts modelling")
    max_failed_trials: int | None = Field(
        None, ge=1, description="this many FAILED trials stop the search, which then fails (exit code 1) after "
                                "logging what finished; a trial counts once its retries (`failures.max_failures`) "
                                "are spent; null: no limit")

    @property
    def samples(self) -> int | None:
        """Trials to run: `num_samples`, else 32, else (with a budget) None, as many as it buys."""
        if self.num_samples is not None or self.budget is not None:
            return self.num_samples
        return DEFAULT_NUM_SAMPLES


class SchedulerSection(_Frozen):
    type: Literal["asha", "fifo"] = Field(
        "asha", description="`asha`: stop weak trials at rungs grace x rf^k epochs; `fifo`: every trial runs "
                            "`max_epochs`")
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped (at most `max_epochs`)")
    reduction_factor: float = Field(3, gt=1, description="keep the best 1/rf at each rung")
    report: Literal["sync", "async"] = Field(
        "sync", description="`async`: a one-worker trial reports each epoch (metrics to Tune, its checkpoint "
                            "to storage) in a thread while the next epoch trains; a trial ASHA stops may then "
                            "train one epoch more, which is neither reported nor billed")
    audit: int = Field(
        0, ge=0, description="after the search, train this many randomly chosen trials ASHA stopped on to "
                             "`max_epochs` (billed like trials) and report how many would have beaten the chosen "
                             "trial, and what a longer grace period would have cost (docs/concepts.md); 0: none")


class ResourcesSection(_Frozen):
    workers_per_trial: int = Field(
        1, ge=1, description="1: the trial trains inside its Tune process; more: a Ray Train DDP worker group per "
                             "trial")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker (and torch's thread count)")
    gpus_per_worker: float = Field(
        0, ge=0, description="GPUs per worker; a fraction (0.25) lets one-worker trials share a GPU (worker groups: "
                             "whole GPUs only)")
    # Read by distributed.py.
    poll_interval_s: float | None = Field(
        None, gt=0, le=60, description="worker groups only: seconds between Ray Train's polls of the workers, which "
                                       "collect their reports; null: `$RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, else 0.05")
    # Read by capacity.py.
    scale_wait_s: float = Field(
        900, gt=0, description="an autoscaling cluster whose nodes cannot yet hold a trial: seconds to wait for the "
                               "autoscaler before the search fails (a fixed cluster that can never hold one is "
                               "refused at once, exit 2)")

    @model_validator(mode="after")
    def _whole_gpus_for_ddp(self):
        # A fraction of a GPU makes sense only for a one-worker trial sharing a device.
        if self.workers_per_trial > 1 and self.gpus_per_worker not in (0, int(self.gpus_per_worker)):
            raise ValueError(
                f"gpus_per_worker ({self.gpus_per_worker:g}) must be a whole number "
                "when workers_per_trial > 1"
            )
        return self


_NOT_IN_MODEL_NAMES = re.compile(r"[/:]+")


class TrackingSection(_Frozen):
    uri: str | None = Field(
        None, description="MLflow tracking URI (`--tracking-uri` overrides it); null: `$MLFLOW_TRACKING_URI`, else "
                          "`sqlite:///mlflow.db` in the working directory")
    experiment: str | None = Field(None, description="MLflow experiment name; null: `name`")
    enabled: bool = Field(True, description="false: no MLflow at all (benchmarks)")
    log_model: bool = Field(
        True, description="log the best trial's model (PyTorch flavor) on the parent run and register it")
    views: bool = Field(
        True, description="draw the search's views on the parent run (`views/search.html`: importance, parallel "
                          "coordinates, slices, learning curves, timeline, early-stopping audit, Pareto front with "
                          "several objectives, best against compute) and log the importances as `importance_<param>` "
                          "(docs/reference/mlflow.md); about 0.1 s at the search's end")
    view_images: bool = Field(
        False, description="with `views`, also draw each view as a PNG beside the page (Optuna's matplotlib "
                           "plots), for reports: about 1 s more at the search's end on 2 cores. Without it, the "
                           "page opened in a browser saves each plot as a PNG from its camera button")
    registered_model: str | None = Field(
        None, description="Model Registry name, without `/` or `:` (MLflow refuses them); null: the experiment's "
                          "name with each run of `/` and `:` made `-`")

    @field_validator("registered_model")
    @classmethod
    def _registry_name(cls, name):
        if name is not None and _NOT_IN_MODEL_NAMES.search(name):
            raise ValueError(f"{name!r} must not contain '/' or ':' (MLflow refuses them in a registered model name)")
        return name

    @model_validator(mode="after")
    def _images_are_the_views(self):
        if self.view_images and not self.views:
            raise ValueError("view_images: true draws the views as PNGs, but views is false")
        return self


class CheckpointSection(_Frozen):
    every: int = Field(1, ge=1, description="epochs between checkpoints; the last epoch, and under ASHA each "
                                             "epoch at which it may stop a trial, always save one")
    keep: int = Field(2, ge=1, description="checkpoints kept per trial")


class CostSection(_Frozen):
    # Rough on-demand list prices (2026): a vCPU-hour of a general-purpose cloud VM, an
    # H100-class GPU-hour. Set your own: they only scale `cost_usd`.
    cpu_hour_usd: float = Field(0.05, ge=0, description="price of a CPU core-hour, for `cost_usd`")
    gpu_hour_usd: float = Field(3.0, ge=0, description="price of a GPU-hour, for `cost_usd`")
    country: str | None = Field(
        None, pattern=r"^[A-Z]{3}$",
        description="where the trials' electricity comes from, as an ISO 3166-1 alpha-3 code (`USA`, `FRA`, "
                    "`DEU`), for `co2e_kg` (codecarbon's offline energy-mix data); null: the world average")


class FailuresSection(_Frozen):
    # Ray Train's / Tune's FailureConfig.
    max_failures: int = Field(
        0, ge=-1, description="restarts of a trial whose worker (or trial process) died or raised, each from the "
                              "trial's latest checkpoint; never after a NaN or infinite loss; -1: no limit")


DATA_FORMATS = ("parquet", "csv", "jsonl", "images")


class DataSection(_Frozen):
    """Datasets in files, read and preprocessed by Ray Data (ingest.py; checked by files.py).

    Each split is a file, a directory of files, or a URI pyarrow opens (`s3://bucket/dir`,
    with pyarrow's options in the query: `?endpoint_override=host:port&scheme=http`).
    """

    train: str = Field(min_length=1, description="the training split: a file, a folder of files, or "
                                                 "`s3://bucket/prefix`")
    val: str = Field(min_length=1, description="the validation split, as `train`")
    test: str | None = Field(None, min_length=1, description="the test split, for the chosen trial's test "
                                                             "metrics; null: no test metrics")
    format: Literal["parquet", "csv", "jsonl", "images"] = Field(
        description="`images`: one subfolder per class; `parquet`, `csv`, `jsonl`: tables")
    label: str = Field("label", min_length=1, description="parquet / csv / jsonl: the class column")
    features: list[str] | None = Field(
        None, description="parquet / csv / jsonl: the feature columns; null: every column but the label")
    image_size: int | None = Field(
        None, ge=4, le=4096, description="images: every image resized to image_size x image_size; null: the first "
                                         "image's size")
    image_mode: Literal["RGB", "L"] = Field("RGB", description="images: every image converted to this mode")
    cache: Literal["auto", "memory", "none"] = Field(
        "auto", description="`auto`: read and preprocess every split once per search into Ray's object store when "
                            "they take at most half of it, else every trial streams from the files; `memory` / "
                            "`none` force one or the other")
    shuffle_buffer: int = Field(
        2048, ge=0, description="rows a training stream shuffles among (per worker, reseeded every epoch); 0: file "
                                "order")

    @field_validator("features")
    @classmethod
    def _features(cls, features, info):
        if features is None:
            return features
        if not features:
            raise ValueError("must name at least one column (or leave it out: every column but the label)")
        if len(set(features)) != len(features):
            raise ValueError(f"{features} names a column twice")
        if info.data.get("label") in features:  # `label` is declared first, so already checked
            raise ValueError(f"lists the label column {info.data['label']!r}")
        return features


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a search name (and a directory under --storage)
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Spec(_Frozen):
    name: str = Field(description="letters, digits, `_ . -`: the MLflow experiment and parent run, and Ray's "
                                  "results folder")
    task: str = Field(description="built-in (`digits_mlp`, `digits_cnn`, `tabular`, `regression`, `image_folder`) or "
                                  "`package.module:object`")
    metric: str | list[str] = Field(
        "val_loss", description="what ASHA and the sampler optimise; any metric the task reports, or one the cost "
                                "meter adds (`cost_usd`, `cost_device_hours`, `flops`, ...). A list of two or more: "
                                "several objectives; the first is ASHA's and ranks the leaderboard, the Pareto front "
                                "of all of them is logged (docs/concepts.md, several objectives)")
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = Field(
        "min", description="whether `metric` is minimised or maximised; with several metrics, one mode each (or one "
                           "for all)")
    limits: dict[str, float] = Field(
        {}, description="several objectives: bounds on the second and later ones (at most the bound for a `min` "
                        "objective, at least for `max`); the model registered is the Pareto front's member with the "
                        "best first objective within them (none within: the best first objective, with a warning)")
    max_epochs: int = Field(ge=1, description="the most epochs a trial trains (ASHA's max_t)")
    # NumPy's (and so Optuna's samplers') seed range.
    seed: int = Field(0, ge=0, lt=2**32, description="sampler seed, data split, `torch.manual_seed` in every "
                                                     "trial")
    search: SearchSection = SearchSection()
    scheduler: SchedulerSection = SchedulerSection()
    space: dict[str, Param] = Field(description="the hyperparameters to search, at least one: name -> "
                                                  "parameter (types below)")
    fixed: dict[str, Any] = Field({}, description="hyperparameters passed to every trial unchanged (not also in "
                                                  "`space`)")
    resources: ResourcesSection = ResourcesSection()
    tracking: TrackingSection = TrackingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    failures: FailuresSection = FailuresSection()
    cost: CostSection = CostSection()
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="`bf16`: forward passes under `torch.autocast(bfloat16)` (weights and optimizer stay "
                            "fp32)")
    data: DataSection | None = Field(
        None, description="datasets in files, read, preprocessed and streamed by Ray Data; null: the task's own data")

    @field_validator("name")
    @classmethod
    def _name(cls, name):
        if not NAME_PATTERN.fullmatch(name):  # fullmatch: `$` alone would let a trailing newline through
            raise ValueError(
                f"{name!r} must start with a letter or digit and use only letters, digits, '_', '.', '-'"
            )
        return name

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, metric):
        names = metric if isinstance(metric, list) else [metric]
        for name in names:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"must name a metric (or list two or more), got {_format_value(name)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{names} names a metric twice")
        if not names:
            raise ValueError("must name a metric, got an empty list")
        return names[0] if len(names) == 1 else names

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, mode):
        modes = mode if isinstance(mode, list) else [mode]
        for value in modes:
            if value not in ("min", "max"):
                raise ValueError(f"{_format_value(value)} is not allowed; expected 'min' or 'max'")
        if not modes:
            raise ValueError("must be 'min' or 'max' (or one per metric), got an empty list")
        return modes[0] if len(modes) == 1 else modes

    @field_validator("task")
    @classmethod
    def _task(cls, task):
        if not task.strip():
            raise ValueError("must name a built-in task or 'package.module:object'")
        return task

    @field_validator("space")
    @classmethod
    def _space(cls, space):
        if not space:
            raise ValueError("must define at least one parameter to search")
        for key in space:
            if not _PARAM_NAME.fullmatch(key):
                raise ValueError(f"parameter name {key!r} must be an identifier (letters, digits, '_')")
        return space

    @model_validator(mode="after")
    def _consistent(self):
        for section in ("space", "fixed"):
            reserved = sorted(RESERVED_PARAM_NAMES.intersection(getattr(self, section)))
            if reserved:
                raise ValueError(
                    f"{section}.{reserved[0]}: {reserved[0]!r} is the name of a search setting (the MLflow "
                    f"parent run's params, and `raysweep train --set {reserved[0]}=...`); rename the hyperparameter"
                )
        both = sorted(set(self.space) & set(self.fixed))
        if both:
            raise ValueError(f"fixed.{both[0]}: also defined in space; keep it in one of them")
        if self.scheduler.report == "async" and self.resources.workers_per_trial > 1:
            raise ValueError(
                f"scheduler.report: 'async' applies to one-worker trials; with resources.workers_per_trial: "
                f"{self.resources.workers_per_trial}, Ray Train reports (report: sync)"
            )
        self._objectives_consistent()
        if self.scheduler.audit and self.scheduler.type != "asha":
            raise ValueError(f"scheduler.audit: {self.scheduler.audit} audits early stopping; with scheduler.type: "
                             f"{self.scheduler.type!r} no trial is stopped early")
        if self.scheduler.grace_period > self.max_epochs:
            raise ValueError(
                f"scheduler.grace_period ({self.scheduler.grace_period}) must not exceed "
                f"max_epochs ({self.max_epochs})"
            )
        return self

    def _objectives_consistent(self) -> None:
        metrics, modes = self.metric, self.mode
        if isinstance(modes, list) and (not isinstance(metrics, list) or len(modes) != len(metrics)):
            count = len(metrics) if isinstance(metrics, list) else 1
            raise ValueError(f"mode: {len(modes)} modes for {count} metric{'s' if count != 1 else ''}; give one per "
                             f"metric, or one for all")
        later = dict(self.objectives[1:])
        for name in self.limits:
            if later and name == self.rank_metric:
                raise ValueError(f"limits.{name}: is the first objective, which the choice optimises within the "
                                 f"limits on the others ({', '.join(later)})")
            if name not in later:
                where = f"one of {sorted(later)}" if later else "a second objective (metric: [first, second])"
                raise ValueError(f"limits.{name}: bounds an objective the spec does not have; expected {where}")
        if len(self.objectives) > 1 and self.search.confirm is not None:
            raise ValueError("search.confirm: chooses by the first objective alone; with several objectives the "
                             "model is chosen from the Pareto front (`limits`)")

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective, the first being the one ASHA stops on and trials rank by."""
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        modes = self.mode if isinstance(self.mode, list) else [self.mode] * len(metrics)
        return list(zip(metrics, modes))

    @property
    def rank_metric(self) -> str:
        """The metric ASHA stops trials on and the leaderboard ranks them by: the first objective."""
        return self.objectives[0][0]

    @property
    def rank_mode(self) -> str:
        return self.objectives[0][1]

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, list)

    @property
    def asha_rungs(self) -> list[int]:
        """The epochs below max_epochs at which ASHA decides whether a trial goes on (where it
        would, under `scheduler.type: fifo`). Computed as Tune's ASHAScheduler places its rungs
        (grace_period x reduction_factor^k, k < int(log_rf(max_epochs / grace_period)) + 1) and
        decides at them: at the first epoch at or past each, so the ceiling of a fractional one."""
        grace, factor = self.scheduler.grace_period, self.scheduler.reduction_factor
        count = int(math.log(self.max_epochs / grace) / math.log(factor) + 1)
        return sorted({epoch for epoch in (math.ceil(grace * factor ** k) for k in range(count)) if epoch < self.max_epochs})

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def registered_model_name(self) -> str:
        """The Model Registry name of the best model: tracking.registered_model, else the
        experiment's name made one MLflow accepts (a Databricks-style "/Users/me/exp" has
        '/', which registered model names must not)."""
        if self.tracking.registered_model:
            return self.tracking.registered_model
        return _NOT_IN_MODEL_NAMES.sub("-", self.experiment).strip("-") or self.name

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())


# The search settings a search's MLflow parent run logs as params (tracking.Tracker.start_search).
SEARCH_SETTINGS = ("task", "metric", "mode", "max_epochs", "seed", "search.algorithm", "search.num_samples",
                   "scheduler.type", "workers_per_trial")
# What a search is, besides its space: `--resume` refuses a spec that changes any of these
# (resume.check_resume), as trials already run were trained, stopped and ranked by them. The rest
# (trials to run, concurrency, budget, resources but the workers per trial, tracking,
# checkpoints kept, failures, cost prices, confirm and audit) may change between runs of it.
RESUME_FIXED = ("task", "objectives", "limits", "max_epochs", "seed", "search.algorithm", "search.n_startup_trials",
                "scheduler.type", "scheduler.grace_period", "scheduler.reduction_factor",
                "resources.workers_per_trial", "fixed", "precision")


def resume_fixed(spec: Spec) -> dict[str, Any]:
    """RESUME_FIXED's values in `spec`, comparable across processes (saved with the search)."""
    values = {**spec.to_dict(), "objectives": ", ".join(f"{m} ({mode})" for m, mode in spec.objectives)}
    out = {}
    for key in RESUME_FIXED:
        value = values
        for part in key.split("."):
            value = value[part]
        out[key] = value
    return out


# Hyperparameter names refused in space and fixed. A search setting's: logging the best
# trial's params on the parent run at the end of a search would change that param, which
# MLflow refuses. A spec field's: `raysweep train --set seed=3` must mean the spec's seed. Not
# `data`: the tabular task's documented `fixed: {data: file.csv}` predates the data: section
# (`raysweep train --set fixed.data=...` overrides it; `--set data=...` means the section).
# In the Tune config of a run confirming a configuration (confirm.py), beside its
# hyperparameters: {"of": the trial it retrains, "seed": its training seed}. Not a hyperparameter.
CONFIRM_KEY = "_raysweep_confirm"
RESERVED_PARAM_NAMES = frozenset(SEARCH_SETTINGS) | (frozenset(Spec.model_fields) - {"data"}) | {CONFIRM_KEY}


# --------------------------------------------------------------------------- errors


def _fields_of(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the key at `loc` (for 'did you mean')."""
    model: Any = Spec
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        # An optional section (`data: DataSection | None`) is the section's model.
        models = [a for a in get_args(annotation) or (annotation,) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model


def _format_value(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_PARAM_CLASSES = {"uniform": Uniform, "loguniform": LogUniform, "int": IntParam, "choice": Choice}
_SCALAR_NAMES = ("bool", "int", "float", "str")


def _one_line(exc: ValidationError, raw: dict) -> str:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    # pydantic inserts the union tag (`space.lr.loguniform.low`): users never wrote it.
    if len(loc) > 2 and loc[0] == "space" and loc[2] in PARAM_TYPES:
        loc = loc[:2] + loc[3:]
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if len(loc) > 1 and isinstance(loc[-2], int) and loc[-1] in _SCALAR_NAMES:
        # A choice value matched none of the scalar types: one message, not four.
        wanted = "a finite number" if isinstance(value, float) else "a number, string or boolean"  # .inf, .nan
        return f"{'.'.join(str(p) for p in loc[:-1])}: must be {wanted}, got {_format_value(value)}"
    path = ".".join(str(p) for p in loc)
    if kind == "extra_forbidden":
        owner = _model_at(loc)
        if owner is None and len(loc) == 3 and loc[0] == "space":
            param_type = ((raw.get("space") or {}).get(loc[1]) or {}).get("type")
            owner = _PARAM_CLASSES.get(param_type)
        hint = ""
        if owner is not None:
            close = difflib.get_close_matches(str(loc[-1]), _fields_of(owner), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(_fields_of(owner))})"
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "union_tag_invalid":
        return f"{path}.type: unknown parameter type {_format_value(err['ctx']['tag'])} (use one of: {', '.join(PARAM_TYPES)})"
    if kind == "union_tag_not_found":
        return f"{path}.type: required key is missing (one of: {', '.join(PARAM_TYPES)})"
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        # A model-level check names its own key path ("fixed.x: ..."); a field check does not.
        if not path:
            return msg
        return f"{path}: {msg}"
    if kind == "literal_error":
        return f"{path}: {_format_value(value)} is not allowed; {msg[0].lower()}{msg[1:]}"
    if kind == "model_type":  # a section given as a scalar: pydantic names its class
        return f"{path or 'spec'}: must be a mapping of keys (key: value), got {_format_value(value)}"
    return f"{path or 'spec'}: {msg[0].lower()}{msg[1:]}, got {_format_value(value)}"


def validate(raw: Any, source: str = "spec") -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping of keys, got {type(raw).__name__}")
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_one_line(exc, raw)) from None


# --------------------------------------------------------------------------- overrides


def apply_override(raw: dict, assignment: str) -> dict:
    """Return a copy of `raw` with `key.path=value` applied; the value is read as YAML."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"--set {assignment!r}: expected key.path=value")
    out = copy.deepcopy(raw)
    node = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise SpecError(f"--set {key}: {where} is {_format_value(child)}, not a mapping")
        node = child
    node[parts[-1]] = parse_yaml(text, source=f"--set {key}", at=key) if text.strip() else None
    return out


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read a spec file, apply `--set` overrides and validate the result."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec ({exc.__class__.__name__})") from None
    raw = parse_yaml(text, source=str(path))
    if raw is None:
        raise SpecError(f"{path}: the spec is empty")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping of keys, got {type(raw).__name__}")
    for assignment in overrides:
        raw = apply_override(raw, assignment)
    return validate(raw, source=str(path))
