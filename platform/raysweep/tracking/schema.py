"""A new SQLite MLflow store made from MLflow's schema as SQL, not by replaying its migrations.

MLflow builds a new store by running every Alembic migration since its first release: 2.3 s
of CPU here, paid by the first search in a directory (the README's first command pays it
while Ray starts, on the same two cores). What those migrations leave is the same for every
store of one MLflow version, so raysweep keeps it as SQL statements, in a JSON file per MLflow
version: its tables, indexes and the rows the migrations insert (the Alembic revision, the default
workspace), never an experiment. Running that SQL takes about 10 ms; MLflow then opens the
file as any store at its latest revision and adds its "Default" experiment itself, with the
artifact location of the process that opens it (docs/design.md, point 30).

The file for the MLflow version raysweep is developed against ships in `schemas/`; for any
other version the first new store is made by MLflow, the slow way, and its schema written to
the user's cache (`$XDG_CACHE_HOME/raysweep`, else `~/.cache/raysweep`) for the next ones.

No MLflow import unless MLflow must build the schema: `raysweep ui` calls this first.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

from .uri import sqlite_path

SHIPPED = Path(__file__).with_name("schemas")
# Rows a store gains once it is used, not from its migrations: MLflow's "Default" experiment
# names the artifact location of the process that made it.
_NOT_SCHEMA = ('INSERT INTO "experiments"', 'INSERT INTO "experiment_tags"')


def mlflow_version() -> str:
    return importlib.metadata.version("mlflow")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raysweep"


def schema_name(version: str) -> str:
    return f"mlflow-{version}.json"


def schema_sql(path: Path) -> list[str]:
    """The SQL statements that make an empty copy of the SQLite store at `path`: its tables,
    indexes and the rows its migrations inserted, no experiment."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [line for line in db.iterdump() if not line.startswith(_NOT_SCHEMA)]


def mlflow_schema() -> dict:
    """The installed MLflow's schema, from a store MLflow builds in a temporary file: its
    version and the SQL statements (`schema_sql`), as the JSON files in `schemas/` hold them."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="raysweep-schema-") as tmp:
        path = Path(tmp) / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()
        return {"mlflow": mlflow_version(), "statements": schema_sql(path)}


def _dumps(schema: dict) -> str:
    return json.dumps(schema, indent=1) + "\n"


def _installed_schema() -> str:
    """The installed MLflow version's schema as one SQL script: shipped, cached, or built now
    and cached."""
    name = schema_name(mlflow_version())
    for folder in (SHIPPED, cache_dir()):
        with contextlib.suppress(OSError, ValueError, KeyError):
            return "\n".join(json.loads((folder / name).read_text())["statements"])
    schema = mlflow_schema()
    with contextlib.suppress(OSError):  # an unwritable home: the next store builds it again
        cache_dir().mkdir(parents=True, exist_ok=True)
        _write_new(cache_dir() / name, lambda tmp: tmp.write_text(_dumps(schema)))
    return "\n".join(schema["statements"])


def _write_new(path: Path, write) -> bool:
    """`write(tmp)` a file beside `path`, then give it `path`'s name unless a file took that
    name meanwhile (another search making the same store): never half a file, never two
    writers' files mixed. True if this call's file became `path`."""
    # Made by `write` itself, so with the permissions MLflow's own file would have (umask).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.link(tmp, path)  # fails, and changes nothing, if `path` exists
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def create_store(path: str | os.PathLike) -> bool:
    """Make an empty MLflow store at the SQLite file `path` if there is none yet, from the
    installed MLflow's schema; True if this call made it. An existing file is left alone, and
    a store that cannot be made this way (a filesystem without hard links) is left for MLflow
    to make, as it would have."""
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return False
    try:
        sql = _installed_schema()
    except Exception:  # noqa: BLE001 - MLflow meets, and reports, the same problem making it
        return False

    def write(tmp: Path) -> None:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript(sql)

    try:
        return _write_new(path, write)
    except (OSError, sqlite3.Error):
        return False


def create_sqlite_store(uri: str) -> bool:
    """`create_store` for a tracking URI that names an SQLite file (`sqlite:///PATH`); other
    stores (a server, another database, SQLite with URI options) are MLflow's to make."""
    path = sqlite_path(uri)
    if path is None or "?" in uri:
        return False
    return create_store(path)


def main() -> int:
    """`python -m raysweep.tracking.schema`: write the installed MLflow's schema to `schemas/`
    (after raising raysweep's MLflow version; tests/test_schema.py says when it is stale)."""
    path = SHIPPED / schema_name(mlflow_version())
    path.write_text(_dumps(mlflow_schema()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
