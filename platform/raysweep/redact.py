"""Credentials in URIs: never printed, logged to MLflow or written to a file raysweep makes.

A tracking or storage URI may carry a secret: a password or token in its userinfo
(`https://user:token@host`, `postgresql://user:pw@db/mlflow`) or in its query string
(`s3://bucket/path?access_key=...&secret_key=...`). What raysweep shows or stores goes
through `redact` (one URI), `redact_text` (any text, e.g. an error message quoting a URL) or
`redact_data` (a summary's values); only the MLflow client and the storage filesystem get the
URI as given. Files that could still hold one are created owner-only (`write_private`).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# A query parameter is secret when its name (lowercased) contains one of these, or is `sig`
# (an Azure SAS signature): pyarrow's S3 access_key / secret_key / session_token, presigned
# URLs' X-Amz-Signature / X-Amz-Credential / X-Amz-Security-Token, ?token=, ?password=, ...
_SECRET_WORDS = ("secret", "password", "passwd", "pwd", "token", "key", "signature", "credential", "auth")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def _secret_param(name: str) -> bool:
    name = unquote(name).lower()
    return name == "sig" or any(word in name for word in _SECRET_WORDS)


def _split_userinfo(netloc: str) -> tuple[str | None, str]:
    """(userinfo or None, host[:port]) of a URL's netloc."""
    if "@" not in netloc:
        return None, netloc
    userinfo, host = netloc.rsplit("@", 1)
    return userinfo, host


def _parts(uri: str):
    try:
        return urlsplit(uri)
    except ValueError:  # e.g. an invalid IPv6 literal: treat it as no URL
        return None


def redact(uri: str | None) -> str | None:
    """`uri` with its secrets as `***`: `https://user:***@host`, `https://***@host` (a lone
    userinfo is often a token), `s3://b/p?access_key=***&secret_key=***&region=eu-west-1`."""
    if not uri or "://" not in uri:
        return uri
    parts = _parts(uri)
    if parts is None:
        return uri
    userinfo, host = _split_userinfo(parts.netloc)
    netloc = parts.netloc
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = "&".join(
        f"{name}={MASK}" if sep and _secret_param(name) else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&"))
    ) if parts.query else parts.query
    if netloc == parts.netloc and query == parts.query:
        return uri  # unchanged, byte for byte (urlunsplit would normalise some URIs)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def has_credentials(uri: str | None) -> bool:
    """Whether `uri` carries a secret (not yet redacted)."""
    return redact(uri) != uri


def is_redacted(uri: str | None) -> bool:
    """Whether `uri` is one `redact` masked (`https://user:***@host`): its secrets are gone."""
    return MASK in secrets_of(uri)


def secrets_of(uri: str | None) -> list[str]:
    """The secret values a URI carries (raw and percent-decoded), to mask them wherever quoted."""
    parts = _parts(uri) if uri and "://" in uri else None
    if parts is None:
        return []
    found = []
    userinfo, _ = _split_userinfo(parts.netloc)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item):
        if sep and _secret_param(name):
            found.append(value)
    found += [unquote(v) for v in found]
    return sorted({v for v in found if len(v) >= 3}, key=len, reverse=True)


def redact_text(text: str, *uris: str | None) -> str:
    """Every URL in `text` redacted; with `uris`, their secret values are masked wherever they
    appear (an error message may quote a host or password without the URL around it)."""
    if not text:
        return text
    text = _URL.sub(lambda m: redact(m.group(0)), text)
    for uri in uris:
        for secret in secrets_of(uri):
            text = text.replace(secret, MASK)
    return text


def redact_data(value: Any, *uris: str | None) -> Any:
    """`redact_text` applied to every string in nested dicts, lists and tuples (a summary)."""
    if isinstance(value, str):
        return redact_text(value, *uris)
    if isinstance(value, dict):
        return {redact_data(k, *uris): redact_data(v, *uris) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v, *uris) for v in value)
    return value


# URIs this process was given, by their redacted form: what `for_pickle` wrote comes back
# whole when unpickled here (Tune pickles its callbacks, the tracker among them, into
# tuner.pkl in the search's storage, and may restore them in the same driver).
_GIVEN: dict[str, str] = {}


def for_pickle(uri: str | None) -> str | None:
    """`uri` redacted, to be pickled (`__getstate__`); `from_pickle` gives it back whole."""
    shown = redact(uri)
    if shown != uri:
        _GIVEN[shown] = uri
    return shown


def from_pickle(uri: str | None) -> str | None:
    """The URI `for_pickle` redacted, whole again in the process that pickled it; elsewhere
    without its credentials (MLflow then takes them from MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    if uri in _GIVEN:
        return _GIVEN[uri]
    return strip_credentials(uri)[0] if is_redacted(uri) else uri


def scrubbed_spec(spec):
    """`spec` with its tracking.uri redacted, for objects Tune pickles into the storage (the
    URI has been resolved by then; nothing reads it back from a pickled spec)."""
    uri = spec.tracking.uri
    if not has_credentials(uri):
        return spec
    return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": redact(uri)})})


def spec_yaml(spec) -> str:
    """`spec.to_yaml()` with every URI in it redacted (tracking.uri, data: paths): the spec as
    logged to MLflow (`spec.yaml`) and printed by `raysweep validate`."""
    from .spec import dump_yaml

    return dump_yaml(redact_data(spec.to_dict()))  # text like '0o17' stays quoted: it reads back as text


def strip_credentials(uri: str) -> tuple[str, str | None, str | None, dict[str, str]]:
    """(the URI without userinfo and secret query parameters, user, password, {secret param: value})."""
    parts = urlsplit(uri)
    userinfo, host = _split_userinfo(parts.netloc)
    user = password = None
    if userinfo is not None:
        user, colon, pw = userinfo.partition(":")
        user, password = unquote(user), (unquote(pw) if colon else None)
    kept, secret = [], {}
    for item in parts.query.split("&") if parts.query else []:
        name, sep, value = item.partition("=")
        if sep and _secret_param(name):
            secret[unquote(name)] = unquote(value)
        else:
            kept.append(item)
    if userinfo is None and not secret:
        return uri, None, None, {}
    return urlunsplit(parts._replace(netloc=host, query="&".join(kept))), user, password, secret


def write_private(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (0600 from creation, never looser).

    A new file is created 0600; an existing regular file is made 0600 while still empty
    (truncated), before anything is written to it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if os.path.isfile(path) and (os.fstat(fd).st_mode & 0o077):
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
