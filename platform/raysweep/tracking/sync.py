"""`raysweep sync NAME`: send what an MLflow outage left in a search's spool."""

from __future__ import annotations

import logging
import os
import sys

from ..errors import SpecError
from ..failures import no_space
from ..redact import is_redacted, redact, redact_text, strip_credentials
from ..spec import NAME_PATTERN
from ..storage import check as check_storage, resolve
from .models import log_task_model
from .spool import SPOOL_DIR, Spool, _root_cause, is_outage, replay
from .uri import check_tracking_uri


def sync(name: str, storage: str | None, tracking_uri: str | None) -> int:
    """`raysweep sync`: replay a search's spool; exit code 0 sent, 1 MLflow failed midway."""
    from mlflow import MlflowClient

    # A search's name, as its spec's: the spool is under <storage>/NAME, and replay deletes
    # files there, so `../x` or `a/b` must not reach outside the search's directory.
    if not NAME_PATTERN.fullmatch(name):
        raise SpecError(f"sync: {name!r} is not a search name (a letter or digit, then letters, digits, '_', '.', '-')")
    check_storage(resolve(storage))
    spool = Spool(resolve(storage), name)
    if not spool.exists():
        raise SpecError(f"sync: nothing to send: no MLflow spool of search {name!r} in {redact(spool.storage)} "
                        f"(nothing in {SPOOL_DIR}/; --storage is the search's)")
    header, _ = spool.read()
    uri = check_tracking_uri(tracking_uri or _stored_uri(header.get("tracking_uri")))
    # What was sent is the one line printed below, not MLflow's link per ended run and its
    # registry chatter (this process does nothing else).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # a full SQLite store: our line says it
    pending = spool.pending()
    try:
        done = replay(spool, MlflowClient(uri), log_model=log_task_model)
    except Exception as exc:  # noqa: BLE001 - one line, and the spool stays for another try
        full = no_space(exc)
        why = (f"cannot store more ({full}: free space, then run this again)" if full else
               f"stopped answering ({_root_cause(exc, uri)})" if is_outage(exc) else
               f"refused it ({type(exc).__name__}: {redact_text(' '.join(str(exc).split())[:300], uri)})")
        sent = pending - spool.pending()
        print(f"raysweep: MLflow at {redact(uri)} {why} after {sent} of {pending} operations; the rest stay in "
              f"{spool.path}", file=sys.stderr)
        return 1
    print(f"sent {done} of search {name} to {redact(uri)}")
    return 0


def _stored_uri(stored: str | None) -> str | None:
    """The tracking URI of a spool's header, for `raysweep sync` without --tracking-uri.

    The header's URI is redacted: its credentials come back from $MLFLOW_TRACKING_URI when
    that is the same URI, else from MLflow's MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    (the URI is then used without them); else a `SpecError` asks for them.
    """
    if not is_redacted(stored):  # none, or a spool written before raysweep redacted it
        return stored
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and redact(env) == stored:
        return env
    bare, _, _, secret_params = strip_credentials(stored)
    if os.environ.get("MLFLOW_TRACKING_USERNAME") and not secret_params:
        return bare
    raise SpecError(f"sync: the spool was written for MLflow at {stored}, whose credentials raysweep does not "
                    "store: give --tracking-uri with them (or set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD)")
