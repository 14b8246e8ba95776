"""Secure defaults: what raysweep starts listens on loopback or asks for Ray's token, YAML and
checkpoints are data (never code), and no environment value reaches MLflow."""

from __future__ import annotations

import os
import pickle
import urllib.error
import urllib.request

import pytest
import torch
from mlflow import MlflowClient

from raysweep.cli import build_parser
from raysweep.context import CHECKPOINT_FILE, load_state
from raysweep.search import run_search
from raysweep.spec import SpecError, load_spec, validate
from tests.conftest import make_raw


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
    with pytest.raises(SpecError, match="not valid YAML"):
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
