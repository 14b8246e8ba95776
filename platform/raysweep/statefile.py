"""A trial's state dict on disk: one file per checkpoint directory, loaded as data only."""

from __future__ import annotations

import json
import os
from typing import Any

CHECKPOINT_FILE = "state.pt"
# Beside the state of a checkpoint `--resume` put in place of one Tune deleted (resume.py,
# refill_checkpoints): the search may never have recorded that checkpoint's epoch, nor those
# before it back to the last one Tune's saved state had (JSON: `report_again_marker`).
REPORT_AGAIN_FILE = "raysweep-report-again"


def report_again_marker(copy_of: str, recorded_epoch: int | None) -> bytes:
    """REPORT_AGAIN_FILE's content: the checkpoint copied, and the last epoch the search recorded
    (the trial's last result in Tune's saved state; None: not known)."""
    return json.dumps({"copy_of": copy_of, "recorded_epoch": recorded_epoch}).encode()


def recorded_epoch(marker: str, epoch: int) -> int:
    """The last epoch the search recorded, by a REPORT_AGAIN_FILE beside the state of `epoch`:
    the one it names, else (a marker that names none, or one of an earlier release) the epoch
    before the copy's own."""
    try:
        named = json.loads(marker).get("recorded_epoch")
    except (ValueError, AttributeError):
        named = None
    return min(int(named), epoch - 1) if isinstance(named, (int, float)) else epoch - 1


def checkpoint_dirs(fs, directory: str) -> list[tuple[int, str]]:
    """The `checkpoint_<index>` directories Tune wrote in a trial's directory on a pyarrow
    filesystem, as (index, name), oldest first."""
    import pyarrow.fs

    selector = pyarrow.fs.FileSelector(directory, allow_not_found=True)
    try:
        found = fs.get_file_info(selector)
    except FileNotFoundError:
        # pyarrow lists the directory and, when that fails, asks whether it exists: a
        # directory made between the two raises ("Cannot list directory ... No such file or
        # directory"). Tune's driver makes a trial's directory on storage as the trial starts
        # (copying its params.json there), while the trial looks for checkpoints of its own in it:
        # a starting trial failed so, once in a 16-trial search. Listed again, it is there.
        found = fs.get_file_info(selector)
    names = [f.base_name for f in found if f.type == pyarrow.fs.FileType.Directory]
    return sorted((int(n.removeprefix("checkpoint_")), n) for n in names
                  if n.startswith("checkpoint_") and n.removeprefix("checkpoint_").isdigit())


def save_state(state: dict, directory: str) -> str:
    import torch  # here: the driver's MLflow spool imports this module before Ray starts (docs/design.md, point 38)

    path = os.path.join(directory, CHECKPOINT_FILE)
    torch.save(state, path)
    return path


def check_loadable(state: dict) -> None:
    """A TypeError naming the key whose value `load_state` would refuse (weights_only=True: an
    `nn.Module` or an optimizer itself, not its `state_dict()`, or any class of the user's),
    found by a round trip in memory. Called on a trial's first checkpoint: saved, such a state
    failed only when it was loaded, at a resume or a restart, as an UnpicklingError."""
    import io
    import pickle
    import re

    import torch

    def refusal(value: Any) -> str | None:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        buffer.seek(0)
        try:
            torch.load(buffer, weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            return found.group(1) if found else "an object it cannot load"
        return None

    what = refusal(state)
    if what is None:
        return
    # The first top-level key whose value alone is refused names the culprit, and its class.
    key, what = next(((k, r) for k, v in state.items() if (r := refusal(v)) is not None), ("the checkpoint", what))
    raise TypeError(f"ctx.report(checkpoint=...): {key} holds {what}, which a checkpoint cannot "
                    "(it is loaded with weights_only=True): tensors and plain data only, e.g. model.state_dict()")


def load_state(directory: str, map_location: Any = "cpu") -> dict:
    import torch

    # weights_only: a checkpoint is data, never code to execute.
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location=map_location, weights_only=True)
