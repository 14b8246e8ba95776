"""The spec's `data:` splits checked before anything runs: the files exist and read, the label
column or class folders are there, every split has a sample. No Ray: `raysweep validate`
runs it too, and a bad path fails in a second, not after Ray Train workers started.

Local paths, NFS paths and `s3://` URIs alike go through pyarrow's filesystems, which Ray
Data reads with as well (ingest.py).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError
from .spec import DataSection

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
EXTENSIONS = {"parquet": (".parquet",), "csv": (".csv",), "jsonl": (".jsonl", ".json"), "images": IMAGE_EXTENSIONS}
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """One split's files, as Ray Data reads them: a filesystem and paths on it."""

    key: str  # the spec key, e.g. "data.train"
    uri: str  # as the spec gave it
    filesystem: Any
    files: list[str]
    bytes: int = 0
    rows: int | None = None  # None: unknown until read (CSV, JSON lines)
    classes: list[str] = field(default_factory=list)  # images: class folders holding images


# What a CSV of another separator reads as: one column whose name holds the whole header.
_OTHER_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}


def separator_hint(columns) -> str:
    """A hint for a header read as one column ('a;b;c'): raysweep reads comma-separated CSV."""
    names = [str(c) for c in columns]
    sep = next((sep for sep in _OTHER_SEPARATORS if len(names) == 1 and sep in names[0]), None)
    if sep is None:
        return ""
    return (f"; the header is one column: the file looks {_OTHER_SEPARATORS[sep]}-separated, and CSV files "
            f"are read comma-separated: convert it (pandas.read_csv(path, sep={sep!r}).to_csv(new_path, index=False))")


def location(uri: str) -> str:
    """A relative local path as an absolute one (trial processes run elsewhere); URIs as given."""
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def _filesystem(key: str, uri: str):
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(location(uri))
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SpecError(f"{key}: cannot open {uri!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def list_split(key: str, uri: str, fmt: str) -> Split:
    """The split's files: the file itself, or every file of the format under the directory."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(key, uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise SpecError(f"{key}: {uri} does not exist")
        if info.type == pafs.FileType.File:
            if fmt == "images":
                raise SpecError(f"{key}: {uri} is a file; format images reads a folder with one subfolder per class")
            infos = [info]
        else:
            infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                     if i.type == pafs.FileType.File and not posixpath.basename(i.path).startswith((".", "_"))]
    except SpecError:
        raise
    except OSError as exc:  # permissions, an unreachable S3 endpoint, a missing bucket
        raise SpecError(f"{key}: cannot read {uri}: {_first_line(exc)}") from None
    wanted = [i for i in infos if i.path.lower().endswith(EXTENSIONS[fmt])]
    if not wanted:
        kinds = "/".join(EXTENSIONS[fmt])
        raise SpecError(f"{key}: no {kinds} files in {uri} (format: {fmt})")
    return Split(key, uri, fs, sorted(i.path for i in wanted), sum(i.size or 0 for i in wanted))


def _image_classes(split: Split) -> None:
    """images: each file's class is its folder's name, one level under the split's root."""
    _, root = _filesystem(split.key, split.uri)
    root = root.rstrip("/")
    classes, stray = set(), []
    for path in split.files:
        parent = posixpath.dirname(path)
        if posixpath.dirname(parent) != root:
            stray.append(path)
        else:
            classes.add(posixpath.basename(parent))
    if stray:
        where = posixpath.relpath(stray[0], root)
        raise SpecError(f"{split.key}: {where} is not in a class folder (format images: "
                        f"{split.uri}/<class>/<image>, one folder per class)")
    split.classes = sorted(classes)
    split.rows = len(split.files)


def _first_image(split: Split) -> tuple[int, int, str]:
    from PIL import Image, UnidentifiedImageError

    path = split.files[0]
    try:
        with split.filesystem.open_input_file(path) as f, Image.open(f) as image:
            image.load()
            return image.width, image.height, image.mode
    except (OSError, UnidentifiedImageError) as exc:
        raise SpecError(f"{split.key}: cannot decode image {path}: {_first_line(exc)}") from None


def _columns(split: Split, fmt: str) -> tuple[list[str], dict[str, str]]:
    """Column names and a kind for each ("number", "list", "text", ...) from the first file;
    counts rows where the format says (Parquet footers)."""
    import pyarrow as pa

    path = split.files[0]
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            rows = 0
            for file in split.files:
                with split.filesystem.open_input_file(file) as f:
                    meta = pq.ParquetFile(f).metadata
                    rows += meta.num_rows
                    if file == path:
                        schema = meta.schema.to_arrow_schema()
            split.rows = rows
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            with split.filesystem.open_input_stream(path) as f:
                reader = pacsv.open_csv(f)
                schema = reader.schema
                try:
                    reader.read_next_batch()
                except StopIteration:
                    raise SpecError(f"{split.key}: {path} has a header but no rows") from None
        else:  # jsonl: the first line's object
            with split.filesystem.open_input_stream(path) as f:
                line = f.read(1 << 20).split(b"\n", 1)[0]  # pyarrow's streams have no readline
            try:
                obj = json.loads(line or b"null")
            except ValueError as exc:
                raise SpecError(f"{split.key}: {path} line 1 is not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise SpecError(f"{split.key}: {path} line 1 is not a JSON object (JSON lines: one object per line)")
            schema = pa.Table.from_pylist([obj]).schema
    except SpecError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise SpecError(f"{split.key}: cannot read {path} as {fmt}: {_first_line(exc)}") from None
    kinds = {}
    for f in schema:
        t = f.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            kinds[f.name] = "number"
        elif (pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)) and \
                (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
            kinds[f.name] = "list"
        else:
            kinds[f.name] = str(t)
    return list(schema.names), kinds


def check_data(section: DataSection) -> dict:
    """Check every split of a `data:` section; what they hold, for the task and ingest.

    Returns the data info (JSON-able): format, per-split rows (None if unknown before a
    full read) and bytes, and: images: classes and input_shape [C, H, W]; tabular formats:
    features and their kinds. A problem raises `SpecError` naming the key.
    """
    fmt = section.format
    splits = {name: list_split(f"data.{name}", uri, fmt)
              for name in SPLITS if (uri := getattr(section, name)) is not None}
    info: dict[str, Any] = {"format": fmt, "splits": {}}
    if fmt == "images":
        for split in splits.values():
            _image_classes(split)
        train_classes = splits["train"].classes
        if len(train_classes) < 2:
            raise SpecError(f"data.train: {section.train} has {len(train_classes)} class folder(s) with images; "
                            "classification needs at least 2")
        for split in splits.values():
            unknown = sorted(set(split.classes) - set(train_classes))
            if unknown:
                raise SpecError(f"{split.key}: class folder {unknown[0]!r} is not among data.train's "
                                f"({', '.join(train_classes[:10])}{', ...' if len(train_classes) > 10 else ''})")
        width, height, _ = _first_image(splits["train"])
        size = (section.image_size, section.image_size) if section.image_size else (height, width)
        channels = 3 if section.image_mode == "RGB" else 1
        info.update(classes=train_classes, input_shape=[channels, *size])
    else:
        columns, kinds = _columns(splits["train"], fmt)
        if section.label not in columns:
            shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
            raise SpecError(f"data.label: no column {section.label!r} in {splits['train'].files[0]} (columns: {shown})"
                            + separator_hint(columns))
        features = section.features or [c for c in columns if c != section.label]
        for name in features:
            if name not in columns:
                raise SpecError(f"data.features: no column {name!r} in {splits['train'].files[0]}")
            if kinds[name] not in ("number", "list"):
                raise SpecError(f"data.features: column {name!r} is {kinds[name]}, not numbers; "
                                "encode it as numbers or leave it out of data.features")
        if not features:
            raise SpecError(f"data.features: {splits['train'].files[0]} has no column besides the label")
        for split in list(splits.values())[1:]:
            other, _ = _columns(split, fmt)
            missing = [c for c in [section.label, *features] if c not in other]
            if missing:
                raise SpecError(f"{split.key}: no column {missing[0]!r} in {split.files[0]} (data.train has it)")
        info.update(features=features, kinds={n: kinds[n] for n in features})
    for name, split in splits.items():
        if split.rows == 0:
            raise SpecError(f"{split.key}: {split.uri} holds no rows")
        info["splits"][name] = {"files": len(split.files), "bytes": split.bytes, "rows": split.rows}
    return info
