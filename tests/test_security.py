"""Secure defaults: what raysweep starts listens on loopback or asks for Ray's token, YAML and
checkpoints are data (never code), no environment value reaches MLflow, and credentials in a
tracking or storage URI are shown, logged and stored nowhere."""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from raysweep import submit
from raysweep.cli import build_parser, main
from raysweep.statefile import CHECKPOINT_FILE, load_state
from raysweep.redact import redact, redact_text
from raysweep.search import run_search
from raysweep.errors import SpecError
from raysweep.spec import load_spec, validate
from raysweep.tracking.uri import check_tracking_uri, unreachable
from tests.conftest import ROOT, make_raw


def test_ray_job_api_is_on_loopback_and_refuses_requests_without_the_token(ray_session):
    import ray

    webui = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert webui.startswith("127.0.0.1:")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{webui}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)


def test_the_mlflow_ui_binds_loopback_unless_told_otherwise():
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/raysweep-pwned",))


def test_checkpoints_load_as_data_never_as_code(tmp_path):
    # torch.save pickles whatever it is given; a checkpoint holding an object that runs code
    # when unpickled must be refused, not executed.
    with open(tmp_path / CHECKPOINT_FILE, "wb") as f:
        pickle.dump({"model": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_state(str(tmp_path))
    assert not os.path.exists("/tmp/raysweep-pwned")
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / CHECKPOINT_FILE)
    assert load_state(str(tmp_path))["epoch"] == 3  # plain tensors and numbers load


def test_yaml_tags_that_construct_objects_are_rejected(tmp_path):
    spec = tmp_path / "evil.yaml"
    spec.write_text("name: !!python/object/apply:os.system ['touch /tmp/raysweep-pwned']\ntask: digits_mlp\n")
    # The wording is spec.py's (refused as a tag not allowed in a spec, or as invalid YAML).
    with pytest.raises(SpecError, match="not allowed in a spec|not valid YAML"):
        load_spec(spec)
    assert not os.path.exists("/tmp/raysweep-pwned")


def test_no_environment_value_reaches_mlflow(ray_session, tmp_path, tracking_uri, monkeypatch):
    secret = "rs-secret-9f8e7d6c5b4a"
    for key in ("RAYSWEEP_TEST_API_KEY", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(key, secret)
    spec = validate(make_raw(**{"name": "no-secrets", "max_epochs": 2, "search.num_samples": 2}))
    result = run_search(spec, storage=str(tmp_path / "results"), tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([result.experiment_id], max_results=100)
    assert len(runs) == 3  # the search and its two trials
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert secret not in key and secret not in value, (run.info.run_name, key)
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts" / run.info.run_id))
        for root, _, files in os.walk(local):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    assert secret.encode() not in f.read(), os.path.join(root, name)


# -- credentials in tracking and storage URIs (issue 16, item 9)

SECRET = "s3cr3t-planted"
STORAGE = f"s3://bucket/data?access_key=AK&secret_key={SECRET}"
SPEC = str(ROOT / "search_spaces" / "digits_mlp.yaml")


def _cli(*args, cwd, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "raysweep.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})},
    )


def _with_secret(url: str) -> str:
    """`http://127.0.0.1:PORT` -> `http://user:SECRET@127.0.0.1:PORT` (MLflow's server ignores
    basic auth it does not check, so the URI works against the test server)."""
    return url.replace("://", f"://user:{SECRET}@", 1)


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def search_with_a_secret(ray_session, mlflow_server, tmp_path_factory):
    """One small real search through the CLI, its tracking URI carrying a password: in the
    spec (so `spec.yaml` and everything holding the spec sees it) and as the flag."""
    work = tmp_path_factory.mktemp("secret-search")
    uri = _with_secret(mlflow_server)
    proc = _cli(
        "search", SPEC, "--samples", "2", "--set", "max_epochs=2", "--set", "search.max_concurrent=2",
        "--set", f"tracking.uri={uri}", "--tracking-uri", uri, "--name", "secret-search",
        "--storage", str(work / "results"), "--summary-json", str(work / "summary.json"),
        cwd=work, env={"RAY_ADDRESS": ray_session},
    )
    return work, proc, mlflow_server


def test_a_search_leaks_no_credential_of_its_tracking_uri(search_with_a_secret):
    work, proc, server = search_with_a_secret
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    summary = json.loads((work / "summary.json").read_text())
    assert summary["tracking_uri"] == f"{server.replace('://', '://user:***@')}"
    assert f"MLflow runs: {server}/#/experiments/{summary['experiment_id']}/runs" in proc.stdout
    assert _files_holding(work, SECRET) == []  # the summary, the storage (Tune's state, checkpoints)
    # Files that held or could hold the URI are the owner's alone.
    assert stat.S_IMODE((work / "summary.json").stat().st_mode) == 0o600

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("secret-search")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == 3  # the search and its two trials
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert SECRET not in key and SECRET not in value, (run.info.run_name, key)
        local = Path(client.download_artifacts(run.info.run_id, "", str(work / "artifacts" / run.info.run_id)))
        assert _files_holding(local, SECRET) == []
    parent = next(r for r in runs if r.data.tags.get("raysweep.kind") == "search")
    spec_yaml = (work / "artifacts" / parent.info.run_id / "spec.yaml").read_text()
    assert f"uri: {server.replace('://', '://user:***@')}" in spec_yaml
    for model in client.search_logged_models([experiment.experiment_id]):
        assert SECRET not in json.dumps({**model.params, **model.tags})


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redaction_of_uris_and_text():
    assert redact(f"https://user:{SECRET}@mlflow.example.com/x") == "https://user:***@mlflow.example.com/x"
    assert redact(f"https://{SECRET}@mlflow.example.com") == "https://***@mlflow.example.com"
    assert redact(f"s3://b/p?endpoint_override=h:9000&access_key=AK&secret_key={SECRET}&scheme=http") == (
        "s3://b/p?endpoint_override=h:9000&access_key=***&secret_key=***&scheme=http")
    for plain in ("sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000", "s3://b/p?region=eu-west-1", "/nfs/results"):
        assert redact(plain) == plain
    text = f"cannot open postgresql://me:{SECRET}@db/mlflow (password {SECRET} refused)"
    assert redact_text(text, f"postgresql://me:{SECRET}@db/mlflow") == (
        "cannot open postgresql://me:***@db/mlflow (password *** refused)")


def test_an_unreachable_server_is_reported_without_its_password(capsys):
    uri = f"http://user:{SECRET}@127.0.0.1:{_closed_port()}"
    with pytest.raises(SpecError) as refused:
        check_tracking_uri(uri)
    assert str(refused.value) == f"--tracking-uri: cannot reach MLflow at {redact(uri)}: connection refused"
    # The same through the command: one line, exit 2, before Ray starts.
    assert main(["search", SPEC, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "cannot reach MLflow at http://user:***@127.0.0.1:" in err


def test_a_uri_with_credentials_and_no_port_is_parsed_right(mlflow_server):
    from raysweep.tracking.uri import _health_request

    # The host is the host, not `user:password@host`; the password is no port; the
    # credentials go as basic auth.
    request = _health_request(f"https://user:{SECRET}@mlflow.example.com/prefix/")
    assert request.full_url == "https://mlflow.example.com/prefix/health"
    assert request.host == "mlflow.example.com"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    problem = unreachable(f"http://user:{SECRET}@127.0.0.1", tries=1)  # port 80: refused, not a crash
    assert problem is None or (SECRET not in problem and "127.0.0.1" in problem)
    # With a port, a server that answers is reachable (before: `user:password@127.0.0.1` was
    # taken for the host name, and the server reported unreachable).
    assert check_tracking_uri(_with_secret(mlflow_server)) == _with_secret(mlflow_server)


def test_submit_keeps_credentials_off_the_jobs_command_line(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = f"s3://bucket/searches?endpoint_override=minio:9000&access_key=AK&secret_key={SECRET}"
    argv = ["submit", "search_spaces/digits_mlp.yaml", "--address", "http://head:8265",
            "--tracking-uri", f"http://user:{SECRET}@mlflow:5000", "--storage", storage]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert out.rstrip().endswith("--storage 's3://bucket/searches?endpoint_override=minio:9000' "
                                 "--tracking-uri http://mlflow:5000")
    assert '"MLFLOW_TRACKING_PASSWORD": "***"' in out and '"AWS_SECRET_ACCESS_KEY": "***"' in out

    # A real submission: the credentials reach the job's runtime env through a 0600 file.
    seen = {}

    def call(cmd, env):
        path = cmd[cmd.index("--runtime-env") + 1]
        seen.update(cmd=cmd, mode=stat.S_IMODE(os.stat(path).st_mode), runtime_env=yaml.safe_load(open(path)))
        return 0

    monkeypatch.setattr(submit, "check_cluster", lambda address, env: None)
    monkeypatch.setattr(submit.subprocess, "call", call)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err and SECRET not in " ".join(seen["cmd"])
    assert seen["mode"] == 0o600
    assert seen["runtime_env"]["env_vars"] == {
        "RAY_AIR_NEW_OUTPUT": "0", "MLFLOW_TRACKING_USERNAME": "user", "MLFLOW_TRACKING_PASSWORD": SECRET,
        "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    assert seen["runtime_env"]["py_modules"] == ["platform/raysweep"]  # the checkout's runtime env, kept

    # What cannot be passed that way is refused here, without showing the secret.
    for extra in (["--set", f"tracking.uri=http://user:{SECRET}@mlflow:5000"],
                  ["--tracking-uri", f"postgresql://user:{SECRET}@db/mlflow"]):
        assert main([*argv[:4], *extra, "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert SECRET not in err and "credentials" in err


def test_an_outage_spool_holds_no_credential_and_sync_asks_for_it(mlflow_server, tmp_path, caplog, capsys, monkeypatch):
    """Writes to an unreachable server with a password in its URI: spooled without it, in
    owner-only files, warned about without it; `raysweep sync` needs it again."""
    import logging

    from raysweep.book import TrialRecord
    from raysweep.tracking.spool import Spool
    from raysweep.tasks import resolve_task
    from raysweep.tracking import Tracker

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    caplog.set_level(logging.WARNING, logger="raysweep.spool")
    down = f"http://user:{SECRET}@127.0.0.1:{_closed_port()}"
    name = "secret-spool"
    spec = validate(make_raw(**{"name": name, "tracking.uri": down}))
    # The experiment exists on the server the spool is later sent to; the tracker's writes
    # go to a URI where nothing answers (an outage from its first write).
    tracker = Tracker.__new__(Tracker)
    tracker.uri, tracker.spool = down, Spool(str(tmp_path), name, down)
    tracker.experiment_id = MlflowClient(mlflow_server).create_experiment(name)
    tracker.client = tracker._client()
    parent = tracker.start_search(spec)  # spec.yaml holds tracking.uri
    trial = tracker.start_trial(parent, TrialRecord("t1", 1, {"lr": 0.01}), {"lr": 0.01, "data": STORAGE})
    tracker.log_metrics(trial, {"val_loss": 0.5}, step=1)
    tracker.end_run(trial, "FAILED", {"raysweep.error": f"cannot reach {down}"})
    task = resolve_task("digits_mlp")
    state = {"model": task.build_model({"hidden": 8}).state_dict()}
    assert tracker.log_model(parent, "digits_mlp", {"hidden": 8}, state, 0) is None  # spooled
    tracker.end_run(parent, "FINISHED")
    tracker.finish()  # still down: the warning names `raysweep sync`
    messages = [r.getMessage() for r in caplog.records]
    assert messages and not [m for m in messages if SECRET in m]
    assert any("raysweep sync secret-spool" in m and "--tracking-uri 'http://user:***@127.0.0.1:" in m for m in messages)
    assert _files_holding(tmp_path, SECRET) == []
    spool_files = [p for p in (tmp_path / name).rglob("*") if p.is_file() and "mlflow-spool.files" not in str(p)]
    assert spool_files and {p.name: stat.S_IMODE(p.stat().st_mode) for p in spool_files} == {
        p.name: 0o600 for p in spool_files}

    # The spool names the server without its password: sync asks for it, without showing it...
    assert main(["sync", name, "--storage", str(tmp_path)]) == 2
    assert "give --tracking-uri with them" in capsys.readouterr().err
    # ... and sends everything once given it.
    assert main(["sync", name, "--storage", str(tmp_path), "--tracking-uri", _with_secret(mlflow_server)]) == 0
    out = capsys.readouterr().out
    assert "models: 1" in out and SECRET not in out and "user:***@" in out
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert SECRET not in json.dumps({**run.data.params, **run.data.tags}), run.info.run_name
        local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts" / run.info.run_id)))
        assert _files_holding(local, SECRET) == []
