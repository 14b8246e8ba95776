"""MLflow: one parent run per search, one child run per trial, all written by the driver.

Workers never talk to MLflow (docs/design.md, point 4): one writer keeps SQLite safe and the
cluster needs no credentials. The layout is a contract (docs/design.md, "MLflow layout").
"""

from __future__ import annotations

import base64
import functools
import http.client
import contextlib
import json
import math
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from ray.tune import Callback

from .book import FAILED, RUNNING, STOPPED, TrialBook, TrialRecord
from .cost import BILLED
from .failures import TRACKING
from .redact import for_pickle, from_pickle, redact, redact_text, scrubbed_spec, spec_yaml, strip_credentials
from .spec import Spec, SpecError
from .spool import Spool, SpoolingClient

DEFAULT_URI = "sqlite:///mlflow.db"
_SQLITE = "sqlite:///"
_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of every SQLite database file
UI_PORT = 5000
PARENT_TAG = "mlflow.parentRunId"
ORPHANED_TAG = "raysweep.orphaned"  # a dead driver's run of a trial --resume could not continue
# Without it MLflow 3's UI opens an experiment on its GenAI overview, hiding training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_MAX_BATCH = 1000  # MLflow's limit on metrics (and entities) in one log_batch
# A trial's epoch metrics are written at most this often (the rest wait in the driver): each
# write is a synchronous SQLite transaction (~20 ms) in Tune's event loop, during which no
# trial's report is taken. See MLflowCallback.
FLUSH_INTERVAL_S = 1.0

Point = tuple[int, dict[str, float], int]  # (step, metrics, timestamp in ms): one epoch's report


def _chosen_uri(flag: str | None, spec_uri: str | None) -> tuple[str, str]:
    """The tracking URI before resolving, and the setting it came from (for error messages)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    for source, uri in (("--tracking-uri", flag), ("tracking.uri", spec_uri), ("MLFLOW_TRACKING_URI", env)):
        if uri:
            return uri, source
    return DEFAULT_URI, "--tracking-uri"


def resolve_tracking_uri(flag: str | None = None, spec_uri: str | None = None) -> str:
    """--tracking-uri, then the spec's tracking.uri, then $MLFLOW_TRACKING_URI, then SQLite here.

    A relative SQLite path is made absolute, so the UI hint and later `raysweep ui` or
    `raysweep report` calls find the same file from any directory.
    """
    uri, _ = _chosen_uri(flag, spec_uri)
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
        uri = _SQLITE + str(Path(uri[len(_SQLITE):]).resolve())
    return uri


def check_tracking_uri(flag: str | None = None, spec_uri: str | None = None, *, existing: bool = False) -> str:
    """The resolved tracking URI once it looks usable, else a `SpecError` naming its setting.

    Run before Ray starts: MLflow would retry an unreachable server for minutes and then end
    in a traceback, and SQLite fails only at its first write. `existing`: the store must
    already hold a database (`report` reads one; `search` and `train` create it).
    """
    uri = resolve_tracking_uri(flag, spec_uri)
    if uri.startswith(("http://", "https://")):
        problem = _unreachable(uri)
    elif uri.startswith(_SQLITE):
        problem = _sqlite_problem(Path(uri[len(_SQLITE):]), existing)
    else:  # databricks, postgresql, ...: MLflow's own client reports those
        problem = None
    if problem:
        raise SpecError(f"{_chosen_uri(flag, spec_uri)[1]}: {problem}")
    return uri


def _unreachable(uri: str, tries: int = 2, timeout_s: float = 3.0) -> str | None:
    """Why an MLflow server at `uri` cannot be reached, or None if something answers there.

    Credentials in the URI (`https://user:token@host`) go in an Authorization header, never in
    the request's host (urllib would take `user:token@host` for the host, or `token@host`
    for a port when the URI names none); the message shows the URI redacted.
    """
    request = _health_request(uri)
    if isinstance(request, str):
        return f"cannot reach MLflow at {redact(uri)}: {request}"
    reason: object = None
    for attempt in range(tries):
        if attempt:
            time.sleep(0.5)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                return None
        except urllib.error.HTTPError:
            return None  # a server answered (a proxy, an auth wall): MLflow's client takes it from here
        except urllib.error.URLError as exc:
            reason = exc.reason
        except (OSError, ValueError, http.client.HTTPException) as exc:  # a read timeout, a malformed URL
            reason = exc
        if isinstance(reason, ssl.SSLError):
            return None  # TLS answered; MLflow applies its own certificate settings
    text = getattr(reason, "strerror", None) or str(reason)
    text = redact_text(f"{text[:1].lower()}{text[1:]}", uri)
    return f"cannot reach MLflow at {redact(uri)}: {text}"


def _health_request(uri: str) -> urllib.request.Request | str:
    """The GET of the server's /health, with the URI's credentials as basic auth; or why the
    URI cannot be requested (a bad port), in words that quote no secret."""
    bare, user, password, _ = strip_credentials(uri)
    parts = urllib.parse.urlsplit(bare)
    try:
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        return "its port is not a number"
    if not parts.hostname:
        return "it names no host"
    request = urllib.request.Request(f"{bare.split('?', 1)[0].rstrip('/')}/health")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def _sqlite_problem(path: Path, existing: bool) -> str | None:
    if path.is_dir():
        return f"{path} is a directory, not an SQLite database file"
    if path.exists():
        try:
            with path.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            return f"cannot read {path} ({exc.strerror})"
        if head == b"":  # SQLite takes an empty file as an empty database
            return f"no MLflow database at {path} (the file is empty)" if existing else None
        return None if head == _SQLITE_MAGIC else f"{path} is not an SQLite database"
    if existing:
        return f"no MLflow database at {path}"
    if not path.parent.is_dir():
        return f"cannot create {path}: directory {path.parent} does not exist"
    return None


def runs_url(uri: str, experiment_id: str) -> str:
    """Where the search's runs are in the MLflow UI (the runs tab, not the GenAI overview)."""
    if uri.startswith(("http://", "https://")):  # no credentials in a link that is printed and shared
        base = urllib.parse.urlsplit(strip_credentials(uri)[0])._replace(query="", fragment="").geturl().rstrip("/")
    else:
        base = f"http://127.0.0.1:{UI_PORT}"
    return f"{base}/#/experiments/{experiment_id}/runs"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_run_name(number: int, config: dict[str, Any], keys: int = 4) -> str:
    shown = " ".join(f"{k}={_fmt(v)}" for k, v in list(config.items())[:keys])
    return f"trial-{number:03d} {shown}".strip()


def _params(values: dict[str, Any]) -> list[Param]:
    # A hyperparameter may be a path or URI (a task's data): logged with its credentials redacted.
    return [Param(str(k), redact_text(str(v))[:_MAX_PARAM]) for k, v in values.items()]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """The handful of MLflow operations raysweep needs, on one client.

    With a `spool`, writes that find MLflow unreachable wait on disk and are replayed when it
    answers (spool.py); the experiment itself must be reachable here.
    """

    def __init__(self, uri: str, experiment: str, spool: Spool | None = None):
        self.uri, self.spool = uri, spool
        self.client = self._client()
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(experiment, tags=EXPERIMENT_KIND)
        else:
            self.experiment_id = found.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if found.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)

    def __getstate__(self):
        # Tune pickles callbacks with its experiment state (tuner.pkl, in the search's storage);
        # the client is rebuilt from the URI, which is pickled without its credentials.
        state = {k: v for k, v in self.__dict__.items() if k != "client"}
        return {**state, "uri": for_pickle(self.uri)}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.uri = from_pickle(self.uri)
        self.client = self._client()

    def _client(self) -> SpoolingClient:
        return SpoolingClient(MlflowClient(tracking_uri=self.uri), self.uri, getattr(self, "spool", None))

    def finish(self) -> dict[str, str]:
        """Send what an outage left in the spool (warns with `raysweep sync` if MLflow is still
        down); the placeholder -> real run ids of runs created while it was down."""
        self.client.flush()
        return self.client.ids

    def start_search(self, spec: Spec) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=spec.name,
            tags={"raysweep.kind": "search", "raysweep.task": spec.task, "raysweep.metric": spec.metric},
        )
        run_id = run.info.run_id
        settings = {
            "task": spec.task, "metric": spec.metric, "mode": spec.mode, "max_epochs": spec.max_epochs,
            "seed": spec.seed, "search.algorithm": spec.search.algorithm,
            "search.num_samples": spec.search.num_samples, "scheduler.type": spec.scheduler.type,
            "workers_per_trial": spec.resources.workers_per_trial,
        }
        self.client.log_batch(run_id, params=_params(settings))
        self.client.log_text(run_id, spec_yaml(spec), "spec.yaml")  # tracking.uri, data: paths redacted
        return run_id

    def start_trial(self, parent_run_id: str | None, rec: TrialRecord, params: dict[str, Any]) -> str:
        """A search's child run; with no parent, the run of a `raysweep train`."""
        if parent_run_id is None:
            name = "train " + trial_run_name(rec.number, rec.config).split(" ", 1)[-1]
            tags = {"raysweep.kind": "train", "raysweep.trial_id": rec.trial_id}
        else:
            name = trial_run_name(rec.number, rec.config)
            tags = {PARENT_TAG: parent_run_id, "raysweep.kind": "trial", "raysweep.trial_id": rec.trial_id}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        try:
            self.client.log_batch(run.info.run_id, params=_params(params))
        except MlflowException as exc:  # refused (not an outage: that is spooled): the run says why
            self.end_run(run.info.run_id, "FAILED", refused_tags(exc))
            raise
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        self.log_points(run_id, [(step, metrics, _now_ms())])

    def log_points(self, run_id: str, points: list[Point], tags: dict[str, Any] | None = None) -> None:
        """Several epochs' metrics (and tags) in as few `log_batch` calls as MLflow allows."""
        metrics = [Metric(k, v, ts, step) for step, values, ts in points for k, v in values.items()]
        run_tags = [RunTag(k, redact_text(str(v))) for k, v in (tags or {}).items()]  # an error may quote a URL
        while metrics or run_tags:  # tags (a handful) ride with the first batch
            room = _MAX_BATCH - len(run_tags)
            self.client.log_batch(run_id, metrics=metrics[:room], tags=run_tags)
            metrics, run_tags = metrics[room:], []

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.log_points(run_id, [], tags)

    def end_run(self, run_id: str, status: str = "FINISHED", tags: dict[str, Any] | None = None,
                points: list[Point] = ()) -> None:
        """End a run; `points` (epochs still buffered) and `tags` go first, in one write."""
        if tags or points:
            self.log_points(run_id, list(points), tags)
        self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.client.log_batch(run_id, params=_params(params))

    def log_best_params(self, run_id: str, params: dict[str, Any], logged: set[str]) -> None:
        """The best trial's hyperparameters as the search run's params, and as a tag.

        MLflow refuses to change a logged param: once an extended search (--resume --samples)
        finds a better trial, the tag holds the current best, the params the first. `logged`:
        the run's param names when this driver took it over (no read here: at the end of a
        search MLflow may be down, and this write must then go to the spool)."""
        self.log_params(run_id, {k: v for k, v in params.items() if k not in logged})
        self.set_tags(run_id, {"raysweep.best_config": json.dumps(params, default=str)[:_MAX_PARAM]})

    def reopen_search(self, parent_run_id: str, records: dict[str, TrialRecord],
                      metric: str) -> tuple[set[str], dict[str, float]]:
        """Pick a resumed search's MLflow runs up again, and put right what its dead driver left.

        Each trial's run is found by its `raysweep.trial_id` tag (the saved book may predate
        it) and the last epoch it holds is read back, so no run is created twice and no epoch
        logged twice. Runs still RUNNING of trials that had ended get their status; runs of
        trials Tune never saved (the driver died first) end KILLED, tagged as orphans.

        Each trial's cost ledger continues from what MLflow last got (`TrialRecord.rebase_bill`).
        Returns the parent's param names, and the orphans' billed totals (their compute was spent).
        """
        self.client.update_run(parent_run_id, status="RUNNING")
        logged_params = set(self.client.get_run(parent_run_id).data.params)
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=50000,
        )
        orphaned: dict[str, float] = {}
        for run in runs:
            rec = records.get(run.data.tags.get("raysweep.trial_id", ""))
            logged = {k: v for k, v in run.data.metrics.items() if k in BILLED}  # the latest values
            if rec is None:
                if run.info.status == "RUNNING":
                    self.end_run(run.info.run_id, "KILLED", {ORPHANED_TAG: "the search's driver died "
                                                              "before this trial was saved; it was not resumed"})
                for key, value in logged.items():  # its compute was spent: still billed
                    orphaned[key] = orphaned.get(key, 0.0) + value
                continue
            if rec.run_id in (None, run.info.run_id):
                rec.rebase_bill(logged)
            rec.run_id = rec.run_id or run.info.run_id
            steps = [m.step for m in self.client.get_metric_history(rec.run_id, metric)]
            rec.logged_epoch = max([rec.logged_epoch, *steps])
            if rec.status != RUNNING and run.info.status == "RUNNING":
                self.end_run(rec.run_id, "FAILED" if rec.status == FAILED else "FINISHED")
            elif rec.status == RUNNING and run.info.status != "RUNNING":  # ended KILLED by a Ctrl-C
                self.client.update_run(rec.run_id, status="RUNNING")
        return logged_params, orphaned

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_model(self, run_id: str, task: str, params: dict, state: dict, seed: int, **registry) -> str | None:
        """`models.log_pytorch_model` of the spec's `task`; None while MLflow is unreachable."""
        return self.client.log_pytorch_model(run_id, task, params, state, seed, **registry)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, redact_text(text), artifact_file)  # a traceback may quote a URL


def refused_tags(exc: Exception) -> dict[str, str]:
    return {"raysweep.error": f"MLflow refused a write: {' '.join(str(exc).split())[:1000]}",
            "raysweep.failure": TRACKING}


class MLflowCallback(Callback):
    """Mirrors the `TrialBook` into MLflow as Tune reports; runs after the book in the list.

    A trial's epochs are written at most once per `FLUSH_INTERVAL_S` (the first at once, the
    rest buffered here, each point with the time it arrived); the buffer is written when the
    trial ends, fails or is cut off, and when the search ends or is interrupted (`flush`, from
    run_search). All writes still go through the tracker's `SpoolingClient`, in order: during
    an outage buffered points are spooled like any other write.

    `TrialRecord.logged_epoch` counts only epochs written (sent or spooled), never ones still
    buffered: `--resume` must not take a point lost with a dead driver's buffer for one MLflow
    holds. The buffer is saved with Tune's experiment state (`get_state`) and written when a
    resumed search restores it (`set_state`); epochs reported after Tune's last save are
    reported again by the resumed trials, which restart from a checkpoint of that save or
    older. So a dead driver loses no point, and no epoch gets two. (Flushing at each save
    instead would undo the batching: Tune saves every other checkpoint of any trial.)
    """

    def __init__(self, tracker: Tracker, book: TrialBook, parent_run_id: str | None, spec: Spec, params_of):
        self.tracker, self.book, self.parent_run_id, self.spec = tracker, book, parent_run_id, spec
        self._params_of = params_of
        self._buffer: dict[str, list[Point]] = {}  # trial id -> epochs not yet written
        self._written: dict[str, float] = {}  # trial id -> time.monotonic() of its last write

    def __getstate__(self):
        # Tune pickles its callbacks (tuner.pkl, in the search's storage). A buffer is this
        # driver's alone; the spec goes without its tracking credentials, and `params_of` (a
        # closure over the spec as given) not at all: unpickled, it is the spec's trial params.
        return {**self.__dict__, "_buffer": {}, "_written": {}, "spec": scrubbed_spec(self.spec), "_params_of": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._params_of is None:
            from .trial import trial_params

            self._params_of = functools.partial(trial_params, self.spec)

    @contextlib.contextmanager
    def _guard(self, rec: TrialRecord):
        """A write MLflow refuses (a name it rejects, SQLite locked, a full disk) fails this
        trial only: its run ends FAILED saying why, the book marks it failed (the search's
        stopper ends it), and nothing more is written for it. Outages never get here: the
        client spools them."""
        try:
            yield
        except MlflowException as exc:
            rec.status, rec.failure = FAILED, TRACKING
            rec.error = refused_tags(exc)["raysweep.error"]
            self._buffer.pop(rec.trial_id, None)
            if rec.run_id is not None:
                with contextlib.suppress(MlflowException):  # the same refusal may stop this write too
                    self.tracker.end_run(rec.run_id, "FAILED", refused_tags(exc))

    def on_trial_start(self, iteration, trials, trial, **info):
        rec = self.book.records[trial.trial_id]
        if rec.run_id is None and rec.failure != TRACKING:
            with self._guard(rec):
                rec.run_id = self.tracker.start_trial(self.parent_run_id, rec, self._params_of(rec.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rec = self.book.records[trial.trial_id]
        if rec.failure == TRACKING:
            return
        buffered = self._buffer.setdefault(rec.trial_id, [])
        # A trial restarted from an older checkpoint reports its lost epochs again: MLflow
        # keeps the first report of each epoch, so every metric has one point per epoch.
        if rec.epochs <= max(rec.logged_epoch, buffered[-1][0] if buffered else 0):
            return
        buffered.append((rec.epochs, dict(rec.metrics), _now_ms()))
        if time.monotonic() - self._written.get(rec.trial_id, -math.inf) >= FLUSH_INTERVAL_S:
            with self._guard(rec):
                self._write(rec)

    def _write(self, rec: TrialRecord) -> None:
        points = self._buffer.pop(rec.trial_id, [])
        if points:
            self.tracker.log_points(rec.run_id, points)
            self._written[rec.trial_id] = time.monotonic()
            rec.logged_epoch = points[-1][0]

    def flush(self) -> None:
        """Write every buffered epoch now (the search is interrupted, Tune saves its state)."""
        for trial_id in list(self._buffer):
            rec = self.book.records.get(trial_id)
            if rec is not None and rec.run_id is not None:
                with self._guard(rec):
                    self._write(rec)

    def get_state(self) -> dict | None:
        buffered = {trial_id: list(points) for trial_id, points in self._buffer.items() if points}
        return {"buffer": buffered} if buffered else None

    def set_state(self, state: dict) -> None:
        """A resumed search: write what the dead driver had buffered at Tune's last save.

        Called after the book's set_state; run_search has already set each record's
        logged_epoch from the MLflow history (`Tracker.reopen_search`), so nothing is logged twice.
        """
        for trial_id, points in state.get("buffer", {}).items():
            rec = self.book.records.get(trial_id)
            if rec is None or rec.run_id is None:
                continue
            points = [p for p in points if p[0] > rec.logged_epoch]
            if points:
                self.tracker.log_points(rec.run_id, points)
                rec.logged_epoch = points[-1][0]

    def _end(self, rec: TrialRecord, status: str, tags: dict[str, Any]) -> None:
        if rec.failure == TRACKING or rec.run_id is None:  # its run already ended, saying why
            return
        points = self._buffer.pop(rec.trial_id, [])
        self._written.pop(rec.trial_id, None)
        with self._guard(rec):
            self.tracker.end_run(rec.run_id, status, tags, points=points)  # points and tags: one write
            if points:
                rec.logged_epoch = points[-1][0]

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end_finished(self.book.records[trial.trial_id])

    def _end_finished(self, rec: TrialRecord) -> None:
        self._end(rec, "FINISHED", {"raysweep.stopped_early": "true"} if rec.status == STOPPED else {})

    def on_trial_error(self, iteration, trials, trial, **info):
        rec = self.book.records[trial.trial_id]
        if rec.status == FAILED and rec.run_id is not None and rec.failure != TRACKING:
            if rec.traceback:
                with self._guard(rec):
                    self.tracker.log_text(rec.run_id, rec.traceback, "error/traceback.txt")
            tags = {"raysweep.error": rec.error or "trial failed", "raysweep.failure": rec.failure or "exception"}
            self._end(rec, "FAILED", tags)

    def on_experiment_end(self, trials, **info):
        for rec in self.book.cut_off:  # settled by the book, which runs first
            if rec.run_id is not None:
                self._end_finished(rec)
        self.flush()
