"""Bad input is rejected before Ray starts: exit code 2, one stderr line naming the key or value.

A table of malformed specs and command lines, each run through `raysweep.cli.main` in a
scratch working directory, and one run of the real `python -m raysweep.cli` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from raysweep import jobenv
from raysweep import runsetup
from raysweep.cli import _load, build_parser, main

from raysweep.testing import free_port as _free_port
from tests.conftest import make_raw

# Placeholders in argv, files and env, filled in per test: the scratch directory, and the
# URL of a port nothing listens on.
TMP, CLOSED = "<tmp>", "<closed>"


def spec(**changes) -> str:
    """The conftest base spec with dotted-key changes, as YAML."""
    return yaml.safe_dump(make_raw(**changes), sort_keys=False)


def without(key: str) -> str:
    raw = make_raw()
    del raw[key]
    return yaml.safe_dump(raw, sort_keys=False)


def without_param(name: str) -> str:
    raw = make_raw()
    del raw["space"][name]
    return yaml.safe_dump(raw, sort_keys=False)


def unreadable(tmp: Path) -> None:
    (tmp / "s.yaml").chmod(0)


def with_fixed(*lines: str) -> str:
    """The base spec as YAML with these lines added to its `fixed:` (its last section), as written."""
    return spec() + "".join(f"  {line}\n" for line in lines)


def read_only_file(tmp: Path) -> None:
    (tmp / "ro.json").write_text("{}\n")
    (tmp / "ro.json").chmod(0o444)


def read_only_dir(tmp: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


# A "billion laughs": 9 lines whose aliases expand into 9**9 (387 million) strings.
ALIAS_BOMB = with_fixed("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]", *(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")))


def mlflow_store(tmp: Path) -> None:
    """An MLflow database with no searches in it, under store/ (not the cwd's mlflow.db)."""
    from mlflow import MlflowClient

    (tmp / "store").mkdir()
    MlflowClient(f"sqlite:///{tmp / 'store' / 'm.db'}").search_experiments()


def row(id, argv, expected, files=None, env=None, setup=None, marks=()):
    """argv runs in a scratch directory holding good.yaml (a valid spec) and `files`."""
    return pytest.param(argv, expected, files or {}, env or {}, setup, id=id, marks=marks)


ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
IMAGES = {f"img/{split}/{c}/{i}.png": PNG for split in ("train", "val") for c in ("cat", "dog") for i in range(2)}
CSV = {"t/train.csv": "a,b,label\n1,2,x\n3,4,y\n", "t/val.csv": "a,b,label\n1,2,x\n"}


def data_spec(task="image_folder", **data) -> str:
    """A spec whose task reads the data: section (image folders under img/ by default)."""
    section = {"train": "img/train", "val": "img/val", "format": "images", **data}
    if task == "tabular":
        section = {"train": "t/train.csv", "val": "t/val.csv", "format": "csv", **data}
    return spec(task=task, data=section)

ROWS = [
    # ---- the spec file itself
    row("missing file", ["validate", "nope.yaml"], "nope.yaml: no such spec file"),
    row("directory", ["validate", "specs"], "specs: cannot read spec (IsADirectoryError)", {"specs/a.yaml": spec()}),
    row("unreadable", ["search", "s.yaml"], "s.yaml: cannot read spec (PermissionError)", {"s.yaml": spec()},
        setup=unreadable, marks=pytest.mark.skipif(ROOT_USER, reason="root reads a chmod 000 file")),
    row("not UTF-8", ["validate", "s.yaml"], "s.yaml: cannot read spec (UnicodeDecodeError)",
        {"s.yaml": b"\xff\xfe\x00name: x\n"}),
    row("not YAML", ["search", "s.yaml"], "s.yaml: line 2 not valid YAML: found character '\\t'",
        {"s.yaml": "name: x\n\ttask: digits_mlp\n"}),
    row("empty file", ["train", "s.yaml"], "s.yaml: the spec is empty", {"s.yaml": ""}),
    row("YAML list", ["validate", "s.yaml"], "s.yaml: a spec is a YAML mapping of keys, got list",
        {"s.yaml": "- name: x\n- task: digits_mlp\n"}),
    # ---- keys
    row("unknown top-level key", ["validate", "s.yaml"], "epochs: unknown key (did you mean 'max_epochs'?)",
        {"s.yaml": spec(epochs=10)}),
    row("misspelt section key", ["search", "s.yaml"], "search.num_sampels: unknown key (did you mean 'num_samples'?)",
        {"s.yaml": spec(**{"search.num_sampels": 4})}),
    row("misspelt parameter key", ["train", "s.yaml"], "space.lr.hihg: unknown key (did you mean 'high'?)",
        {"s.yaml": spec(**{"space.lr.hihg": 0.5})}),
    row("missing task", ["search", "s.yaml"], "task: required key is missing", {"s.yaml": without("task")}),
    # ---- types
    row("string for max_epochs", ["search", "s.yaml"], "max_epochs: input should be a valid integer",
        {"s.yaml": spec(max_epochs="ten")}),
    row("boolean for max_epochs", ["validate", "s.yaml"], "max_epochs: must be a number, got true",
        {"s.yaml": spec(max_epochs=True)}),
    row("list for space", ["search", "s.yaml"], "space: input should be a valid dictionary, got ['lr', 'dropout']",
        {"s.yaml": spec(space=["lr", "dropout"])}),
    row("number for a parameter", ["validate", "s.yaml"], "space.lr: input should be a valid dictionary",
        {"s.yaml": spec(**{"space.lr": 0.01})}),
    row("negative seed", ["search", "s.yaml"], "seed: input should be greater than or equal to 0, got -1",
        {"s.yaml": spec(seed=-1)}),
    row("empty metric", ["train", "s.yaml"], "metric: must name a metric (or list two or more), got ''",
        {"s.yaml": spec(metric="")}),
    row("name with a newline", ["search", "s.yaml"], "name: 'run\\n' must start with a letter or digit",
        {"s.yaml": spec(name="run\n")}),
    # ---- the search space
    row("empty space", ["search", "s.yaml"], "space: must define at least one parameter to search",
        {"s.yaml": spec(space={})}),
    row("low above high", ["train", "s.yaml"], "space.dropout: low (0.5) must be below high (0.3)",
        {"s.yaml": spec(**{"space.dropout.low": 0.5})}),
    row("loguniform low 0", ["search", "s.yaml"], "space.lr: low (0) must be positive for a loguniform parameter",
        {"s.yaml": spec(**{"space.lr.low": 0})}),
    row("int step 0", ["validate", "s.yaml"], "space.units: step (0) must be at least 1",
        {"s.yaml": spec(**{"space.units": {"type": "int", "low": 8, "high": 64, "step": 0}})}),
    row("empty choice", ["search", "s.yaml"], "space.batch_size.values: values must list at least one option",
        {"s.yaml": spec(**{"space.batch_size.values": []})}),
    row("duplicate choice", ["train", "s.yaml"], "space.batch_size.values: values [64, 64] contain duplicates",
        {"s.yaml": spec(**{"space.batch_size.values": [64, 64]})}),
    row("unknown parameter type", ["search", "s.yaml"], "space.lr.type: unknown parameter type 'normal'",
        {"s.yaml": spec(**{"space.lr.type": "normal"})}),
    # ---- other sections
    row("non-positive max_epochs", ["search", "s.yaml"], "max_epochs: input should be greater than or equal to 1, got 0",
        {"s.yaml": spec(max_epochs=0)}),
    row("mode", ["search", "s.yaml"], "mode: 'minimise' is not allowed", {"s.yaml": spec(mode="minimise")}),
    row("scheduler type", ["train", "s.yaml"], "scheduler.type: 'hyperband' is not allowed",
        {"s.yaml": spec(**{"scheduler.type": "hyperband"})}),
    row("grace period above max_epochs", ["search", "s.yaml"],
        "scheduler.grace_period (9) must not exceed max_epochs (6)", {"s.yaml": spec(**{"scheduler.grace_period": 9})}),
    row("negative cpus_per_worker", ["search", "s.yaml"], "resources.cpus_per_worker: input should be greater than 0, got -1",
        {"s.yaml": spec(**{"resources.cpus_per_worker": -1})}),
    # ---- the task
    row("unknown task", ["search", "s.yaml"], "task: unknown task 'digits_mpl'", {"s.yaml": spec(task="digits_mpl")}),
    row("unknown task module", ["train", "good.yaml", "--set", "task=no_such_pkg.tasks:train"],
        "task: cannot import 'no_such_pkg.tasks'"),
    row("task raises on import", ["search", "good.yaml", "--set", "task=tests.broken_task:train"],
        "task: importing 'tests.broken_task' failed: RuntimeError: broken on purpose second line of the error"),
    row("task attribute missing", ["search", "s.yaml"], "task: 'tests.user_tasks' has no attribute 'nothing'",
        {"s.yaml": spec(task="tests.user_tasks:nothing")}),
    row("task with three arguments", ["train", "good.yaml", "--set", "task=tests.user_tasks:three_args"],
        "task: 'tests.user_tasks:three_args' takes 3 arguments"),
    row("task class needs arguments", ["search", "good.yaml", "--set", "task=tests.bad_tasks:NeedsArgs"],
        "task: 'tests.bad_tasks:NeedsArgs' could not be created with no arguments: TypeError"),
    row("task is a number", ["validate", "good.yaml", "--set", "task=tests.bad_tasks:NOT_A_TASK"],
        "task: 'tests.bad_tasks:NOT_A_TASK' is neither a function"),
    # what a built-in task reads from every config, checked before any trial runs
    row("task's key in neither space nor fixed", ["search", "s.yaml"],
        "batch_size: DigitsMLP needs it: put it in the spec's space or fixed", {"s.yaml": without_param("batch_size")}),
    row("unknown lr_schedule", ["train", "good.yaml", "--set", "fixed.lr_schedule=cosin"],
        "fixed.lr_schedule: 'cosin' is not a schedule (use one of constant, cosine)"),
    row("unknown lr_schedule choice", ["validate", "s.yaml"],
        "space.lr_schedule.values: 'step' is not a schedule (use one of constant, cosine)",
        {"s.yaml": spec(**{"space.lr_schedule": {"type": "choice", "values": ["cosine", "step"]}})}),
    row("lr_schedule as a range", ["search", "s.yaml"],
        "space.lr_schedule: must be a choice of constant, cosine, not a range",
        {"s.yaml": spec(**{"space.lr_schedule": {"type": "uniform", "low": 0, "high": 1}})}),
    # ---- the data: section (checked before Ray starts: files.py)
    row("data split missing", ["search", "s.yaml"], "data.train: img/nope does not exist",
        {"s.yaml": data_spec(train="img/nope"), **IMAGES}),
    row("data key misspelt", ["validate", "s.yaml"], "data.fromat: unknown key (did you mean 'format'?)",
        {"s.yaml": data_spec(fromat="images"), **IMAGES}),
    row("data format unknown", ["validate", "s.yaml"], "data.format: 'tfrecord' is not allowed",
        {"s.yaml": data_spec(format="tfrecord"), **IMAGES}),
    row("data image_size too small", ["search", "s.yaml"], "data.image_size: input should be greater than or equal to 4",
        {"s.yaml": data_spec(image_size=2), **IMAGES}),
    row("data features name the label", ["validate", "s.yaml"], "data.features: lists the label column 'label'",
        {"s.yaml": data_spec("tabular", features=["a", "label"]), **CSV}),
    row("images: a file, not a folder", ["train", "s.yaml"], "data.val: img/v.png is a file; format images reads a folder",
        {"s.yaml": data_spec(val="img/v.png"), **IMAGES, "img/v.png": PNG}),
    row("images: not in a class folder", ["search", "s.yaml"], "data.train: loose.png is not in a class folder",
        {"s.yaml": data_spec(), **IMAGES, "img/train/loose.png": PNG}),
    row("images: one class", ["search", "s.yaml"], "data.train: img/train has 1 class folder(s) with images",
        {"s.yaml": data_spec(), **{k: v for k, v in IMAGES.items() if "/dog/" not in k}}),
    row("images: class unknown to train", ["validate", "s.yaml"],
        "data.val: class folder 'owl' is not among data.train's (cat, dog)",
        {"s.yaml": data_spec(), **IMAGES, "img/val/owl/0.png": PNG}),
    row("images: no image files", ["search", "s.yaml"], "data.val: no .png/.jpg/.jpeg/.bmp/.gif/.tif/.tiff files in img/empty",
        {"s.yaml": data_spec(val="img/empty"), **IMAGES, "img/empty/cat/notes.txt": "x"}),
    row("images: undecodable", ["train", "s.yaml"], "data.train: cannot decode image",
        {"s.yaml": data_spec(), **IMAGES, "img/train/cat/0.png": b"not a png"}),
    row("csv: no label column", ["search", "s.yaml"], "data.label: no column 'y' in",
        {"s.yaml": data_spec("tabular", label="y"), **CSV}),
    row("csv: ';'-separated", ["validate", "s.yaml"],
        f"data.label: no column 'label' in {TMP}/t/train.csv (columns: a;label); the header is one column: the file "
        "looks ';'-separated, and CSV files are read comma-separated: convert it (pandas.read_csv(path, sep=';')",
        {"s.yaml": data_spec("tabular"), "t/train.csv": "a;label\n1;x\n2;y\n", "t/val.csv": "a;label\n1;x\n"}),
    row("csv: text feature", ["validate", "s.yaml"], "data.features: column 'name' is string, not numbers",
        {"s.yaml": data_spec("tabular"), "t/train.csv": "name,label\nab,x\ncd,y\n", "t/val.csv": "name,label\nab,x\n"}),
    row("csv: unknown feature", ["search", "s.yaml"], "data.features: no column 'zz' in",
        {"s.yaml": data_spec("tabular", features=["a", "zz"]), **CSV}),
    row("csv: header only", ["train", "s.yaml"], f"data.val: {TMP}/t/val.csv has a header but no rows", {"s.yaml": data_spec("tabular"), **CSV,
                                                                  "t/val.csv": "a,b,label\n"}),
    row("csv: val lacks a column", ["search", "s.yaml"], "data.val: no column 'b' in",
        {"s.yaml": data_spec("tabular"), **CSV, "t/val.csv": "a,label\n1,x\n"}),
    row("jsonl: not JSON", ["validate", "s.yaml"], f"data.train: {TMP}/t/train.jsonl line 1 is not JSON",
        {"s.yaml": data_spec("tabular", train="t/train.jsonl", val="t/train.jsonl", format="jsonl"),
         "t/train.jsonl": "{a: 1}\n"}),
    row("parquet: not Parquet", ["search", "s.yaml"], f"data.train: cannot read {TMP}/t/x.parquet as parquet: Parquet magic",
        {"s.yaml": data_spec("tabular", train="t/x.parquet", val="t/x.parquet", format="parquet"),
         "t/x.parquet": "not parquet"}),
    row("data with a task that has its own", ["search", "s.yaml"],
        "data.format: task 'digits_mlp' trains on its own data only, not images",
        {"s.yaml": spec(data={"train": "img/train", "val": "img/val", "format": "images"}), **IMAGES}),
    row("data format the task can't read", ["validate", "s.yaml"],
        "data.format: task 'tabular' trains on data: format parquet or csv or jsonl, not images",
        {"s.yaml": data_spec("tabular", train="img/train", val="img/val", format="images"), **IMAGES}),
    row("image task without data", ["search", "good.yaml", "--set", "task=image_folder"],
        "data: task 'image_folder' needs a data: section (format: images)"),
    row("data and fixed.dataset", ["train", "s.yaml"], "fixed.dataset: the spec's data: section already names the data",
        {"s.yaml": yaml.safe_dump({**yaml.safe_load(data_spec("tabular")), "fixed": {"dataset": "wine"}}), **CSV}),
    # ---- --set and the other flags
    row("--set unknown key", ["search", "good.yaml", "--set", "search.samples=3"],
        "search.samples: unknown key (did you mean 'num_samples'?)"),
    row("--set without =", ["search", "good.yaml", "--set", "max_epochs"], "--set 'max_epochs': expected key.path=value"),
    row("--set bad YAML", ["validate", "good.yaml", "--set", "space.batch_size.values=[16, 32"],
        "--set space.batch_size.values: line 1 not valid YAML"),
    row("--set below a scalar", ["search", "good.yaml", "--set", "name.x=1"], "name is 'test-search', not a mapping"),
    row("--set a section to a scalar", ["search", "good.yaml", "--set", "search.budget=5"],
        "search.budget: must be a mapping of keys (key: value), got 5"),
    row("empty budget", ["search", "good.yaml", "--set", "search.budget={}"],
        "search.budget: set at least one of epochs, device_hours, usd, wall_s"),
    row("negative budget", ["search", "good.yaml", "--set", "search.budget.usd=-5"],
        "search.budget.usd: input should be greater than 0, got -5"),
    row("--samples 0", ["search", "good.yaml", "--samples", "0"],
        "search.num_samples: input should be greater than or equal to 1, got 0"),
    row("--samples abc", ["search", "good.yaml", "--samples", "abc"], "argument --samples: invalid value: 'abc'"),
    row("--samples +N without --resume", ["search", "good.yaml", "--samples", "+4"],
        "--samples +4: adding trials to a search needs --resume"),
    row("--samples +0", ["search", "good.yaml", "--resume", "--samples", "+0"], "--samples +0: add at least one trial"),
    row("--resume of a search never run", ["search", "good.yaml", "--resume", "--storage", "results"],
        "--resume: no search 'test-search' under"),
    row("--name with a space", ["search", "good.yaml", "--name", "my run"], "name: 'my run' must start with a letter"),
    row("--name empty", ["search", "good.yaml", "--name", ""], "name: '' must start with a letter"),
    row("--name YAML would read as a mapping", ["search", "good.yaml", "--name", "run: 1"],
        "name: 'run: 1' must start with a letter"),
    row("--summary-json in a missing directory", ["search", "good.yaml", "--summary-json", "out/s.json"],
        f"--summary-json: cannot write {TMP}/out/s.json: directory {TMP}/out does not exist"),
    row("--storage is a file", ["train", "good.yaml", "--storage", "results.txt"],
        "--storage: results.txt is a file, not a directory", {"results.txt": "x"}),
    row("--storage under a file", ["search", "good.yaml", "--storage", "results.txt/runs"],
        f"--storage: cannot write {TMP}/results.txt/runs/test-search: not a directory", {"results.txt": "x"}),
    # pyarrow's own errors for a storage URI (a scheme it lacks; a bucket it cannot reach, which
    # pyarrow retries for seconds, said the same way): they were tracebacks
    row("--storage with a scheme pyarrow lacks", ["search", "good.yaml", "--storage", "s4://bucket/runs"],
        "--storage: cannot use s4://bucket/runs: Unrecognized filesystem type in URI: s4://bucket/runs"),
    row("train --storage with a scheme pyarrow lacks", ["train", "good.yaml", "--storage", "s4://bucket/runs"],
        "--storage: cannot use s4://bucket/runs: Unrecognized filesystem type in URI: s4://bucket/runs"),
    row("sync --storage with a scheme pyarrow lacks", ["sync", "digits", "--storage", "s4://bucket/runs"],
        "--storage: cannot use s4://bucket/runs: Unrecognized filesystem type in URI: s4://bucket/runs"),
    row("unknown subcommand", ["serach", "good.yaml"], "argument command: invalid choice: 'serach'"),
    row("train --workers 0", ["train", "good.yaml", "--workers", "0"],
        "resources.workers_per_trial: input should be greater than or equal to 1, got 0"),
    row("train --gpus-per-worker -1", ["train", "good.yaml", "--gpus-per-worker", "-1"],
        "resources.gpus_per_worker: input should be greater than or equal to 0, got -1"),
    row("train --set unknown hyperparameter", ["train", "good.yaml", "--set", "momentum=0.9"],
        "--set momentum: not a hyperparameter of this spec (known: lr, batch_size, dropout, hidden)"),
    row("train --set word for a number", ["train", "good.yaml", "--set", "lr=fast"],
        "--set lr: must be a number (space.lr is loguniform), got 'fast'"),
    row("--summary-json under /proc", ["search", "good.yaml", "--summary-json", "/proc/raysweep-summary.json"],
        "--summary-json: cannot write /proc/raysweep-summary.json: "),
    row("--summary-json below a file", ["train", "good.yaml", "--summary-json", "good.yaml/s.json"],
        f"--summary-json: cannot write {TMP}/good.yaml/s.json: {TMP}/good.yaml is a file, not a directory"),
    row("--summary-json a read-only file", ["search", "good.yaml", "--summary-json", "ro.json"],
        f"--summary-json: cannot write {TMP}/ro.json: permission denied", setup=read_only_file,
        marks=pytest.mark.skipif(ROOT_USER, reason="root writes a read-only file")),
    row("--summary-json in a read-only directory", ["train", "good.yaml", "--summary-json", "ro/s.json"],
        f"--summary-json: cannot write {TMP}/ro/s.json: permission denied", setup=read_only_dir,
        marks=pytest.mark.skipif(ROOT_USER, reason="root writes in a read-only directory")),
    row("--samples Arabic-Indic digit", ["search", "good.yaml", "--resume", "--samples", "+٣"],
        "argument --samples: invalid value: '+٣'"),
    row("--samples fullwidth digit", ["search", "good.yaml", "--samples", "３"], "argument --samples: invalid value: '３'"),
    row("--samples superscript digit", ["search", "good.yaml", "--resume", "--samples", "+²"],
        "argument --samples: invalid value: '+²'"),
    row("--samples ++N", ["search", "good.yaml", "--resume", "--samples", "++4"], "argument --samples: invalid value: '++4'"),
    row("train --set dropout out of range", ["train", "good.yaml", "--set", "dropout=1.5"],
        "--set dropout: 1.5 is not a finite number in [0, 1)"),
    row("train --set batch_size 0", ["train", "good.yaml", "--set", "batch_size=0"],
        "--set batch_size: 0 is not an integer >= 1"),
    # ---- hyperparameter names that are search settings (MLflow parent run params, train --set)
    row("space.seed", ["validate", "s.yaml"],
        "space.seed: 'seed' is the name of a search setting (the MLflow parent run's params, and "
        "`raysweep train --set seed=...`); rename the hyperparameter",
        {"s.yaml": spec(**{"space.seed": {"type": "int", "low": 0, "high": 9}})}),
    row("fixed.max_epochs", ["search", "s.yaml"], "fixed.max_epochs: 'max_epochs' is the name of a search setting",
        {"s.yaml": spec(**{"fixed.max_epochs": 3})}),
    row("fixed key a dotted parent-run param", ["train", "s.yaml"],
        "fixed.search.algorithm: 'search.algorithm' is the name of a search setting",
        {"s.yaml": spec(fixed={"hidden": 32, "search.algorithm": "tpe"})}),
    row("--set fixed.workers_per_trial", ["search", "good.yaml", "--set", "fixed.workers_per_trial=2"],
        "fixed.workers_per_trial: 'workers_per_trial' is the name of a search setting"),
    row("space named like a spec section", ["validate", "s.yaml"], "space.tracking: 'tracking' is the name of a search setting",
        {"s.yaml": spec(**{"space.tracking": {"type": "choice", "values": [1, 2]}})}),
    # ---- registered model names
    row("registered model with '/'", ["validate", "s.yaml"],
        "tracking.registered_model: 'team/digits' must not contain '/' or ':' (MLflow refuses them",
        {"s.yaml": spec(**{"tracking.registered_model": "team/digits"})}),
    row("registered model with ':'", ["search", "good.yaml", "--set", "tracking.registered_model=digits:v2"],
        "tracking.registered_model: 'digits:v2' must not contain '/' or ':'"),
    # ---- built-in tasks' hyperparameter values (tasks/base.py param_rules)
    row("space range beyond dropout's", ["search", "s.yaml"], "space.dropout: high (1.5) is not a finite number in [0, 1)",
        {"s.yaml": spec(**{"space.dropout.high": 1.5})}),
    row("space range below dropout's", ["validate", "good.yaml", "--set", "space.dropout.low=-0.1"],
        "space.dropout: low (-0.1) is not a finite number in [0, 1)"),
    row("batch_size 0 among choices", ["train", "s.yaml"], "space.batch_size.values: 0 is not an integer >= 1",
        {"s.yaml": spec(**{"space.batch_size.values": [0, 64]})}),
    row("batch_size as a float range", ["search", "s.yaml"],
        "space.batch_size: must be an int or choice parameter (an integer >= 1), not uniform",
        {"s.yaml": spec(**{"space.batch_size": {"type": "uniform", "low": 16, "high": 64}})}),
    row("lr range from 0", ["validate", "s.yaml"], "space.lr: low (0) is not a finite number > 0",
        {"s.yaml": spec(**{"space.lr": {"type": "uniform", "low": 0, "high": 0.1}})}),
    row("fixed hidden 0", ["train", "good.yaml", "--set", "fixed.hidden=0"], "fixed.hidden: 0 is not an integer >= 1"),
    row("fixed hidden as text", ["search", "good.yaml", "--set", "fixed.hidden='64'"],
        "fixed.hidden: '64' is not an integer >= 1"),
    row("fixed hidden fractional", ["validate", "good.yaml", "--set", "fixed.hidden=32.5"],
        "fixed.hidden: 32.5 is not an integer >= 1"),
    row("negative weight_decay", ["search", "good.yaml", "--set", "fixed.weight_decay=-0.01"],
        "fixed.weight_decay: -0.01 is not a finite number >= 0"),
    row("cnn channels 0", ["validate", "s.yaml"], "fixed.channels: 0 is not an integer >= 1",
        {"s.yaml": spec(task="digits_cnn", **{"fixed.channels": 0})}),
    row("tabular layers -1", ["search", "s.yaml"], "fixed.layers: -1 is not an integer >= 0",
        {"s.yaml": spec(task="tabular", fixed={"dataset": "wine", "layers": -1})}),
    row("tabular unknown dataset", ["train", "s.yaml"], "fixed.dataset: 'winee' is not one of wine, breast_cancer, iris",
        {"s.yaml": spec(task="tabular", fixed={"dataset": "winee"})}),
    row("image augment as text", ["search", "s.yaml"], "fixed.augment: 'false' is not one of false, true",
        {"s.yaml": yaml.safe_dump({**yaml.safe_load(data_spec()), "fixed": {"augment": "false"}}), **IMAGES}),
    row("image stages 6", ["validate", "s.yaml"], "fixed.stages: 6 is not an integer in [1, 5]",
        {"s.yaml": yaml.safe_dump({**yaml.safe_load(data_spec()), "fixed": {"stages": 6}}), **IMAGES}),
    # ---- non-finite numbers
    row("inf cpus_per_worker", ["search", "s.yaml"], "resources.cpus_per_worker: input should be a finite number, got inf",
        {"s.yaml": spec(**{"resources.cpus_per_worker": float("inf")})}),
    row("nan reduction_factor", ["validate", "s.yaml"], "scheduler.reduction_factor: input should be a finite number, got nan",
        {"s.yaml": spec(**{"scheduler.reduction_factor": float("nan")})}),
    row("--set inf cost", ["search", "good.yaml", "--set", "cost.gpu_hour_usd=.inf"],
        "cost.gpu_hour_usd: input should be a finite number, got inf"),
    row("country lower case", ["validate", "good.yaml", "--set", "cost.country=fra"],
        "cost.country: string should match pattern '^[A-Z]{3}$'"),
    row("unknown country", ["search", "good.yaml", "--set", "cost.country=XYZ"],
        "cost.country: 'XYZ' is not in codecarbon's energy-mix data (ISO 3166-1 alpha-3 codes such as USA, FRA, DEU)"),
    row("nan range end", ["train", "good.yaml", "--set", "space.dropout.high=.nan"],
        "space.dropout.high: input should be a finite number, got nan"),
    row("inf among choices", ["validate", "good.yaml", "--set", "space.batch_size.values=[64, .inf]"],
        "space.batch_size.values.1: must be a finite number, got inf"),
    row("fixed lr nan", ["search", "s.yaml"], "fixed.lr: nan is not a finite number > 0",
        {"s.yaml": spec(space={"batch_size": {"type": "choice", "values": [64]}}, fixed={"lr": float("nan")})}),
    # ---- YAML that yaml.safe_load would misread (spec.py's _Loader and _check_tree)
    row("!!binary in fixed", ["search", "s.yaml"],
        "fixed.blob: YAML tag !!binary is not allowed in a spec (plain numbers, text, booleans, lists and mappings only)",
        {"s.yaml": with_fixed("blob: !!binary aGVsbG8=")}),
    row("!!binary not UTF-8 in --set", ["validate", "good.yaml", "--set", "fixed.blob=!!binary /w=="],
        "fixed.blob: YAML tag !!binary is not allowed"),
    row("!!set", ["train", "s.yaml"], "fixed.names: YAML tag !!set is not allowed", {"s.yaml": with_fixed("names: !!set {a, b}")}),
    row("!!int of a word", ["validate", "s.yaml"], "fixed.x: 'abc' is not an integer", {"s.yaml": with_fixed("x: !!int abc")}),
    row("!!bool of a word", ["search", "s.yaml"], "fixed.x: 'maybe' is not a boolean", {"s.yaml": with_fixed("x: !!bool maybe")}),
    row("recursive alias", ["validate", "s.yaml"], "fixed.x.0: a YAML alias refers to a value that contains it",
        {"s.yaml": with_fixed("x: &x [*x]")}),
    row("nested deeper than a spec", ["search", "s.yaml"], "fixed.x.0: nested more than 32 levels deep",
        {"s.yaml": with_fixed("x: " + "[" * 40 + "]" * 40)}),
    row("nested deeper than the parser", ["validate", "s.yaml"], "s.yaml: nested more than 32 levels deep",
        {"s.yaml": with_fixed("x: " + "[" * 3000 + "]" * 3000)}),
    row("alias bomb", ["validate", "s.yaml"], "s.yaml: YAML aliases expand 86 values into 490,329,122; refusing it (an alias bomb?)",
        {"s.yaml": ALIAS_BOMB}),
    row("alias bomb in --set", ["search", "good.yaml", "--set", "fixed.x=[&a [1,1,1,1,1,1,1,1,1,1], "
        "&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]]"],
        "--set fixed.x: YAML aliases expand"),
    row("a second space: section", ["search", "s.yaml"], "space: given twice (s.yaml lines 15 and 31); keep one",
        {"s.yaml": spec() + "space: {lr: {type: uniform, low: 0.1, high: 1}}\n"}),
    row("a key repeated inside space.lr", ["validate", "s.yaml"], "space.lr.low: given twice (s.yaml lines 18 and 19); keep one",
        {"s.yaml": spec().replace("    low: 0.0001\n", "    low: 0.0001\n    low: 0.01\n")}),
    row("a key quoted and plain", ["train", "s.yaml"], "fixed.hidden: given twice (s.yaml lines 30 and 31)",
        {"s.yaml": with_fixed("'hidden': 64")}),
    row("a key repeated in --set", ["search", "good.yaml", "--set", "space.lr={type: loguniform, low: 0.001, high: 0.1, high: 0.2}"],
        "space.lr.high: given twice (--set space.lr lines 1 and 1); keep one"),
    row("leading zero", ["validate", "s.yaml"],
        "fixed.hidden: 010 has a leading zero, which makes it octal to YAML 1.1; write 10 (or 0o10 for octal, or quote it for text)",
        {"s.yaml": spec().replace("hidden: 32", "hidden: 010")}),
    row("leading zero in --set", ["search", "good.yaml", "--set", "max_epochs=08"], "max_epochs: 08 has a leading zero"),
    row("train --set leading zero", ["train", "good.yaml", "--set", "hidden=064"], "--set hidden: 064 has a leading zero"),
    row("underscore in a number", ["search", "good.yaml", "--set", "search.num_samples=1_000"],
        "search.num_samples: 1_000: write numbers without '_' (YAML 1.2 reads 1_000 as text, YAML 1.1 as a number)"),
    row("binary number", ["validate", "s.yaml"], "fixed.x: 0b101 is a binary number to YAML 1.1 but text to YAML 1.2",
        {"s.yaml": with_fixed("x: 0b101")}),
    row("sexagesimal is text (YAML 1.2), not 90", ["search", "good.yaml", "--set", "max_epochs=1:30"],
        "max_epochs: input should be a valid integer, unable to parse string as an integer, got '1:30'"),
    row("sexagesimal hidden", ["validate", "s.yaml"], "fixed.hidden: '1:30' is not an integer >= 1",
        {"s.yaml": spec().replace("hidden: 32", "hidden: 1:30")}),
    row("number too long", ["validate", "s.yaml"], "fixed.hidden: 999999999999... has 5,000 characters, too many for a number",
        {"s.yaml": spec().replace("hidden: 32", "hidden: " + "9" * 5000)}),
    # ---- the tracking store
    row("unreachable --tracking-uri (search)", ["search", "good.yaml", "--tracking-uri", CLOSED],
        f"--tracking-uri: cannot reach MLflow at {CLOSED}: connection refused"),
    row("unreachable tracking.uri (train)", ["train", "s.yaml"],
        f"tracking.uri: cannot reach MLflow at {CLOSED}: connection refused", {"s.yaml": spec(**{"tracking.uri": CLOSED})}),
    row("unreachable $MLFLOW_TRACKING_URI (search)", ["search", "good.yaml"],
        f"MLFLOW_TRACKING_URI: cannot reach MLflow at {CLOSED}: connection refused", env={"MLFLOW_TRACKING_URI": CLOSED}),
    row("unreachable --tracking-uri (report)", ["report", "digits", "--tracking-uri", CLOSED],
        f"--tracking-uri: cannot reach MLflow at {CLOSED}: connection refused"),
    row("sqlite in a missing directory", ["search", "good.yaml", "--tracking-uri", "sqlite:///no/such/dir/m.db"],
        f"--tracking-uri: cannot create {TMP}/no/such/dir/m.db: directory {TMP}/no/such/dir does not exist"),
    row("sqlite file not a database", ["train", "good.yaml", "--tracking-uri", "sqlite:///notes.txt"],
        f"--tracking-uri: {TMP}/notes.txt is not an SQLite database", {"notes.txt": "not a database\n"}),
    row("report with no database", ["report", "digits"], f"--tracking-uri: no MLflow database at {TMP}/mlflow.db"),
    row("report of an unknown search", ["report", "nope", "--tracking-uri", "sqlite:///store/m.db"],
        "report: no experiment named 'nope' in this tracking store", setup=mlflow_store),
    row("report --top 0", ["report", "digits", "--top", "0"], "argument --top: must be at least 1, got 0"),
    row("ui --port out of range", ["ui", "--port", "99999"], "argument --port: a port is 1 to 65535, got 99999"),
]


def _fill(value, tmp: Path, closed: str):
    if isinstance(value, bytes):
        return value
    return value.replace(TMP, str(tmp)).replace(CLOSED, closed)


def _ray_tripwire(*args, **kwargs):
    raise AssertionError("bad input reached Ray: it must fail before Ray starts")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty working directory with good.yaml, in which reaching Ray fails the test."""
    monkeypatch.chdir(tmp_path)
    # main() fixes its working directory at its first call in a process (jobenv.py) and puts
    # it on sys.path: each row starts from its own directory and leaves sys.path as it was.
    monkeypatch.setattr(jobenv, "_path", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Ray may already run in this pytest session (other test files share one), so
    # `ray.is_initialized()` alone cannot tell; both ways into Ray trip instead.
    monkeypatch.setattr(runsetup, "ensure_ray", _ray_tripwire)
    (tmp_path / "good.yaml").write_text(spec())
    return tmp_path


@pytest.mark.parametrize("argv,expected,files,env,setup", ROWS)
def test_bad_input_exits_2_with_one_line(argv, expected, files, env, setup, scratch, monkeypatch, capsys):
    closed = f"http://127.0.0.1:{_free_port()}"
    for name, content in files.items():
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = _fill(content, scratch, closed)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, scratch, closed))
    if setup is not None:
        setup(scratch)
    capsys.readouterr()  # a setup's own output (MLflow's migrations) is not the row's
    ray_was_up = ray.is_initialized()

    try:
        code = main([_fill(arg, scratch, closed) for arg in argv])
    except SystemExit as exit_:  # argparse's errors exit from inside parse_args
        code = exit_.code
    out, err = capsys.readouterr()

    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("raysweep: error: ") and "Traceback" not in err
    assert _fill(expected, scratch, closed) in err
    assert out == ""
    assert ray.is_initialized() == ray_was_up
    assert not (scratch / "raysweep_results").exists() and not (scratch / "mlflow.db").exists()


@pytest.mark.parametrize("name", ["2024", "yes", "1e3"])
def test_name_flag_is_text_not_yaml(name, scratch):
    """`--name` is the name as typed; read as YAML these would be a number and a boolean."""
    args = build_parser().parse_args(["search", "good.yaml", "--name", name])
    assert _load(args).name == name


def test_bad_input_in_a_real_process_prints_no_traceback(tmp_path):
    """The deepest check (the tracking server, after the spec and task) in `python -m raysweep.cli`."""
    (tmp_path / "s.yaml").write_text(spec())
    url = f"http://127.0.0.1:{_free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "raysweep.cli", "search", "s.yaml", "--tracking-uri", url],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"raysweep: error: --tracking-uri: cannot reach MLflow at {url}: connection refused\n"
    assert not (tmp_path / "raysweep_results").exists() and not (tmp_path / "mlflow.db").exists()
    assert proc.stdout == ""


def test_the_summary_json_check_leaves_no_file_and_changes_none(tmp_path):
    """`_check_output_file` tries the path (os.access answers yes to anything as root), but a
    new file it created is removed and an existing one keeps its content."""
    from raysweep.cli import _check_output_file

    _check_output_file("--summary-json", tmp_path / "new.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.json").write_text("previous summary\n")
    _check_output_file("--summary-json", tmp_path / "old.json")
    assert (tmp_path / "old.json").read_text() == "previous summary\n"



@pytest.mark.parametrize("web_server", ["not-mlflow"], indirect=True)
@pytest.mark.parametrize("command", [["search", "good.yaml"], ["train", "good.yaml"], ["report", "digits"]])
def test_a_web_server_that_is_not_mlflow_is_refused_before_ray(command, web_server, scratch, capsys):
    """It took a traceback (MLflow's 404 with the server's HTML page) after Ray had started."""
    assert main([*command, "--tracking-uri", web_server.url]) == 2
    out, err = capsys.readouterr()
    assert err == (f"raysweep: error: --tracking-uri: cannot use {web_server.url}: it answers, but not as an MLflow "
                   "tracking server (404 for /health and for MLflow's REST API); give the MLflow server's address "
                   "(its UI's, e.g. http://HOST:5000)\n")
    assert out == "" and not (scratch / "raysweep_results").exists()


@pytest.mark.parametrize("web_server", ["walled"], indirect=True)
def test_an_mlflow_refusing_its_first_request_is_one_line_saying_to_give_credentials(web_server, scratch, capsys):
    """A 401 took a traceback: for `report` here, for `search` and `train` once Ray had started
    (the Tracker's first request; tests/test_tracking.py)."""
    assert main(["report", "digits", "--tracking-uri", web_server.url]) == 2
    out, err = capsys.readouterr()
    assert err == (f"raysweep: error: MLflow at {web_server.url} refused raysweep's first request: API request to "
                   "endpoint /api/2.0/mlflow/experiments/get-by-name failed with error code 401 != 200; give its "
                   "credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)\n")
    assert out == ""


def test_ui_on_a_port_in_use_is_one_line_before_it_says_where_it_is(scratch, capsys):
    """MLflow's server logged 'Address already in use' and exited 0, after raysweep had printed
    the UI's link: a browser opened whatever else listened there."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), "--tracking-uri", "sqlite:///m.db"]) == 2
    out, err = capsys.readouterr()
    assert err == (f"raysweep: error: --port: cannot listen on 127.0.0.1:{port}: address already in use "
                   f"(another MLflow UI? pick a free one with --port {port + 1})\n")
    assert out == "" and not (scratch / "m.db").exists()
