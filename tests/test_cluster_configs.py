"""The cluster/ files parse, point at what exists, and pin the versions pyproject.toml allows."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT

CLUSTER = ROOT / "cluster"


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


@pytest.mark.parametrize("name", ["runtime_env.yaml", "runtime_env.pip.yaml"])
def test_runtime_envs_ship_raysweep_and_leave_environments_out(name):
    env = yaml.safe_load((CLUSTER / name).read_text())
    assert env["py_modules"] == ["platform/raysweep"] and (ROOT / "platform/raysweep/__init__.py").exists()
    assert {".venv/", "venv/", "raysweep_results/", "mlflow.db"} <= set(env["excludes"])


def test_the_pip_variant_pins_every_dependency_within_pyproject_and_never_ray():
    packages = [Requirement(p) for p in yaml.safe_load((CLUSTER / "runtime_env.pip.yaml").read_text())["pip"]["packages"]]
    required = _requirements()
    assert "ray" not in {p.name for p in packages}  # the nodes' own Ray, never a second one
    assert {p.name.lower() for p in packages} == set(required) - {"ray"}
    for pkg in packages:
        (spec,) = pkg.specifier
        assert spec.operator == "==", pkg
        assert required[pkg.name.lower()].specifier.contains(spec.version), (pkg, required[pkg.name.lower()])


def test_the_launcher_config_pins_ray_as_pyproject_and_keeps_auth_and_dashboard_private():
    config = yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())
    assert re.match(r"rayproject/ray:2\.60\.\d+-py311-gpu$", config["docker"]["image"])
    pins = dict(re.findall(r'"?([a-z\[\],-]+)==([\d.]+)"?', " ".join(config["setup_commands"])))
    assert _requirements()["ray"].specifier.contains(pins["ray[default,train,tune]"])
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head


def test_the_kuberay_job_runs_a_search_with_token_auth():
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("python jobs/search.py search_spaces/")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"} and cluster["rayVersion"].startswith("2.60")
    spec_path = job["spec"]["entrypoint"].split()[2]
    assert (ROOT / spec_path).exists()


def test_the_kuberay_job_installs_what_the_search_imports_on_the_plain_ray_image():
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    images = {c["image"] for group in [job["spec"]["rayClusterSpec"]["headGroupSpec"],
                                       *job["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    assert all(image.startswith("rayproject/ray:2.60") for image in images)  # no torch, MLflow, Optuna in them
    packages = env["pip"]["packages"]
    assert any(p.startswith("raysweep @ ") and p.split(" @ ")[1] == env["working_dir"] for p in packages)
    pinned = {p.split("==")[0]: p for p in packages if "==" in p}
    assert {"torch", "mlflow", "optuna"} <= set(pinned)
    same = yaml.safe_load((CLUSTER / "runtime_env.pip.yaml").read_text())["pip"]["packages"]
    assert sorted(pinned.values()) == sorted(same)  # one set of pins for both ways of shipping the job
    assert not any(p.split("==")[0].startswith("ray") and not p.startswith("raysweep") for p in packages)
