"""Where MLflow is: the tracking URI's precedence, a check that it can be used, the UI link,
the environment of an MLflow server raysweep starts.

No MLflow, Ray or torch import: the CLI checks a URI before anything heavy starts.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import SpecError
from ..redact import redact, redact_text, strip_credentials

DEFAULT_URI = "sqlite:///mlflow.db"
_SQLITE = "sqlite:///"
_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of every SQLite database file
UI_PORT = 5000


def sqlite_path(uri: str) -> Path | None:
    """The database file a `sqlite:///PATH` tracking URI names (relative to the working
    directory unless absolute), or None for any other store."""
    return Path(uri[len(_SQLITE):]) if uri.startswith(_SQLITE) else None


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
    path = sqlite_path(uri)
    if path is not None and not path.is_absolute():
        uri = _SQLITE + str(path.resolve())
    return uri


def check_tracking_uri(flag: str | None = None, spec_uri: str | None = None, *, existing: bool = False) -> str:
    """The resolved tracking URI once it looks usable, else a `SpecError` naming its setting.

    Run before Ray starts: MLflow would retry an unreachable server for minutes and then end
    in a traceback, and SQLite fails only at its first write. `existing`: the store must
    already hold a database (`report` reads one; `search` and `train` create it).
    """
    uri = resolve_tracking_uri(flag, spec_uri)
    path = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        problem = unreachable(uri)
    elif path is not None:
        problem = _sqlite_problem(path, existing)
    else:  # databricks, postgresql, ...: MLflow's own client reports those
        problem = None
    if problem:
        raise SpecError(f"{_chosen_uri(flag, spec_uri)[1]}: {problem}")
    return uri


def unreachable(uri: str, tries: int = 2, timeout_s: float = 3.0) -> str | None:
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
        reason = _answer(request, timeout_s)
        if reason == 404 and _no_mlflow_api(request, timeout_s):
            return (f"cannot use {redact(uri)}: it answers, but not as an MLflow tracking server (404 for /health "
                    "and for MLflow's REST API); give the MLflow server's address (its UI's, e.g. http://HOST:5000)")
        if isinstance(reason, int):
            return None  # a server answered (a proxy, an auth wall): MLflow's client takes it from here
        if isinstance(reason, ssl.SSLError):
            return None  # TLS answered; MLflow applies its own certificate settings
    text = getattr(reason, "strerror", None) or str(reason)
    text = redact_text(f"{text[:1].lower()}{text[1:]}", uri)
    return f"cannot reach MLflow at {redact(uri)}: {text}"


def _no_mlflow_api(health: urllib.request.Request, timeout_s: float) -> bool:
    """Whether the server that had no /health has no MLflow REST API either (a web server that
    is not MLflow's, the Ray dashboard's port): only a 404 there says so. A proxy that routes
    only MLflow's API answers it otherwise."""
    api = health.full_url.removesuffix("/health") + "/api/2.0/mlflow/experiments/search?max_results=1"
    return _answer(urllib.request.Request(api, headers=dict(health.header_items())), timeout_s) == 404


def _answer(request: urllib.request.Request, timeout_s: float) -> int | BaseException | str:
    """The HTTP status a request gets (an error status too), or why nothing answered."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError as exc:
        return exc.reason
    except (OSError, ValueError, http.client.HTTPException) as exc:  # a read timeout, a malformed URL
        return exc


def refused(uri: str, error: Exception) -> str:
    """One line for an MLflow server refusing raysweep's first request, with what to do about
    the refusals a user can fix: MLflow's message, without the response body it quotes."""
    text = (str(error).split(". Response body", 1)[0].strip().splitlines() or [type(error).__name__])[0]
    hint = ""
    if any(f"error code {code}" in text for code in (401, 403)):
        hint = ("; give its credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                "MLFLOW_TRACKING_TOKEN)")
    return f"MLflow at {redact(uri)} refused raysweep's first request: {redact_text(text, uri)}{hint}"


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


# MLflow 3's server starts a job runner (huey consumers, eight processes here) for its GenAI
# jobs: scorers, evaluations, prompt optimisation. raysweep uses none, and each of those
# processes imports MLflow at every start (measured: docs/design.md, point 34).
JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an `mlflow server`/`mlflow ui` raysweep starts: `env` (default: this
    process's) with MLflow's job runner off unless the variable is set there already."""
    env = dict(os.environ if env is None else env)
    env.setdefault(JOB_EXECUTION, "false")
    return env


def runs_url(uri: str, experiment_id: str) -> str:
    """Where the search's runs are in the MLflow UI (the runs tab, not the GenAI overview)."""
    if uri.startswith(("http://", "https://")):  # no credentials in a link that is printed and shared
        base = urllib.parse.urlsplit(strip_credentials(uri)[0])._replace(query="", fragment="").geturl().rstrip("/")
    else:
        base = f"http://127.0.0.1:{UI_PORT}"
    return f"{base}/#/experiments/{experiment_id}/runs"
