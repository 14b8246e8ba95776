"""Where a search keeps Ray's results and checkpoints: a local directory or a URI.

A URI is anything pyarrow opens (`s3://bucket/path`, `gs://...`), with pyarrow's options in
its query string, e.g. `s3://bucket/path?endpoint_override=minio:9000&scheme=http` for an
S3-compatible server. A cluster of several nodes needs one every node reaches.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import SpecError
from .redact import redact, redact_text

DEFAULT_STORAGE = "./raysweep_results"


def filesystem(location: str):
    """(pyarrow filesystem, path on it) of a directory or URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location) if "://" in location else (pyarrow.fs.LocalFileSystem(), location)


def reason(exc: Exception) -> str:
    """A storage error in one line: an OS error in words, pyarrow's (an object store's) as its
    message, credentials masked."""
    errno = getattr(exc, "errno", None)
    return os.strerror(errno).lower() if errno else redact_text(" ".join(str(exc).split()))


def unusable(location: str, exc: Exception) -> SpecError:
    """The one line for a storage pyarrow cannot open or reach."""
    return SpecError(f"--storage: cannot use {redact(location)}: {reason(exc)}")


def check(location: str) -> None:
    """A SpecError in one line, before Ray starts, when pyarrow cannot open a storage URI: a
    scheme it lacks, an option it does not take, a bucket whose region it cannot resolve."""
    if "://" in location:
        try:
            filesystem(location)
        except (OSError, ValueError) as exc:
            raise unusable(location, exc) from None


def resolve(storage: str | None) -> str:
    """The storage location as Ray needs it: an absolute path, or the URI unchanged."""
    storage = storage or DEFAULT_STORAGE
    return storage if "://" in storage else str(Path(storage).resolve())


def join(storage: str, *parts: str) -> str:
    """`storage`/parts, keeping a URI's query string (its options) at the end."""
    if "://" not in storage:
        return str(Path(storage, *parts))
    url = urlsplit(storage)
    return urlunsplit(url._replace(path="/".join([url.path.rstrip("/"), *parts])))


def write_whole(fs, path: str, data: bytes) -> None:
    """Write a file on a pyarrow filesystem so that a reader finds it whole or not at all: under
    a temporary name, then renamed. A process killed mid-write leaves only the temporary file;
    the file's earlier content, if any, stays as it was."""
    directory, name = path.rsplit("/", 1)
    temporary = f"{directory}/.raysweep-tmp-{name}"
    with fs.open_output_stream(temporary) as f:
        f.write(data)
    fs.move(temporary, path)
