"""One driver per search: a search's directory names the driver running it, and a new search
under a name already used keeps the earlier one's files, moved aside.

Two drivers of one search (the same command in a second terminal, a `--resume` while the search
still runs) wrote into one Tune experiment: trial directories and saved states mixed, the
earlier search's end marker kept, so a later `--resume` refused a search that had not finished
("already ran all its trials"). Here a driver writes `raysweep-driver.json` into the search's
directory and deletes it as it ends; another driver of that search refuses to start while the
process it names runs. A new search (no `--resume`) of a name used before under the same
storage moves the earlier search's directories (its rounds, confirm and audit runs) into
`NAME~<time>/`: nothing is lost, and `--resume` continues the newest (docs/concepts.md, Resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .errors import SpecError
from .redact import redact
from .storage import filesystem, join, reason, unusable, write_whole

HOLDER_FILE = "raysweep-driver.json"


def _stat(pid: int) -> list[str] | None:
    """Process `pid`'s fields in Linux's /proc after its name (state first); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int, fields: list[str] | None = None) -> float | None:
    """When process `pid` started (clock ticks after boot; `fields`: its _stat, if read); None where unknown."""
    fields = fields or _stat(pid)
    try:
        return float(fields[19]) if fields else None  # field 22 of the line
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """The driver running a search: where, which process, since when."""

    host: str
    pid: int
    started: float  # time.time() when it took the search
    process_started: float | None  # the process's own start (_process_start), against a pid reused

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.time(), _process_start(os.getpid()))

    def running(self) -> bool | None:
        """Whether its process still runs; None on another machine (it cannot be told)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: running
            pass
        fields = _stat(self.pid)
        if fields and fields[0] == "Z":  # killed, not yet reaped by its parent: dead
            return False
        now = _process_start(self.pid, fields)
        return None in (now, self.process_started) or now == self.process_started

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, since {since}"


def _read(fs, path: str) -> Holder | None:
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    try:
        with fs.open_input_stream(path) as f:
            return Holder(**json.loads(f.readall()))
    except (ValueError, TypeError):  # not a holder file raysweep wrote: nobody's
        return None


def earlier_dirs(fs, root: str, name: str) -> list[str]:
    """The directories of a search named `name` under a storage: its rounds (`NAME`, `NAME+1`,
    ...) and their confirm and audit runs (resume.retrain_name)."""
    import pyarrow.fs

    from .resume import RETRAIN_LABELS

    pattern = re.compile(re.escape(name) + r"(\+\d+)?(-(" + "|".join(RETRAIN_LABELS) + r"))?")
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return sorted(f.base_name for f in found if f.type == pyarrow.fs.FileType.Directory and pattern.fullmatch(f.base_name))


def _used(fs, root: str, dirs: list[str]) -> bool:
    """Whether a search ran in `dirs` (one of them holds more than a driver's holder file)."""
    import pyarrow.fs

    for directory in dirs:
        entries = fs.get_file_info(pyarrow.fs.FileSelector(f"{root}/{directory}", allow_not_found=True))
        if any(f.base_name != HOLDER_FILE for f in entries):
            return True
    return False


def _move_aside(fs, root: str, storage: str, name: str, dirs: list[str], tracking_uri: str | None,
                say: Callable[[str], None]) -> None:
    from .tracking.spool import Spool

    where = redact(join(storage, name))
    if "://" in storage:  # a move on object storage copies every object: the user's call
        raise SpecError(f"search {name!r} ran before under {redact(storage)}: continue it with --resume (--resume "
                        f"--samples +N runs more), start another with --set name=..., or delete {where} to start over")
    spool = Spool(storage, name)
    if spool.pending():  # moved, `raysweep sync NAME` would no longer find it
        send = spool.sync_command(tracking_uri) if tracking_uri else f"raysweep sync {name} --storage ... --tracking-uri ..."
        raise SpecError(f"search {name!r} under {redact(storage)} still holds MLflow writes an outage kept "
                        f"({spool.path}): send them first with `{send}`")
    aside = f"{name}~{time.strftime('%Y%m%d-%H%M%S')}"
    fs.create_dir(f"{root}/{aside}")
    for directory in dirs:
        fs.move(f"{root}/{directory}", f"{root}/{aside}/{directory}")
    say(f"search {name!r} ran before under {redact(storage)}: its files are kept in {redact(join(storage, aside))}; "
        "this search starts afresh (--resume continues the newest search of a name)")


@contextlib.contextmanager
def hold(storage: str, name: str, *, resume: bool, tracking_uri: str | None = None,
         say: Callable[[str], None] = print) -> Iterator[None]:
    """Run the search `name` under `storage` as its one driver (module docstring): a SpecError
    (exit 2, before Ray starts) while another driver runs it; without `resume`, an earlier
    search of that name moved aside first. The holder file goes when the block ends, however."""
    import pyarrow.fs

    try:
        fs, root = filesystem(storage)
        path = f"{root}/{name}/{HOLDER_FILE}"
        holder = _read(fs, path)
    except (OSError, ValueError) as exc:  # a scheme pyarrow lacks, a bucket unreachable or refused
        raise unusable(storage, exc) from None
    if holder is not None:
        running = holder.running()
        if running is not False:
            state = "is running" if running else "may be running (on another machine: it cannot be told)"
            unknown = f" (if it is not running, delete {redact(join(storage, name, HOLDER_FILE))})"
            raise SpecError(f"search {name!r} under {redact(storage)} {state}: {holder.describe()}; wait for it or "
                            f"stop it, or start another with --set name=...{'' if running else unknown}")
    if not resume and _used(fs, root, dirs := earlier_dirs(fs, root, name)):
        _move_aside(fs, root, storage, name, dirs, tracking_uri, say)
    me = Holder.this_process()
    directory = f"{root}/{name}"
    try:
        created = fs.get_file_info(directory).type == pyarrow.fs.FileType.NotFound
        fs.create_dir(directory)
        write_whole(fs, path, json.dumps(asdict(me)).encode())
    except OSError as exc:  # under a file, read-only, full: one line, before Ray starts
        raise SpecError(f"--storage: cannot write {redact(join(storage, name))}: {reason(exc)}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # storage gone meanwhile: the next driver finds the pid dead
            if _read(fs, path) == me:
                fs.delete_file(path)
            # A search refused before it ran (a cluster that can never hold a trial) leaves nothing.
            if created and not fs.get_file_info(pyarrow.fs.FileSelector(directory, allow_not_found=True)):
                fs.delete_dir(directory)
