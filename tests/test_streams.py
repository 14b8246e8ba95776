"""A command's output outlives its reader (`| head`, a pager quit): the run goes on."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient

from raysweep.streams import Unread
from tests.conftest import ROOT, fresh_store, make_raw


def test_writes_after_the_reader_went_away_are_dropped_and_the_stream_goes_on():
    read, write = os.pipe()
    stream = Unread(os.fdopen(write, "w", buffering=1))
    stream.write("seen\n")
    assert os.read(read, 100) == b"seen\n"
    os.close(read)  # `head` has its line
    assert stream.write("lost\n") == 5  # no BrokenPipeError
    stream.write("lost too\n")
    stream.flush()
    assert os.readlink(f"/proc/self/fd/{stream.fileno()}") == os.devnull
    stream.close()


def test_other_errors_are_still_raised():
    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        Unread(Full()).write("x")


@pytest.mark.integration
def test_a_search_piped_into_head_finishes_and_registers_its_model(ray_session, tmp_path, mlflow_template):
    """`raysweep search ... | head -1`: the second progress line met a closed pipe, and the
    search ended with exit 1, its parent run KILLED, no summary, no model, nothing said."""
    db = tmp_path / "mlflow.db"
    fresh_store(db, mlflow_template)
    raw = make_raw(**{"name": "piped", "max_epochs": 3, "search.num_samples": 4})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    driver = subprocess.Popen(
        [sys.executable, "-m", "raysweep.cli", "search", str(tmp_path / "spec.yaml"), "--storage",
         str(tmp_path / "results"), "--tracking-uri", f"sqlite:///{db}", "--summary-json", str(tmp_path / "summary.json")],
        cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ray_session}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert driver.stdout.readline()  # head's one line
        driver.stdout.close()
        assert driver.wait(timeout=240) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs(["1"], max_results=100)
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FINISHED"}
    assert client.search_model_versions("name = 'piped'")
