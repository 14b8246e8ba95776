"""MLflow outages: what the driver cannot send waits on disk, in order, until the server answers.

Every write `Tracker` makes goes through `SpoolingClient`, the one choke point. While MLflow
answers, an operation is sent as it comes. When it fails to answer (connection refused, a
timeout, 5xx after a few fast retries), that operation and every later one are spooled to
`<storage>/<search name>/mlflow-spool/` instead, a numbered file each: order matters (a run is
created before its metrics, ended after them), so once spooling starts nothing bypasses the
spool until it has been replayed. Training waits for MLflow only during the first failed call (seconds, see
`FAIL_FAST_ENV`), a 2 s health probe per `RETRY_INTERVAL_S` and the replay itself.

Replay happens when the server answers again: checked before an operation at most every
`RETRY_INTERVAL_S`, at the end of the search, or by `raysweep sync NAME`. It is idempotent,
so a replay cut short (Ctrl-C, a second outage) is simply run again:

- a run created while offline gets a placeholder id (`pending-<key>`) that later operations
  use; every run carries the tag `raysweep.run_key=<key>`, so replay finds a run that already
  exists (created by an interrupted replay, or by a request whose answer was lost) instead of
  creating it twice, and maps the placeholder to its real id (kept in the state file);
- metric points keep their original timestamps and steps: MLflow's SQL store drops a point
  identical to one it holds, so a point sent twice is stored once;
- params are re-sent with the same values, tags and run ends overwrite with the same values,
  artifacts are re-uploaded over themselves; a model is logged only if its run has no
  `raysweep.model_uri` tag yet;
- how many operations were applied, and the id map, are saved in
  `mlflow-spool.state.json` as replay goes; what it sent, and the files of that, are deleted
  once all is sent (the id map stays: a search restored by Tune may still hold placeholders).

Files an operation needs (artifact directories, the model's state dict) are copied into
`mlflow-spool.files/`. The storage may be a local directory or a pyarrow URI (`s3://...`).
An operation's file is written once, whole (a rename locally, one PUT on an object store, which
cannot append), and deleted only by a replay that read it: `raysweep sync`, run while the
search still spools, never deletes what the search wrote after sync listed the spool.

No credential is written to the spool: its header and a spooled model's args hold the tracking
URI redacted (`https://user:***@host`), and replay uses its own client's URI; `raysweep sync`
then needs the credentials again (--tracking-uri, or MLflow's MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD). Local spool files are created 0600 (what is spooled is run data,
owner-only like the summary).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import shlex
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from ..failures import no_space
from ..jobenv import scoped_env
from ..redact import for_pickle, from_pickle, redact, redact_text, write_private
from ..statefile import load_state, save_state
from ..storage import filesystem, join
from ..signals import uninterrupted
from .names import MODEL_URI_TAG, RUN_KEY_TAG
from .uri import sqlite_path, unreachable

# What logs a spooled model: `(tracking_uri, run_id, task, params, state, seed, **registry)`
# -> the model's URI (tracking/models.log_task_model). Handed in by the tracker, so this layer
# imports no task or model code.
ModelLogger = Callable[..., str]

SPOOL_DIR = "mlflow-spool"  # a file per operation, numbered in order (Spool.segments)
STATE_FILE = "mlflow-spool.state.json"
FILES_DIR = "mlflow-spool.files"
PENDING = "pending-"
RETRY_INTERVAL_S = 30.0
_SAVE_EVERY = 25  # replayed operations between state saves (each re-applies harmlessly)

# MLflow's client retries a failed request 7 times with exponential backoff (minutes) and
# waits 120 s for an answer: the driver, and with it every trial's results, would stall that
# long per call. raysweep's client gives up after ~2 s (refused) or 2 x 10 s (no answer) and
# spools. MLflow reads these at each request, so they are set only around raysweep's own calls;
# values the user exported win.
FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

log = logging.getLogger("raysweep.spool")


def fail_fast() -> contextlib.AbstractContextManager[None]:
    """MLflow's HTTP retries cut to seconds for the calls inside (environment is process-wide:
    another thread of this process calling MLflow meanwhile gets the same settings)."""
    return scoped_env(FAIL_FAST_ENV, override=False)


def is_outage(exc: BaseException | None) -> bool:
    """Whether MLflow did not answer (down, unreachable, overloaded) rather than refuse a request;
    or could not store it for want of space (a SQLite store's disk full: a server whose disk
    is full answers 5xx), which freeing space ends as a server's restart does."""
    import requests

    if no_space(exc) is not None:
        return True

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, requests.exceptions.SSLError):
            return False  # a certificate problem stays until someone fixes it: an error, not an outage
        if isinstance(exc, requests.HTTPError):
            return exc.response is not None and exc.response.status_code >= 500
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                            requests.exceptions.ChunkedEncodingError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _root_cause(exc: BaseException, uri: str | None = None) -> str:
    """The innermost reason ('[Errno 111] Connection refused'), not MLflow's paragraph around
    it; any URL in it, and the secrets of `uri`, redacted."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    return redact_text(str(exc).splitlines()[0][:200], uri) if str(exc) else type(exc).__name__


def substitute(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every placeholder run id that replay has mapped replaced by the real one."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {k: substitute(v, ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(substitute(v, ids) for v in value)
    return value


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Files:
    """A directory of the search's storage, local or a pyarrow URI, as the spool uses it."""

    def __init__(self, location: str):
        self.location = location
        self.local = "://" not in location
        self._fs = None

    def __getstate__(self):  # Tune pickles the tracker; a pyarrow filesystem is rebuilt on use
        return {**self.__dict__, "_fs": None}

    def _path(self, name: str) -> tuple[Any, str]:
        if self._fs is None:
            self._fs, self._root = filesystem(self.location)
        return self._fs, f"{self._root.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        import pyarrow.fs

        fs, path = self._path(name)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def list(self, name: str) -> list[str]:
        """The names in a directory (none if it does not exist)."""
        import pyarrow.fs

        fs, path = self._path(name)
        return [f.base_name for f in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))]

    def read(self, name: str) -> str | None:
        if not self.exists(name):
            return None
        fs, path = self._path(name)
        try:
            with fs.open_input_stream(path) as f:
                return f.read().decode()
        except FileNotFoundError:  # deleted since: sent by a replay running beside this process
            return None

    def write(self, name: str, text: str) -> None:
        """Replace the file whole: a rename locally, one PUT on an object store (both atomic)."""
        fs, path = self._path(name)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.local:  # owner-only from creation (write_private), then renamed over the old one
            write_private(f"{path}.tmp", text)
            fs.move(f"{path}.tmp", path)
            return
        with fs.open_output_stream(path) as f:
            f.write(text.encode())

    def delete(self, name: str) -> None:
        import pyarrow.fs

        fs, path = self._path(name)
        kind = fs.get_file_info(path).type
        if kind == pyarrow.fs.FileType.Directory:
            fs.delete_dir(path)
        elif kind == pyarrow.fs.FileType.File:
            fs.delete_file(path)

    def put_dir(self, local_dir: str, name: str) -> None:
        import pyarrow.fs

        fs, path = self._path(name)
        fs.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(local_dir, path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)

    @contextlib.contextmanager
    def local_dir(self, name: str) -> Iterator[str]:
        """The directory as a local path (a temporary copy of a remote one)."""
        fs, path = self._path(name)
        if self.local:
            yield path
            return
        import pyarrow.fs

        with tempfile.TemporaryDirectory(prefix="raysweep-spool-") as tmp:
            pyarrow.fs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
            yield tmp


class Spool:
    """The append-only log of one search's MLflow operations, and how far replay has got."""

    def __init__(self, storage: str, name: str, tracking_uri: str | None = None):
        self.storage, self.name, self.tracking_uri = storage, name, tracking_uri
        self.files = _Files(join(storage, name))
        self.path = redact(join(storage, name, SPOOL_DIR))  # shown to users: no storage credentials

    def __getstate__(self):  # pickled with the tracker into tuner.pkl: no tracking credentials
        return {**self.__dict__, "tracking_uri": for_pickle(self.tracking_uri)}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.tracking_uri = from_pickle(self.tracking_uri)

    def exists(self) -> bool:
        return bool(self.segments())

    def segments(self) -> list[str]:
        """The spool's files, oldest first. Each is written once, never changed, so a replay
        deletes exactly those it read: a search still running appends new ones meanwhile."""
        return sorted(n for n in self.files.list(SPOOL_DIR) if n.endswith(".jsonl"))  # not a `.tmp`

    def read(self, segments: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header (the tracking URI it was written for, redacted) and the operations, in order."""
        header: dict[str, Any] = {}
        ops = []
        for segment in self.segments() if segments is None else segments:
            for line in (self.files.read(f"{SPOOL_DIR}/{segment}") or "").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash while writing: its op never returned
                if "op" in entry:
                    ops.append(entry)
                else:
                    header = header or entry
        return header, ops

    def state(self) -> dict[str, Any]:
        text = self.files.read(STATE_FILE)
        return json.loads(text) if text else {"applied": 0, "ids": {}}

    def save_state(self, applied: int, ids: dict[str, str]) -> None:
        self.files.write(STATE_FILE, json.dumps({"applied": applied, "ids": ids}))

    def pending(self) -> int:
        if not self.exists():
            return 0
        return len(self.read()[1]) - self.state()["applied"]

    def append(self, op: str, args: dict[str, Any], payload_dir: str | None = None) -> None:
        entry: dict[str, Any] = {"op": op, "args": args}
        if payload_dir is not None:
            entry["files"] = uuid.uuid4().hex
            self.files.put_dir(payload_dir, f"{FILES_DIR}/{entry['files']}")
        head = json.dumps({"raysweep_spool": 1, "tracking_uri": redact(self.tracking_uri)}) + "\n"
        # The next number after the newest file: this search's driver is the only writer.
        segments = self.segments()
        number = int(segments[-1].split(".")[0]) + 1 if segments else 0
        self.files.write(f"{SPOOL_DIR}/{number:012d}.jsonl", head + json.dumps(entry) + "\n")

    def payload(self, entry: dict[str, Any]):
        return self.files.local_dir(f"{FILES_DIR}/{entry['files']}")

    def clear(self, ids: dict[str, str], segments: list[str], ops: list[dict[str, Any]]) -> None:
        """Delete what a replay sent: the `segments` it read and their `ops`' files, not what was
        spooled since. Keep the id map for a process restored with placeholder ids (Tune restores
        its callbacks). Progress is reset first: a crash in between only makes the next replay
        send everything again, which changes nothing. The directories stay (a running search may
        be writing into them)."""
        self.save_state(0, ids)
        for name in segments:
            self.files.delete(f"{SPOOL_DIR}/{name}")
        for entry in ops:
            if "files" in entry:
                self.files.delete(f"{FILES_DIR}/{entry['files']}")

    def sync_command(self, tracking_uri: str) -> str:
        """The `raysweep sync` line to print; credentials in either URI show as `***`."""
        return shlex.join(["raysweep", "sync", self.name, "--storage", redact(self.storage),
                           "--tracking-uri", redact(tracking_uri)])


# -- operations: each one is a JSON-able `args` dict, applied the same way live and at replay


def _create_run(client, args, payload, ids, replaying, log_model=None):
    if replaying:  # a run of this key may exist already: an interrupted replay, a lost answer
        found = client.search_runs([args["experiment_id"]], f"tags.`{RUN_KEY_TAG}` = '{args['key']}'", max_results=1)
        if found:
            ids[PENDING + args["key"]] = found[0].info.run_id
            return found[0].info.run_id
    run = client.create_run(args["experiment_id"], start_time=args["start_time"], tags=args["tags"],
                            run_name=args["run_name"])
    if replaying:
        ids[PENDING + args["key"]] = run.info.run_id
    return run.info.run_id


def _log_batch(client, args, payload, ids, replaying, log_model=None):
    client.log_batch(
        args["run_id"],
        metrics=[Metric(k, v, ts, step) for k, v, ts, step in args["metrics"]],
        params=[Param(k, v) for k, v in args["params"]],
        tags=[RunTag(k, v) for k, v in args["tags"]],
    )


def _log_text(client, args, payload, ids, replaying, log_model=None):
    client.log_text(args["run_id"], args["text"], args["artifact_file"])


def _log_artifacts(client, args, payload, ids, replaying, log_model=None):
    client.log_artifacts(args["run_id"], payload, args["artifact_path"])


def _set_terminated(client, args, payload, ids, replaying, log_model=None):
    client.set_terminated(args["run_id"], status=args["status"], end_time=args["end_time"])


def _log_model(client, args, payload, ids, replaying, log_model: ModelLogger | None = None):
    run_id = args["run_id"]
    if replaying and client.get_run(run_id).data.tags.get(MODEL_URI_TAG):
        return None  # logged by an earlier, interrupted replay
    # The client's own URI: the spooled one is redacted (spools written before it was are not).
    uri = getattr(client, "tracking_uri", None) or args["tracking_uri"]
    model_uri = log_model(uri, run_id, args["task"], args["params"], payload, args["seed"],
                          registered_name=args["registered_name"], version_tags=args["version_tags"],
                          example=args.get("example"))
    if replaying:  # the run's end, spooled after this, did not know the URI
        client.set_tag(run_id, MODEL_URI_TAG, model_uri)
    return model_uri


OPERATIONS: dict[str, Callable] = {
    "create_run": _create_run, "log_batch": _log_batch, "log_text": _log_text,
    "log_artifacts": _log_artifacts, "set_terminated": _set_terminated, "log_model": _log_model,
}


@contextlib.contextmanager
def _payload(spool: Spool, entry: dict[str, Any]):
    """What an operation needs besides its args: a directory, or the model's state dict."""
    if "files" not in entry:
        yield None
        return
    with spool.payload(entry) as directory:
        if entry["op"] == "log_model":
            yield load_state(directory)
        else:
            yield directory


@dataclass
class Replayed:
    """What a replay sent, by kind, for `raysweep sync` to print."""

    operations: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, entry: dict[str, Any]) -> None:
        self.operations += 1
        args = entry["args"]
        if entry["op"] == "log_batch":
            kinds = {"metric points": len(args["metrics"]), "params": len(args["params"]), "tags": len(args["tags"])}
        else:
            kinds = {"create_run": {"runs created": 1}, "set_terminated": {"runs ended": 1},
                     "log_artifacts": {"artifact uploads": 1}, "log_text": {"artifact uploads": 1},
                     "log_model": {"models": 1}}[entry["op"]]
        for kind, n in kinds.items():
            self.counts[kind] = self.counts.get(kind, 0) + n

    def __str__(self) -> str:
        shown = ", ".join(f"{kind}: {n}" for kind, n in self.counts.items() if n)
        return f"{self.operations} operations" + (f" ({shown})" if shown else "")


def replay(spool: Spool, client, ids: dict[str, str] | None = None,
           progress: Callable[[dict[str, Any]], None] | None = None, log_model: ModelLogger | None = None) -> Replayed:
    """Send the spool's unsent operations in order, then delete it. Raises as the first failing
    operation does, having saved how far it got. `ids` (placeholder -> run id) is updated;
    `log_model` logs a spooled model."""
    segments = spool.segments()
    _, ops = spool.read(segments)
    state = spool.state()
    ids = state["ids"] if ids is None else ids
    ids.update(state["ids"])
    applied, done = state["applied"], Replayed()
    try:
        with fail_fast():
            for entry in ops[applied:]:
                with _payload(spool, entry) as payload:
                    OPERATIONS[entry["op"]](client, substitute(entry["args"], ids), payload, ids, True, log_model)
                applied += 1
                done.add(entry)
                if entry["op"] in ("create_run", "log_model") or done.operations % _SAVE_EVERY == 0:
                    spool.save_state(applied, ids)
                if progress is not None:
                    progress(entry)
    finally:
        if applied > state["applied"]:
            spool.save_state(applied, ids)
    spool.clear(ids, segments, ops)
    return done


class SpoolingClient:
    """The MlflowClient writes `Tracker` makes, sent now or, while MLflow is unreachable, spooled.

    Reads (and writes outside the list below) go straight to the MlflowClient. Without a spool
    an unreachable server raises, as MlflowClient does.
    """

    def __init__(self, client, tracking_uri: str, spool: Spool | None, log_model: ModelLogger | None = None):
        self.client, self.tracking_uri, self.spool, self.log_model = client, tracking_uri, spool, log_model
        self.ids: dict[str, str] = {}  # placeholder -> real run id, once replayed
        self._spooling = False
        self._gave_up = False  # replay hit an error that is no outage: left to `raysweep sync`
        self._full = False  # the outage is a full disk (no_space), not an MLflow that does not answer
        self._last_try = -math.inf
        # A SQLite store's calls are never cut short by a second Ctrl-C (signals.py).
        self._whole = uninterrupted if sqlite_path(tracking_uri) is not None else contextlib.nullcontext
        if spool is not None:
            self.ids.update(spool.state()["ids"])
            # An earlier process left operations: they go first, so ours queue behind them.
            self._spooling = spool.pending() > 0

    def __getattr__(self, name):
        if name in ("client", "_whole"):  # not set yet: no recursion
            raise AttributeError(name)
        attr = getattr(self.client, name)
        if not callable(attr) or self._whole is contextlib.nullcontext:
            return attr

        @functools.wraps(attr)
        def whole(*args, **kwargs):
            with self._whole():
                return attr(*args, **kwargs)
        return whole

    # -- the writes Tracker makes, with MlflowClient's signatures
    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        key = uuid.uuid4().hex
        args = {"experiment_id": experiment_id, "start_time": start_time or _now_ms(),
                "tags": {**(tags or {}), RUN_KEY_TAG: key}, "run_name": run_name, "key": key}
        run_id = self._send("create_run", args, placeholder=PENDING + key)
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._send("log_batch", {
            "run_id": run_id,
            "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
            "params": [[p.key, p.value] for p in params],
            "tags": [[t.key, t.value] for t in tags],
        })

    def log_text(self, run_id, text, artifact_file):
        self._send("log_text", {"run_id": run_id, "text": text, "artifact_file": artifact_file})

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        self._send("log_artifacts", {"run_id": run_id, "artifact_path": artifact_path}, payload=local_dir)

    def set_terminated(self, run_id, status=None, end_time=None):
        self._send("set_terminated", {"run_id": run_id, "status": status or "FINISHED", "end_time": end_time or _now_ms()})

    def log_pytorch_model(self, run_id, task, params, state, seed, registered_name=None, version_tags=None,
                          example=None):
        """`models.log_pytorch_model` for the spec's task name; the model's URI, or None if spooled
        (replay logs it and tags the run with its URI). `example`: inputs as nested lists."""
        args = {"run_id": run_id, "tracking_uri": redact(self.tracking_uri), "task": task, "params": params, "seed": seed,
                "registered_name": registered_name,
                "version_tags": {k: str(v) for k, v in (version_tags or {}).items()},
                "example": None if example is None else example.tolist()}
        return self._send("log_model", args, payload=state)

    # -- the choke point
    def _send(self, op: str, args: dict[str, Any], payload: Any = None, placeholder: str | None = None):
        with self._whole():
            return self._send_now(op, args, payload, placeholder)

    def _send_now(self, op: str, args: dict[str, Any], payload: Any, placeholder: str | None):
        if self.spool is not None and self._spooling and not self._replayed():
            return self._enqueue(op, args, payload, placeholder)
        try:
            with fail_fast() if self.spool is not None else contextlib.nullcontext():
                return OPERATIONS[op](self.client, substitute(args, self.ids), payload, self.ids, False, self.log_model)
        except Exception as exc:
            if self.spool is None or not is_outage(exc):
                raise
            self._full = no_space(exc) is not None
            log.warning("MLflow at %s %s (%s): spooling to %s; replayed when it %s",
                        redact(self.tracking_uri), "cannot store more" if self._full else "unreachable",
                        no_space(exc) or _root_cause(exc, self.tracking_uri), self.spool.path,
                        "can store again (free space)" if self._full else "answers")
            self._spooling, self._last_try = True, time.monotonic()
            return self._enqueue(op, args, payload, placeholder)

    def _enqueue(self, op, args, payload, placeholder):
        # Ids mapped by an earlier replay are written as real ones: that replay's state is gone.
        args = substitute(args, self.ids)
        if op == "log_model":  # the state dict goes to a file, as a checkpoint would
            with tempfile.TemporaryDirectory(prefix="raysweep-spool-") as tmp:
                save_state(payload, tmp)
                self.spool.append(op, args, tmp)
        else:
            self.spool.append(op, args, payload)
        return placeholder

    def _replayed(self, force: bool = False) -> bool:
        """Whether the spool has been sent now (tried at most every RETRY_INTERVAL_S)."""
        if self._gave_up or (not force and time.monotonic() - self._last_try < RETRY_INTERVAL_S):
            return False
        self._last_try = time.monotonic()
        if not self._answers():
            return False
        try:
            done = replay(self.spool, self.client, self.ids, log_model=self.log_model)
        except Exception as exc:  # noqa: BLE001 - training goes on; `raysweep sync` can retry
            if not is_outage(exc):
                self._gave_up = True
                log.warning("replaying %s failed (%s: %s); the rest stays there for: %s", self.spool.path,
                            type(exc).__name__, redact_text(str(exc)[:300], self.tracking_uri),
                            self.spool.sync_command(self.tracking_uri))
            return False
        self._spooling = False
        log.warning("MLflow at %s %s: sent %s from the spool", redact(self.tracking_uri),
                    "can store again" if self._full else "answers again", done)
        self._full = False
        return True

    def _answers(self) -> bool:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        return unreachable(self.tracking_uri, tries=1, timeout_s=2.0) is None

    def flush(self) -> bool:
        """Send what waits in the spool now (the search's end); False, with a warning naming
        `raysweep sync`, if MLflow is still unreachable."""
        if self.spool is None or not self.spool.exists() or self._replayed(force=True):
            return True
        if not self._gave_up:  # that one was warned about already
            log.warning("MLflow at %s still %s: %d operations wait in %s; send them later with: %s",
                        redact(self.tracking_uri), "full" if self._full else "unreachable",
                        self.spool.pending(), self.spool.path,
                        self.spool.sync_command(self.tracking_uri))
        return False
