"""Where a search keeps Ray's results and checkpoints: a local directory or a URI.

A URI is anything pyarrow opens (`s3://bucket/path`, `gs://...`), with pyarrow's options in
its query string, e.g. `s3://bucket/path?endpoint_override=minio:9000&scheme=http` for an
S3-compatible server. A cluster of several nodes needs one every node reaches.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_STORAGE = "./raysweep_results"


def filesystem(location: str):
    """(pyarrow filesystem, path on it) of a directory or URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location) if "://" in location else (pyarrow.fs.LocalFileSystem(), location)


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
