"""One driver per search (claim.py): the holder file, a second driver refused, an earlier search of
the same name kept aside. On the real filesystem, with real processes; no Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raysweep.claim import HOLDER_FILE, Holder, _process_start, hold
from raysweep.errors import SpecError


def _holder_of(process: subprocess.Popen, host: str | None = None) -> dict:
    return {"host": host or socket.gethostname(), "pid": process.pid, "started": 0.0,
            "process_started": _process_start(process.pid)}


def test_a_driver_holds_its_search_while_it_runs_and_lets_go_however_it_ends(tmp_path):
    lines = []
    with hold(str(tmp_path), "s", resume=False, say=lines.append):
        held = json.loads((tmp_path / "s" / HOLDER_FILE).read_text())
        assert Holder(**held).running() is True and held["pid"] == os.getpid()
    assert not (tmp_path / "s").exists() and lines == []  # nothing ran before: nothing moved; nothing left
    with pytest.raises(KeyboardInterrupt):
        with hold(str(tmp_path), "s", resume=True):
            (tmp_path / "s" / "experiment_state-x.json").write_text("{}")  # what Tune saved
            raise KeyboardInterrupt  # a Ctrl-C: the file goes all the same
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["experiment_state-x.json"]


def test_a_second_driver_of_a_running_search_is_refused_and_a_dead_ones_file_is_taken_over(tmp_path):
    """The same command in a second terminal, or --resume while the search still runs: refused
    in one line naming the process. Once that process is gone (kill -9 leaves its file), a
    driver goes on."""
    (tmp_path / "s").mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "s" / HOLDER_FILE).write_text(json.dumps(_holder_of(other)))
        for resume in (False, True):
            with pytest.raises(SpecError, match=rf"search 's' under .* is running: pid {other.pid} on "):
                with hold(str(tmp_path), "s", resume=resume):
                    pass
        assert json.loads((tmp_path / "s" / HOLDER_FILE).read_text())["pid"] == other.pid  # left as it was
        other.kill()  # kill -9; not yet reaped by its parent (a zombie): gone all the same
        deadline = time.monotonic() + 10
        while Holder(**_holder_of(other)).running() and time.monotonic() < deadline:
            time.sleep(0.05)
        with hold(str(tmp_path), "s", resume=True):
            assert json.loads((tmp_path / "s" / HOLDER_FILE).read_text())["pid"] == os.getpid()
    finally:
        other.kill()
        other.wait()
    with hold(str(tmp_path), "s", resume=True):
        assert json.loads((tmp_path / "s" / HOLDER_FILE).read_text())["pid"] == os.getpid()
    # A pid the system gave to a new process since: not the driver that wrote the file.
    reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "s" / HOLDER_FILE).write_text(json.dumps({**_holder_of(reused), "process_started": 1.0}))
        with hold(str(tmp_path), "s", resume=True):
            pass
    finally:
        reused.kill()
        reused.wait()


def test_a_driver_on_another_machine_cannot_be_told_dead_so_the_message_says_how_to_go_on(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / HOLDER_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0.0,
                                                          "process_started": None}))
    with pytest.raises(SpecError, match=r"may be running \(on another machine.*delete .*raysweep-driver.json"):
        with hold(str(tmp_path), "s", resume=True):
            pass


def test_a_new_search_of_a_name_used_before_keeps_the_earlier_ones_files_aside(tmp_path):
    """Run twice (the README's command, say), then killed: --resume must find the second search,
    not the first's end marker ("already ran all its trials"). The first's rounds and its
    confirm and audit runs move into one folder; other searches' directories stay."""
    for name in ("s", "s+1", "s-confirm", "s+1-audit", "s-train", "sx", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "raysweep-concluded").write_text("")
    lines = []
    with hold(str(tmp_path), "s", resume=False, say=lines.append):
        assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [HOLDER_FILE]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("s~")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["s", "s+1", "s+1-audit", "s-confirm"]
    assert {"s-train", "sx", "other"} <= {p.name for p in tmp_path.iterdir()}
    assert len(lines) == 1 and f"its files are kept in {aside[0]}" in lines[0]
    # --resume continues the search there, and a name with only a dead driver's file is no search.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "experiment_state-x.json").write_text("{}")
    with hold(str(tmp_path), "s", resume=True, say=lines.append):
        pass
    assert (tmp_path / "s" / "experiment_state-x.json").exists() and len(lines) == 1


def test_an_earlier_search_with_mlflow_writes_waiting_or_on_object_storage_is_not_moved(tmp_path):
    from raysweep.tracking.spool import Spool

    spool = Spool(str(tmp_path), "s", "http://127.0.0.1:5999")
    spool.append("set_terminated", {"run_id": "r", "status": "FINISHED", "end_time": 0})
    with pytest.raises(SpecError, match=r"still holds MLflow writes .* `raysweep sync s --storage "):
        with hold(str(tmp_path), "s", resume=False, tracking_uri="http://127.0.0.1:5999"):
            pass
    assert Spool(str(tmp_path), "s").pending() == 1 and not [p for p in tmp_path.iterdir() if "~" in p.name]
    # A URI: a move would copy every object; the user chooses.
    with pytest.raises(SpecError, match=r"search 's' ran before under file://.*--resume.*--set name=.*delete"):
        with hold(f"file://{tmp_path}", "s", resume=False):
            pass
    assert Path(tmp_path, "s").is_dir()
