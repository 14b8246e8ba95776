"""`raysweep submit`: the `ray job submit` call it builds, and what it refuses before sending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raysweep
from raysweep import submit
from raysweep.cli import main
from raysweep.errors import SpecError
from tests.conftest import ROOT

SPEC = "search_spaces/digits_mlp.yaml"
HEAD = "http://head:8265"


def _plan(*job_args, env=None, **kwargs):
    options = {"address": HEAD, "working_dir": str(ROOT), "job": "search", "tracking_uri": None,
               "runtime_env": None, "submission_id": None, "wait": True, **kwargs}
    return submit.plan(str(ROOT / SPEC), list(job_args), environ=env or {}, **options)


def test_a_checkout_gets_the_readme_command(monkeypatch):
    sub = _plan("--samples", "8", "--storage", "s3://bucket/searches", submission_id="s1", wait=False,
                env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    cmd = sub.command()
    assert cmd[1:] == [
        "job", "submit", "--address", HEAD, "--working-dir", str(ROOT),
        "--runtime-env", str(ROOT / "cluster/runtime_env.yaml"), "--submission-id", "s1", "--no-wait", "--",
        "python", "jobs/search.py", SPEC, "--samples", "8", "--storage", "s3://bucket/searches",
        # The job runs with the cluster's environment: the submitter's MLflow server goes as a flag.
        "--tracking-uri", "http://mlflow:5000",
    ]
    assert sub.warnings == []


def test_outside_a_checkout_the_installed_package_is_shipped(tmp_path):
    (tmp_path / "spec.yaml").write_text((ROOT / SPEC).read_text())
    sub = submit.plan(str(tmp_path / "spec.yaml"), [], address=HEAD, working_dir=str(tmp_path),
                      job="train", tracking_uri="http://mlflow:5000", runtime_env=None, submission_id=None,
                      wait=True, environ={})
    cmd = sub.command()
    assert cmd[cmd.index("--") + 1:] == ["python", "-m", "raysweep.cli", "train", "spec.yaml",
                                         "--tracking-uri", "http://mlflow:5000"]
    runtime_env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    assert runtime_env["py_modules"] == [str(Path(raysweep.__file__).parent)]
    assert ".venv/" in runtime_env["excludes"]


def test_local_stores_on_a_cluster_are_warned_about():
    warnings = _plan().warnings
    assert any("--tracking-uri http://" in w for w in warnings)
    assert any("shared storage" in w for w in warnings)


@pytest.mark.parametrize("kwargs,env,message", [
    ({"address": None}, {}, "--address: the cluster's job API is needed"),
    ({"working_dir": "/nonexistent"}, {}, "--working-dir: no such directory: /nonexistent"),
    ({"working_dir": "ELSEWHERE"}, {}, "the spec must lie inside --working-dir ELSEWHERE"),
    ({"runtime_env": "nope.yaml"}, {}, "--runtime-env: no such file: nope.yaml"),
])
def test_bad_submissions_are_refused_here(kwargs, env, message, tmp_path):
    # ELSEWHERE: a directory that does not hold the repository (wherever the checkout lies).
    kwargs = {k: str(tmp_path) if v == "ELSEWHERE" else v for k, v in kwargs.items()}
    message = message.replace("ELSEWHERE", str(tmp_path))
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        _plan(env=env, **kwargs)


def test_ray_address_in_the_environment_is_the_default_address():
    assert _plan(address=None, env={"RAY_ADDRESS": "http://other:8265"}).address == "http://other:8265"


def test_token_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(submit, "TOKEN_FILE", tmp_path / "missing")
    with pytest.raises(SpecError, match="no Ray auth token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"):
        submit.client_env({})
    assert submit.client_env({"RAY_AUTH_TOKEN": "t"})["RAY_AUTH_MODE"] == "token"
    with pytest.raises(SpecError, match=f"RAY_AUTH_TOKEN_PATH: no token file at {tmp_path}/nope"):
        submit.client_env({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "nope")})
    (tmp_path / "token").write_text("t")
    assert submit.client_env({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")})["RAY_AUTH_MODE"] == "token"
    assert submit.client_env({"RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"


def test_dry_run_prints_the_command_and_checks_the_job_flags(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["submit", SPEC, "--address", HEAD, "--dry-run", "--set", "max_epochs=3", "--storage", "/nfs/x",
                 "--tracking-uri", "http://mlflow:5000"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("python jobs/search.py search_spaces/digits_mlp.yaml --set max_epochs=3 "
                                 "--storage /nfs/x --tracking-uri http://mlflow:5000")
    # The job's own flags and spec are checked here, before anything is sent: exit 2, one line.
    for argv, message in [
        (["--sampels", "3"], "unrecognized arguments: --sampels 3"),
        (["--set", "max_epochs=0"], "max_epochs: input should be greater than or equal to 1"),
        (["--train", "--set", "lr=fast"], "lr"),
    ]:
        try:
            code = main(["submit", SPEC, "--address", HEAD, "--dry-run", *argv])
        except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
