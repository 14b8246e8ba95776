"""`raysweep search --resume`: continue a search whose driver died, or extend a finished one.

A search is a series of Tune experiments ("rounds") under its storage: `NAME`, then `NAME+1`,
`NAME+2`, ... for each `--samples +N`. Tune resumes a round's unfinished trials from their
checkpoints; raysweep adds what Tune does not keep:

* the trial book (every trial's MLflow run, logged epochs and history), saved by Tune with
  its experiment state (`TrialBook.get_state`), so MLflow runs are reused, never duplicated;
* ASHA's rungs, which Tune does not save: they are rebuilt from the trials' histories, so
  the stopping decisions made before the restart stand and later ones see the same peers;
* the sampler's history across rounds: Optuna is told every earlier trial's config and value
  (Ray Tune cannot add samples to a finished experiment: ray-project/ray#20886, #42221);
  each round samples with its own seed (space.round_seed), so none replays an earlier one's draws.

Every round searches the same space: a spec whose `space` changed is refused (`check_resume`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .book import RUNNING, TrialRecord
from .space import optuna_space
from .errors import RunFailed, SpecError
from .spec import Spec, resume_fixed
from .storage import filesystem, join, write_whole


def round_name(name: str, k: int) -> str:
    return name if k == 0 else f"{name}+{k}"


@dataclass
class Previous:
    """The latest round of an earlier search under the same name and storage."""

    path: str  # its Tune experiment directory (or URI)
    round: int
    book_state: dict[str, Any] | None  # None: the driver died before Tune first saved its state
    mended: list[str] = field(default_factory=list)  # saved state files put back (mend_saved_state)
    retrains: list[str] = field(default_factory=list)  # its retraining rounds' experiments (confirm, audit)

    @cached_property  # one read of each saved state, before Tune restores the round
    def unfinished(self) -> set[str]:
        """The trials Tune's saved states of the round and its retraining rounds hold unfinished:
        restored, Tune starts or continues each, the ones it saved before they started too."""
        from .ray_internals import unfinished_trial_ids

        return {trial_id for p in (self.path, *self.retrains) if can_restore(p) for trial_id in unfinished_trial_ids(p)}

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self.book_state["records"] if self.book_state else {}

    @cached_property  # one look at the storage (an S3 request) for the checks that ask
    def concluded(self) -> bool:
        """Its last steps (test evaluation, model, summary) ran after its trials (`mark_concluded`)."""
        import pyarrow.fs

        fs, root = filesystem(self.path)
        return fs.get_file_info(f"{root}/{CONCLUDED}").type != pyarrow.fs.FileType.NotFound

    @property
    def finished(self) -> bool:
        """Every trial the search meant to run has ended (so `--resume` alone has nothing to do):
        it concluded (a budget's end, too many failures), or every trial it meant to run ended."""
        if self.concluded:
            return True
        state = self.book_state
        enough = state and (state["target"] is None or len(state["records"]) >= state["target"])
        return bool(enough) and all(r.status != RUNNING for r in state["records"].values())


# Written in a round's directory once the search's last steps ran: a round whose trials all
# ended without it (an error after them, a Ctrl-C during them) is finished by `--resume`.
CONCLUDED = "raysweep-concluded"
# ... and beside it the book as the search ended. Tune saved its last one before the search
# settled the trials a budget (or too many failures) cut off: in it they are still running.
CONCLUDED_BOOK = "raysweep-concluded-book.pkl"


def mark_concluded(path: str, book_state: dict[str, Any]) -> None:
    from ray import cloudpickle

    fs, root = filesystem(path)
    # Whole or not at all: `--resume` reads the book, and takes the marker to mean the search ended.
    write_whole(fs, f"{root}/{CONCLUDED_BOOK}", cloudpickle.dumps(book_state))
    write_whole(fs, f"{root}/{CONCLUDED}", b"the search's last steps ran\n")


def can_restore(path: str) -> bool:
    """Whether Tune saved an experiment there (its tuner.pkl)."""
    from ray import tune

    return tune.Tuner.can_restore(path)


def find_previous(storage: str, name: str) -> Previous | None:
    latest = None
    while can_restore(join(storage, round_name(name, 0 if latest is None else latest + 1))):
        latest = 0 if latest is None else latest + 1
    if latest is None:
        return None
    path = join(storage, round_name(name, latest))
    retrains = [join(storage, retrain_name(round_name(name, latest), label)) for label in RETRAIN_LABELS]
    # Before anything reads the round's saved state (the book, the searched space, Tune).
    mended = [line for p in (path, *retrains) for line in mend_saved_state(p)]
    return Previous(path, latest, _book_state(storage, round_name(name, latest)), mended, retrains)


def _whole(data: bytes) -> bool:
    """Whether a state file Tune saved is complete: a pickle whose opcodes run to its STOP (read,
    never unpickled), or JSON that parses. By content: the search generator's "*.json" is a pickle."""
    import json
    import pickletools

    try:
        if data.startswith(b"\x80"):  # the PROTO opcode every pickle of protocol 2 and later starts with
            for _ in pickletools.genops(data):
                pass
        else:
            json.loads(data)
    except ValueError:  # json's JSONDecodeError, or "pickle exhausted before seeing STOP"
        return False
    return True


def mend_saved_state(path: str) -> list[str]:
    """Put back a state file of the experiment that a killed driver left cut short on storage.

    Tune copies its staged state to storage by rewriting each file in place
    (ray_internals.TUNE_STATE_PREFIX): killed mid-copy, the driver leaves a file cut short, and
    Tune cannot restore the experiment. The staged copy the driver wrote, on its machine, is
    whole: its files of that session are copied back, the newest state as one (a file on
    storage may be a save older than the rest). Returns a line for each file put back; a
    RunFailed when the newest state is cut short and no whole copy is left. Nothing to do (and
    one listing of storage) when the state is whole."""
    import pyarrow.fs

    from .ray_internals import TUNE_STATE_PREFIX, driver_staging_copies

    fs, root = filesystem(path)
    files = {f.base_name: f.path for f in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
             if f.type == pyarrow.fs.FileType.File}
    states = sorted(n for n in files if n.startswith(TUNE_STATE_PREFIX) and n.endswith(".json"))
    if not states:
        return []
    session = states[-1].removeprefix(TUNE_STATE_PREFIX).removesuffix(".json")
    # The newest session's files, and the tuner (written once, at the experiment's start).
    ours = [n for n in files if n == "tuner.pkl" or n.endswith((f"-{session}.json", f"-{session}.pkl"))]

    def read(location: str) -> bytes:
        with fs.open_input_stream(location) as f:
            return f.readall()

    broken = [n for n in ours if not _whole(read(files[n]))]
    if not broken:
        return []
    name = root.rstrip("/").rsplit("/", 1)[-1]
    for staging in driver_staging_copies(name, states[-1]):
        copies = {n: Path(staging, n).read_bytes() for n in ours if Path(staging, n).is_file()}
        if set(broken) <= set(copies) and all(_whole(data) for data in copies.values()):
            for n, data in sorted(copies.items()):
                write_whole(fs, files[n], data)  # a kill now leaves the file as it was
            return [f"{path}: {n} was cut short when the driver was killed; put back from the driver's copy "
                    f"in {staging}" for n in sorted(broken)]
    raise RunFailed(
        f"--resume: Tune's saved state {files[broken[0]]} was cut short when the driver was killed, and no whole "
        "copy is left on this machine (Ray's session directory, where the driver staged it): the search cannot "
        "continue; its MLflow runs are kept: start it again under another --name")


def _newest_state(path: str, prefix: str) -> Any:
    """The newest `<prefix>*.pkl` Tune saved in the experiment's directory, unpickled (None: none,
    or no such directory)."""
    import pyarrow.fs
    from ray import cloudpickle

    fs, root = filesystem(path)
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    states = sorted(f.path for f in found if f.base_name.startswith(prefix) and f.base_name.endswith(".pkl"))
    if not states:
        return None
    with fs.open_input_stream(states[-1]) as f:
        return cloudpickle.loads(f.readall())


# A round's further Tune experiments, after its own: search.confirm's runs, scheduler.audit's
# (tuner.build_tuner names them NAME-<label>).
RETRAIN_LABELS = ("confirm", "audit")


def retrain_name(round_name: str, label: str) -> str:
    """The name of a round's retraining experiment."""
    return f"{round_name}-{label}"


def _book_state(storage: str, round_: str) -> dict[str, Any] | None:
    """The trial book saved last in the round: by Tune with each of the round's experiments
    (callback 0 of its newest state), or by the search as it concluded (`mark_concluded`). The
    book is one object for all of them, so the latest holds the confirming and audit runs too,
    and its `elapsed` says which that is."""
    path = join(storage, round_)
    books = [states.get(0) for p in (path, *(join(storage, retrain_name(round_, label)) for label in RETRAIN_LABELS))
             if (states := _newest_state(p, "callback-states-"))]
    books = [b for b in [*books, _newest_state(path, CONCLUDED_BOOK)] if b]
    return max(books, key=lambda b: b.get("elapsed", 0.0)) if books else None


def _searched_space(path: str) -> dict[str, Any] | None:
    """The Optuna distributions the round's sampler drew from (None: Tune saved no searcher).

    The source for "did the space change": the searcher's own saved state (OptunaSearch's
    `__dict__`, `_space` a private attribute of Ray 2.60) holds exactly what was searched:
    ranges, log scales, steps and choices. The trials' configs would show added or removed
    keys but not a range changed around the values drawn so far; the book state keeps no spec.
    """
    state = _newest_state(path, "searcher-state-")
    return state.get("_space") if isinstance(state, dict) else None


def check_resume(previous: Previous | None, spec: Spec, storage: str, more: int | None) -> None:
    """A `SpecError` (exit 2, before Ray starts) when `--resume` can't do what was asked."""
    if previous is None:
        raise SpecError(f"--resume: no search {spec.name!r} under {storage} (same --name and --storage as before?)")
    if more is None and previous.finished and previous.concluded:
        raise SpecError(
            f"--resume: search {spec.name!r} already ran all its {len(previous.records)} trials; "
            "run more with --resume --samples +N"
        )
    if more is not None and not previous.finished:
        raise SpecError(f"--samples +{more}: search {spec.name!r} has unfinished trials; finish it first with --resume")
    _check_space(previous, spec)
    _check_settings(previous, spec)


def _check_settings(previous: Previous, spec: Spec) -> None:
    """Refuse a changed setting of spec.RESUME_FIXED (max_epochs, the metric, the scheduler,
    ...): the trials already run were trained, stopped and ranked by the old one. Tried: a
    search of 30-epoch FIFO trials killed and resumed with `max_epochs=10` and ASHA ended with
    trials of 1 to 23 epochs under a parent run saying 30 and FIFO."""
    before = (previous.book_state or {}).get("settings")
    if before is None:  # a book saved before raysweep kept them, or none saved
        return
    now = resume_fixed(spec)
    changed = [f"{key} ({before[key]}, now {now[key]})" for key in now if key in before and before[key] != now[key]]
    if changed:
        raise SpecError(
            f"--resume: {', '.join(changed)} changed since search {spec.name!r} ran; the trials so far were "
            f"trained, stopped and ranked by {'it: put it' if len(changed) == 1 else 'them: put them'} back, "
            "or start a new search under another name"
        )


def _check_space(previous: Previous, spec: Spec) -> None:
    """Refuse a changed `space`: earlier trials' configs would not fit the new distributions
    (Optuna rejects them from its history), and a restored round keeps sampling the old space."""
    before = _searched_space(previous.path)
    if before is None:  # no searcher state saved: nothing to compare with
        return
    now = optuna_space(spec)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise SpecError(
            f"--resume: {', '.join('space.' + k for k in changed)} changed since search {spec.name!r} ran; "
            "every round of a search samples the same space: put it back, or start a new search under another name"
        )


def refill_checkpoints(path: str) -> list[str]:
    """Give each unfinished trial of a Tune experiment the checkpoints Tune will look for.

    Tune deletes a trial's checkpoints beyond `checkpoint.keep` as it registers new ones, and
    the experiment state it saved (copied to storage in the background) lags by a few: a driver
    killed then leaves a state naming checkpoints that are gone. Tune fails a trial whose latest
    is gone on `--resume` ("Could not recover from checkpoint as it does not exist on storage
    anymore"), and logs a traceback when it cannot delete an older one it kept.
    A missing latest is refilled from the trial's next checkpoint on storage (its deletion means
    a newer one was registered, so complete), and the trial continues from that later epoch or
    its newest whole checkpoint after it (`TrainContext.resume_state`), reporting the epochs
    again first (statefile.REPORT_AGAIN_FILE: the dead driver may never have recorded them);
    a missing older one becomes an empty directory, for Tune to delete (it never loads one).
    Returns a line for each latest checkpoint refilled."""
    import pyarrow.fs

    from .ray_internals import unfinished_checkpoints
    from .statefile import REPORT_AGAIN_FILE, checkpoint_dirs, report_again_marker

    fs, root = filesystem(path)
    refilled = []
    for trial_dir, (kept, latest, recorded) in unfinished_checkpoints(path).items():
        here = {name for _, name in checkpoint_dirs(fs, f"{root}/{trial_dir}")}
        later = sorted(name for name in here if name > latest)
        if latest not in here and later:
            fs.create_dir(f"{root}/{trial_dir}/{latest}")
            pyarrow.fs.copy_files(f"{root}/{trial_dir}/{later[0]}", f"{root}/{trial_dir}/{latest}",
                                  source_filesystem=fs, destination_filesystem=fs)
            with fs.open_output_stream(f"{root}/{trial_dir}/{latest}/{REPORT_AGAIN_FILE}") as marker:
                # Tune may have deleted several after it: every epoch since the last recorded is said again.
                marker.write(report_again_marker(later[0], recorded))
            # Tune restores the trial from the copy; the trial itself goes on from the newest
            # whole one after it (context.TrainContext.resume_state).
            refilled.append(f"{trial_dir}: {latest} was deleted after Tune's last saved state; put back as "
                            f"a copy of {later[0]} (the trial goes on from its newest whole checkpoint, {later[-1]})")
        for name in set(kept) - here - {latest}:
            fs.create_dir(f"{root}/{trial_dir}/{name}")
    return refilled


def seed_asha(scheduler, records: dict[str, TrialRecord]) -> None:
    """Put earlier trials' values back into ASHA's rungs (Tune restores the scheduler empty).

    ASHA records a trial's value at the first report at or past each rung's epoch; the
    history holds every epoch's value, so the same value goes in (ray_internals.asha_rungs).
    """
    from .ray_internals import asha_rungs, asha_sign

    for milestone, recorded in asha_rungs(scheduler):
        for rec in records.values():
            value = next((v for _, epoch, v, _ in rec.history if epoch >= milestone and v is not None), None)
            if value is not None:
                recorded[rec.trial_id] = asha_sign(scheduler) * value
