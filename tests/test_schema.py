"""A new SQLite store made from MLflow's schema as SQL (raysweep.tracking.schema): the same store
MLflow's migrations make, opened and used by MLflow as its own."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from raysweep.tracking import schema
from raysweep.tracking.tracker import Tracker


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    """Schemas MLflow builds go to this test's cache, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "raysweep"


def _clauses(sql: str | None) -> tuple[str, ...]:
    # MLflow's own migrations do not write a table's constraints in the same order every time
    # (Alembic rebuilds SQLite tables from sets): two stores it makes differ in that order.
    return tuple(sorted(line.strip().rstrip(",").strip() for line in (sql or "").split("\n")))


def _contents(path: Path) -> tuple[set, set]:
    """A store's schema (every table, index and trigger, its SQL's clauses in any order) and its
    rows, the Default experiment aside (its artifact location is the opening process's)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        objects = {(*obj[:3], _clauses(obj[3])) for obj in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}
        tables = [name for kind, name, _, _ in objects if kind == "table"]
        rows = {(t, row) for t in tables if t not in ("experiments", "experiment_tags")
                for row in db.execute(f'SELECT * FROM "{t}"')}
    return objects, rows


def test_a_made_store_is_the_store_mlflows_migrations_make(tmp_path):
    # With a schema shipped for the installed MLflow, this is the test that it is not stale
    # (regenerate it with `python -m raysweep.tracking.schema`); else the cached one is checked.
    by_mlflow, made = tmp_path / "by_mlflow.db", tmp_path / "made.db"
    MlflowClient(f"sqlite:///{by_mlflow}").search_experiments()
    assert schema.create_store(made)
    assert _contents(made) == _contents(by_mlflow)
    objects, rows = _contents(made)
    assert len([o for o in objects if o[0] == "table"]) > 30 and ("alembic_version",) in {r[:1] for r in rows}


def test_mlflow_opens_and_uses_a_made_store_and_adds_its_default_experiment_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("_MLFLOW_SERVER_ARTIFACT_ROOT", raising=False)  # conftest's: MLflow's ./mlruns here
    path = tmp_path / "mlflow.db"
    assert schema.create_sqlite_store(f"sqlite:///{path}")
    client = MlflowClient(f"sqlite:///{path}")
    (default,) = client.search_experiments()
    assert (default.name, default.artifact_location) == ("Default", str(tmp_path / "mlruns" / "0"))
    run = client.create_run(client.create_experiment("made"))
    client.log_metric(run.info.run_id, "val_loss", 0.5, step=1)
    assert client.get_metric_history(run.info.run_id, "val_loss")[0].value == 0.5


def test_a_search_tracker_makes_its_new_store_from_the_schema(tmp_path, monkeypatch):
    def built_by_mlflow():
        raise AssertionError("MLflow's migrations ran")

    monkeypatch.setattr(schema, "mlflow_schema", built_by_mlflow)
    if not (schema.SHIPPED / schema.schema_name(schema.mlflow_version())).exists():
        pytest.skip(f"no schema shipped for MLflow {schema.mlflow_version()}: python -m raysweep.tracking.schema")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "made-store")
    assert tracker.client.get_experiment_by_name("made-store") is not None


def test_an_existing_file_is_never_replaced(tmp_path):
    store, empty = tmp_path / "mlflow.db", tmp_path / "empty.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("kept")
    empty.touch()
    before = store.read_bytes()
    assert not schema.create_store(store) and not schema.create_store(empty)
    assert store.read_bytes() == before and empty.stat().st_size == 0
    assert not schema.create_store(tmp_path / "no-such-dir" / "mlflow.db")
    assert not schema.create_sqlite_store("http://127.0.0.1:5000") and not schema.create_sqlite_store("sqlite://")


def test_searches_making_one_store_at_once_make_it_once(tmp_path):
    path, made = tmp_path / "mlflow.db", []
    start = threading.Barrier(6)

    def make():
        start.wait()
        made.append(schema.create_store(path))

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made.count(True) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["mlflow.db"]  # no temporary file left
    assert MlflowClient(f"sqlite:///{path}").search_experiments()[0].name == "Default"


def test_another_mlflow_versions_schema_is_built_once_and_cached(tmp_path, monkeypatch, _cache):
    monkeypatch.setattr(schema, "mlflow_version", lambda: "0.0.test")
    assert schema.create_store(tmp_path / "first.db")
    cached = json.loads((_cache / "mlflow-0.0.test.json").read_text())
    assert cached["statements"][0] == "BEGIN TRANSACTION;" and cached["mlflow"] == "0.0.test"

    def built_by_mlflow():
        raise AssertionError("built again")

    monkeypatch.setattr(schema, "mlflow_schema", built_by_mlflow)
    assert schema.create_store(tmp_path / "second.db")
    assert _contents(tmp_path / "second.db") == _contents(tmp_path / "first.db")


def test_an_unwritable_cache_still_makes_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "mlflow_version", lambda: "0.0.test")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert schema.create_store(tmp_path / "mlflow.db")
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()


def test_a_made_store_has_the_permissions_mlflows_file_would_have(tmp_path):
    old = os.umask(0o022)
    try:
        assert schema.create_store(tmp_path / "mlflow.db")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "mlflow.db").stat().st_mode) == 0o644


def test_the_regeneration_command_writes_the_installed_mlflows_schema(tmp_path, monkeypatch, capsys):
    # `python -m raysweep.tracking.schema`, run after raising raysweep's MLflow version.
    monkeypatch.setattr(schema, "SHIPPED", tmp_path)
    assert schema.main() == 0
    written = tmp_path / schema.schema_name(schema.mlflow_version())
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    made = json.loads(written.read_text())
    assert made["mlflow"] == schema.mlflow_version() and made["statements"][-1] == "COMMIT;"
    monkeypatch.setattr(schema, "mlflow_schema", lambda: pytest.fail("built again"))
    assert schema.create_store(tmp_path / "mlflow.db")  # from the file just written
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
