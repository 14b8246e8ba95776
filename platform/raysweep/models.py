"""A trial's model state out of its checkpoint, for its test metrics and its logged model."""

from __future__ import annotations

from .statefile import load_state


def checkpoint_state(checkpoint) -> dict:
    """The state dict saved with a trial's Ray checkpoint (loaded with weights_only=True), for
    its test metrics and logged model: its `model` is the best epoch's weights when the loop
    kept them (`metric: val_loss_best`, loop.fit), else the checkpoint's own."""
    with checkpoint.as_directory() as directory:
        return best_epoch_state(load_state(directory))


def best_epoch_state(state: dict) -> dict:
    if "best_model" not in state:
        return state
    return {**state, "model": state["best_model"], "epoch": state["best_epoch"]}
