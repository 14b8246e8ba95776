"""The `raysweep` command: input errors are one line and exit 2; `search` runs end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tempfile
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep.cli import main
from raysweep.testing import free_port
from raysweep.testing.localcluster import _http_ok, _wait_for  # the cluster's own wait for a server
from raysweep.tracking.uri import JOB_EXECUTION, server_env
from tests.conftest import ROOT

SPEC = str(ROOT / "search_spaces" / "digits_mlp.yaml")


def _cli(*args, cwd=None, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "raysweep.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["validate", "nope.yaml"], "nope.yaml: no such spec file"),
        (["validate", SPEC, "--set", "space.lr.low=1"], "space.lr: low (1) must be below high (0.1)"),
        (["validate", SPEC, "--set", "search.samples=3"], "search.samples: unknown key (did you mean 'num_samples'?)"),
        (["validate", SPEC, "--set", "max_epochs"], "--set 'max_epochs': expected key.path=value"),
        (["validate", SPEC, "--set", "task=no_such_task"], "task: unknown task 'no_such_task'"),
        (["validate", SPEC, "--set", "task=no_such_module:train"], "task: cannot import 'no_such_module'"),
        (["validate", SPEC, "--set", "task=tests.user_tasks:nothing"], "task: 'tests.user_tasks' has no attribute 'nothing'"),
        (["search", SPEC, "--samples", "0"], "search.num_samples: input should be greater than or equal to 1"),
        (["search", SPEC, "--samples", "many"], "argument --samples: invalid value: 'many'"),
        (["search", SPEC, "--name", "bad name"], "name: 'bad name' must start with a letter or digit"),
        (["serach", SPEC], "invalid choice: 'serach'"),
        (["validate", SPEC, "--set", "scheduler.report=async", "--set", "resources.workers_per_trial=2"],
         "scheduler.report: 'async' applies to one-worker trials; with resources.workers_per_trial: 2"),
    ],
)
def test_input_errors_are_one_line_with_exit_code_2(argv, expected, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_error_exit_has_no_traceback_and_starts_no_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: digits_mlp\nmax_epochs: -1\nspace: {lr: {type: uniform, low: 0, high: 1}}\n")
    proc = _cli("search", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "raysweep: error: max_epochs: input should be greater than or equal to 1, got -1"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "raysweep_results").exists()


def test_validate_prints_the_resolved_spec(capsys):
    assert main(["validate", SPEC, "--set", "search.num_samples=5", "--set", "fixed.hidden=64"]) == 0
    out = capsys.readouterr().out
    assert "num_samples: 5" in out and "hidden: 64" in out and "grace_period: 1" in out


def test_a_shipped_table_spec_is_pointed_at_a_users_csv_with_set(tmp_path, capsys):
    """search_spaces/tabular_wine.yaml names a built-in dataset; a user's CSV replaces it from
    the command line: `fixed.dataset=null` drops the dataset (there is no other way to delete a
    key with --set), and without it the error says so."""
    rows = "".join(f"{i % 7},{i % 3 * 0.5},{'ab'[i % 2]}\n" for i in range(12))
    for split in ("train", "val"):
        (tmp_path / f"{split}.csv").write_text("x1,x2,kind\n" + rows)
    wine = str(ROOT / "search_spaces" / "tabular_wine.yaml")
    data = ["--set", "data.format=csv", "--set", "data.label=kind",
            "--set", f"data.train={tmp_path / 'train.csv'}", "--set", f"data.val={tmp_path / 'val.csv'}"]
    assert main(["validate", wine, *data]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "fixed.dataset: the spec's data: section already names the data; keep one (--set fixed.dataset=null drops this one)")
    assert main(["validate", wine, *data, "--set", "fixed.dataset=null"]) == 0
    out = capsys.readouterr().out
    assert "dataset: null" in out and "label: kind" in out


def test_search_command_end_to_end(ray_session, tmp_path):
    """`raysweep search` as a user runs it (joining the session's Ray through RAY_ADDRESS)."""
    proc = _cli(
        "search", SPEC, "--samples", "4", "--set", "max_epochs=3", "--set", "search.max_concurrent=2",
        "--name", "cli-e2e", "--storage", str(tmp_path / "results"), "--summary-json", "s.json",
        cwd=tmp_path, env={"RAY_ADDRESS": ray_session},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary) >= {
        "name", "experiment_id", "parent_run_id", "metric", "mode", "best", "trials", "epochs_run",
        "epochs_budget", "wall_s",
    }
    assert summary["name"] == "cli-e2e" and len(summary["trials"]) == 4 and summary["epochs_budget"] == 12
    assert set(summary["best"]) >= {"trial_id", "run_id", "config", "value"}
    assert set(summary["trials"][0]) >= {"trial_id", "run_id", "status", "epochs", "value", "config"}
    # The embedded default store: ./mlflow.db in the working directory.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(summary["parent_run_id"]).info.run_name == "cli-e2e"
    out = proc.stdout
    assert "trials 4/4 done" in out and "top " in out
    assert f"/#/experiments/{summary['experiment_id']}/runs" in out
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_a_search_that_starts_its_own_ray_stops_it_before_its_summary_and_loses_nothing(tmp_path):
    """`raysweep search` with no Ray to join starts one, and shuts it down once the trials are
    tested, while the model and the views are logged (runsetup.RunSetup.ray_done)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-own-", dir="/tmp"))  # the search's own Ray; short: its sockets
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "raysweep.cli", "search", SPEC, "--samples", "3", "--set", "max_epochs=2",
             "--name", "own-ray", "--storage", str(tmp_path / "results"), "--summary-json", "s.json"],
            capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**env, "RAY_TMPDIR": str(ray_tmp)},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (raylet_log,) = {p.resolve() for p in ray_tmp.glob("ray/session_*/logs/raylet.out")}  # and session_latest
        raylet_stopped_ms = raylet_log.stat().st_mtime * 1000
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    summary = json.loads((tmp_path / "s.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and "test_accuracy" in parent.data.metrics
    views = {a.path for a in client.list_artifacts(parent.info.run_id, "views")}
    assert views == {"views/search.html"}  # the PNGs are tracking.view_images' (tests/test_pareto.py)
    assert summary["model_uri"] and client.search_model_versions("name='own-ray'")
    # Ray's raylet wrote its last line (it stopping) before the parent run ended: the views
    # and the summary were logged after Ray's shutdown began, not before the command's exit.
    assert raylet_stopped_ms < parent.info.end_time


def test_failed_search_exits_non_zero(ray_session, tmp_path):
    proc = _cli(
        "search", SPEC, "--samples", "2", "--set", "max_epochs=2", "--set", "task=tests.user_tasks:missing_metric",
        "--name", "cli-fail", "--storage", str(tmp_path / "results"),
        cwd=ROOT, env={"RAY_ADDRESS": ray_session, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
    )
    assert proc.returncode == 1
    assert "raysweep: search failed: no trial reported a finite 'val_loss'; first error: KeyError" in proc.stderr


def test_heavy_imports_leave_what_they_built_out_of_collections_and_the_collector_on():
    # In a fresh process: freezing this test session's heap would outlive the test.
    code = (
        "import gc, json\n"
        "from raysweep.cli import heavy_imports\n"
        "before, during = gc.get_freeze_count(), []\n"
        "with heavy_imports():\n"
        "    during.append(gc.isenabled())\n"
        "    import xml.dom.minidom\n"
        "after = gc.get_freeze_count()\n"
        "try:\n"
        "    with heavy_imports():\n"
        "        import no_such_module_here\n"
        "except ImportError:\n"
        "    pass\n"
        "print(json.dumps([during[0], after > before, gc.isenabled()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    collecting_during, frozen_after, collecting_after_an_error = json.loads(out.stdout)
    assert not collecting_during and frozen_after and collecting_after_an_error


def test_server_env_turns_mlflows_job_runner_off_unless_the_user_set_it():
    assert server_env({"PATH": "/bin"}) == {"PATH": "/bin", JOB_EXECUTION: "false"}
    assert server_env({JOB_EXECUTION: "true"})[JOB_EXECUTION] == "true"  # a user's choice stands


@pytest.mark.integration
def _descendants(pid: int) -> dict[int, str]:
    """A process's descendants' command lines by pid (`ps`: no psutil in raysweep's dependencies)."""
    table = [line.split(None, 2) for line in subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True,
                                                             text=True).stdout.splitlines()]
    found, parents = {}, {pid}
    while True:
        more = [row for row in table if len(row) == 3 and int(row[1]) in parents and int(row[0]) not in parents]
        if not more:
            return found
        parents |= {int(row[0]) for row in more}
        found.update((int(row[0]), row[2]) for row in more)


@pytest.mark.integration  # `raysweep ui` starts a real MLflow server (`mlflow ui`, in its child)
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "sighup"])
def test_ui_serves_the_store_without_mlflows_job_runner_and_ctrl_c_stops_it(tmp_path, stop):
    """`raysweep ui` on a store with a run: the UI's API lists its experiment; MLflow's job
    runner for GenAI jobs (eight processes, design.md point 34) is not started; Ctrl-C
    (SIGINT to the terminal's process group) ends it with exit 0, and so do a SIGTERM to
    `raysweep ui` alone and a closed terminal's SIGHUP to its group, the server's processes
    with it (in a session of their own, they kept serving, the port taken)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("ui-shown"))
    port = free_port()
    log = tmp_path / "ui.log"  # a file, not a pipe: a pipe nobody reads can fill and stall the server
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "raysweep.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for("raysweep ui", lambda: _http_ok(f"{url}/health"), proc, log, timeout=120)
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=10", timeout=10) as r:
            assert "ui-shown" in {e["name"] for e in json.load(r)["experiments"]}
        server = _descendants(proc.pid)
        group = "\n".join(server.values())
        assert "uvicorn" in group and "mlflow.server.jobs" not in group, group
        if stop in ("ctrl-c", "sighup"):
            os.killpg(proc.pid, signal.SIGINT if stop == "ctrl-c" else signal.SIGHUP)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert f"at http://127.0.0.1:{port} (Ctrl-C stops it)" in log.read_text()
        assert not _http_ok(f"{url}/health")  # nothing left serving, and soon nothing left at all
        # (multiprocessing's resource tracker ends a moment after the workers it watched)
        deadline = time.monotonic() + 20
        while any(os.path.exists(f"/proc/{pid}") for pid in server):
            assert time.monotonic() < deadline, {pid: args for pid, args in server.items() if os.path.exists(f"/proc/{pid}")}
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_ui_hint_names_the_store_when_raysweep_ui_would_not_find_it(tmp_path, monkeypatch):
    """A search logged to a store other than ./mlflow.db (--tracking-uri, the spec's) said
    `start the UI with: raysweep ui`, which opened an empty ./mlflow.db."""
    from raysweep.cli import _ui_hint

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _ui_hint(f"sqlite:///{tmp_path / 'mlflow.db'}") == "  (start the UI with: raysweep ui)"
    other = f"sqlite:///{tmp_path / 'my runs' / 'ml flow.db'}"
    hint = _ui_hint(other)
    assert hint == f"  (start the UI with: raysweep ui --tracking-uri '{other}')"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)  # what `raysweep ui` reads too
    assert _ui_hint(other) == "  (start the UI with: raysweep ui)"
    assert _ui_hint("http://127.0.0.1:5000") == ""  # a server: its own UI


def test_the_resume_line_of_a_ray_job_resumes_it_as_a_job(monkeypatch):
    """`ray job stop` (SIGTERM) of a submitted search: its resume line said `raysweep search
    ... --resume`, which run in the user's shell would start a Ray of its own there."""
    from raysweep.cli import _continue_hint, build_parser
    from raysweep.jobenv import RAY_JOB_ENV

    args = build_parser().parse_args(["search", "search_spaces/digits_mlp.yaml", "--storage", "/shared/r",
                                      "--tracking-uri", "http://user:secret@mlflow:5000", "--samples", "300"])
    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    assert _continue_hint("search", args) == ("continue it with: raysweep search search_spaces/digits_mlp.yaml "
                                              "--resume --storage /shared/r --samples 300 with the same --tracking-uri")
    monkeypatch.setenv(RAY_JOB_ENV, "{}")
    assert _continue_hint("search", args) == ("continue it with: raysweep submit search_spaces/digits_mlp.yaml "
                                              "--resume --storage /shared/r --samples 300 with the same --address and "
                                              "--tracking-uri")


def test_a_ray_jobs_driver_follows_its_working_directory_when_ray_unpacks_it_again(tmp_path, monkeypatch):
    """Ray unpacks a job's working directory again (deleted, recreated at the same path) as it
    starts processes with another runtime env: the driver's os.getcwd() raised, and with it
    `raysweep submit --resume`, in Ray's listing of the search's storage (os.path.relpath)."""
    import shutil

    from raysweep import jobenv

    job_dir = tmp_path / "_ray_pkg_0123"
    job_dir.mkdir()
    monkeypatch.chdir(job_dir)
    monkeypatch.setattr(os, "getcwd", os.getcwd)  # put back after the test
    monkeypatch.setattr(jobenv, "_path", None)
    jobenv.keep_working_dir()  # not in a Ray job: nothing changes
    assert not getattr(os.getcwd, "keeps_working_dir", False)
    monkeypatch.setenv(jobenv.RAY_JOB_ENV, "{}")
    jobenv.keep_working_dir(wait_s=0.2)
    shutil.rmtree(job_dir)
    job_dir.mkdir()  # unpacked again
    assert os.path.relpath("runs/trial_1", start="runs") == "trial_1"
    assert os.path.abspath("spec.yaml") == str(job_dir / "spec.yaml") and os.getcwd() == str(job_dir)
    shutil.rmtree(job_dir)  # and gone for good: the error it always was, after a short wait
    with pytest.raises(FileNotFoundError):
        os.getcwd()
