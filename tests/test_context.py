"""What a trial's context does between the task and Tune: asynchronous reports (`scheduler.report: async`)."""

from __future__ import annotations

import threading

import pytest

from raysweep.context import _PendingReport


def test_a_pending_report_lets_training_go_on_and_keeps_reports_in_order():
    pending, landed, cleaned = _PendingReport(), [], []
    driver = {1: threading.Event(), 2: threading.Event()}  # the driver taking epoch N's result

    def report(epoch):
        def send():
            driver[epoch].wait(10)
            landed.append(epoch)
        return send

    pending.send(report(1), after=lambda: cleaned.append(1))
    assert landed == []  # send returned while the report still waits on the driver
    driver[1].set()
    pending.send(report(2), after=lambda: cleaned.append(2))  # waits for epoch 1's first
    assert landed == [1] and cleaned == [1]
    driver[2].set()
    pending.wait()
    assert landed == [1, 2] and cleaned == [1, 2]


@pytest.mark.parametrize("error", [SystemExit(0), RuntimeError("storage unreachable")])
def test_a_stop_or_an_error_in_the_report_is_raised_where_the_next_epoch_reports(error):
    pending, cleaned = _PendingReport(), []

    def fails():
        raise error

    pending.send(fails, after=lambda: cleaned.append(1))
    with pytest.raises(type(error)) as raised:
        pending.send(lambda: None, after=lambda: None)  # the next epoch's report: not sent
    assert raised.value is error and cleaned == [1]
    pending.send(fails, after=lambda: None)
    pending.wait(raise_error=False)  # the trial's own error wins over the last report's


def test_a_trial_directory_made_while_it_is_listed_is_listed_again(tmp_path):
    """pyarrow lists a directory, and when that fails asks whether it exists: one made between
    the two (Tune's driver makes a trial's directory as the trial starts, while the trial looks
    in it for checkpoints) raised FileNotFoundError, and a starting trial failed. Here the
    directory is made at that moment: a filesystem that makes it, then fails as pyarrow did."""
    import pyarrow.fs

    from raysweep.statefile import checkpoint_dirs

    class MadeWhileListed:
        def __init__(self, made):
            self.local, self.made, self.raised = pyarrow.fs.LocalFileSystem(), made, False

        def get_file_info(self, selector):
            if not self.raised:
                self.raised = True
                self.made()
                raise FileNotFoundError(f"[Errno 2] Cannot list directory '{selector.base_dir}'. "
                                        "Detail: [errno 2] No such file or directory")
            return self.local.get_file_info(selector)

    trial_dir = tmp_path / "trial_a"
    assert checkpoint_dirs(MadeWhileListed(lambda: trial_dir.mkdir()), str(trial_dir)) == []
    made = lambda: (trial_dir / "checkpoint_000000").mkdir()  # noqa: E731 - and a checkpoint in it
    assert checkpoint_dirs(MadeWhileListed(made), str(trial_dir)) == [(0, "checkpoint_000000")]
    assert checkpoint_dirs(pyarrow.fs.LocalFileSystem(), str(tmp_path / "none")) == []  # not there: none


def test_a_trial_goes_on_from_its_newest_whole_checkpoint_on_storage_and_numbers_the_next_past_it(tmp_path,
                                                                                                 monkeypatch):
    """A driver killed after a trial's checkpoint reached storage, before Tune's saved state
    named it: `--resume` gives the trial an older checkpoint, or none (CI: a trial trained its
    first epoch twice). The trial goes on from the newest whole one instead, says its epoch
    again, skips one the kill cut short, and writes its next checkpoint past all of them."""
    from types import SimpleNamespace

    import pyarrow.fs

    from raysweep import ray_internals
    from raysweep.context import InProcessContext
    from raysweep.statefile import CHECKPOINT_FILE, save_state

    trial_dir = tmp_path / "trial_1"
    for index in range(4):
        (trial_dir / f"checkpoint_{index:06d}").mkdir(parents=True)
        save_state({"epoch": index + 1, "metrics": {"val_loss": 1.0 / (index + 1)}}, str(trial_dir / f"checkpoint_{index:06d}"))
    whole = (trial_dir / "checkpoint_000003" / CHECKPOINT_FILE).read_bytes()
    (trial_dir / "checkpoint_000003" / CHECKPOINT_FILE).write_bytes(whole[: len(whole) // 2])  # the kill mid-copy
    storage = SimpleNamespace(current_checkpoint_index=1)  # Tune's saved state: one checkpoint registered
    monkeypatch.setattr(ray_internals, "trial_storage", lambda: (pyarrow.fs.LocalFileSystem(), str(trial_dir), storage))

    def resumed(tune_latest: str | None) -> InProcessContext:
        from ray import tune

        ctx = InProcessContext(max_epochs=9, seed=0)
        monkeypatch.setattr(ctx, "_ray_checkpoint", lambda: tune_latest and tune.Checkpoint(str(trial_dir / tune_latest)))
        return ctx

    # The epochs after the one Tune's own checkpoint holds (it registered it) are said again.
    for tune_latest, recorded in ((None, 0), ("checkpoint_000000", 1)):
        ctx = resumed(tune_latest)
        assert ctx.resume_state["epoch"] == 3 and ctx.resume_unreported and ctx.epoch == 4
        assert ctx.resume_recorded_epoch == recorded
        assert storage.current_checkpoint_index == 4  # checkpoint_000003, cut short, is written over
    # Tune's latest is a later one `--resume` copied in place of one Tune deleted: the search
    # recorded what the marker says (the trial's last result in Tune's saved state: Tune may have
    # deleted several checkpoints after the missing one), or, by an older marker, the epoch before the copy's.
    from raysweep.statefile import REPORT_AGAIN_FILE, report_again_marker

    marker = trial_dir / "checkpoint_000001" / REPORT_AGAIN_FILE
    for content, recorded in ((report_again_marker("checkpoint_000001", 0), 0), ("a copy of checkpoint_000002", 1),
                              (None, 2)):
        marker.unlink(missing_ok=True)
        if content is not None:
            marker.write_bytes(content if isinstance(content, bytes) else content.encode())
        ctx = resumed("checkpoint_000001")
        assert ctx.resume_state["epoch"] == 3 and ctx.resume_recorded_epoch == recorded
    # Tune's latest is the newest on storage (as when nothing was lost): it is the one, as Tune said.
    ctx = resumed("checkpoint_000002")
    assert ctx.resume_state["epoch"] == 3 and not ctx.resume_unreported


def test_a_ray_train_trial_started_again_says_again_the_epochs_after_tunes_checkpoint(tmp_path):
    """A Ray Train trial resumes from Ray Train's newest checkpoint in its own run directory,
    which a killed driver may have outrun: MLflow lost the epochs still in its buffer (CI: a
    trial's history read epochs 1, 3, 4). In the trial's first process after --resume, the
    epochs after Tune's checkpoint (what the search recorded) are said again; in a fresh
    process, and after a restart inside the trial (the driver took every report), none."""
    from ray import tune

    from raysweep.context import RayContext
    from raysweep.loop import fit
    from raysweep.statefile import save_state
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0 / e, "val_loss_best": 1.0 / e} for e in (1, 2, 3)]
    save_state({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                "metrics": history[-1], "history": history}, str(tmp_path))

    class TrainWorker(RayContext):  # Ray Train's checkpoint, as ray.train.get_checkpoint() gives it
        def __init__(self, **kwargs):
            super().__init__(max_epochs=3, seed=0, **kwargs)
            self.said: list[int] = []

        def _ray_checkpoint(self):
            return tune.Checkpoint(str(tmp_path))

        def _ray_report(self, metrics, checkpoint_dir):
            self.said.append(metrics["epoch"])

    for recorded, said in ((None, [3]), (1, [2, 3]), (0, [1, 2, 3]), (7, [3])):
        ctx = TrainWorker(recorded_epoch=recorded)
        assert ctx.resume_state["epoch"] == 3
        assert ctx.resume_unreported == (recorded is not None)
        # At max_epochs: trains nothing, and says at least its checkpoint's epoch (else it would end short).
        fit(ctx, model, optimizer, batch_size=4)
        assert ctx.said == said, recorded


def test_a_tensor_or_numpy_metric_is_reported_as_a_python_number_and_a_whole_tensor_is_refused():
    import numpy as np
    import torch

    from raysweep.book import numeric_metrics
    from raysweep.context import LocalContext

    ctx = LocalContext(max_epochs=1, metric="val_loss")
    ctx.report({"val_loss": np.float32(0.25), "train_loss": torch.tensor(0.5), "seen": np.int64(3), "note": "x"})
    report = ctx.reports[-1]
    assert (report["val_loss"], report["train_loss"], report["seen"], report["note"]) == (0.25, 0.5, 3, "x")
    assert type(report["val_loss"]) is float and type(report["train_loss"]) is float and type(report["seen"]) is int
    with pytest.raises(TypeError, match=r"^ctx\.report\(\): val_loss is a tensor of shape \(2,\); report a number$"):
        ctx.report({"val_loss": torch.tensor([0.1, 0.2])})
    # A plain Ray Train loop's report reaches the book as it was sent: NumPy numbers count too.
    assert numeric_metrics({"val_loss": np.float32(0.5), "ok": True, "n": np.int64(2)}, set()) == {"val_loss": 0.5, "n": 2.0}


def test_sys_exit_in_a_task_is_an_error_of_its_trial():
    import sys

    from raysweep.errors import TaskExited
    from raysweep.trial import exit_is_an_error

    with pytest.raises(TaskExited, match=r"^the task called sys\.exit\(3\); a trial ends by returning") as caught:
        with exit_is_an_error():
            sys.exit(3)
    assert isinstance(caught.value.__cause__, SystemExit)


def test_a_task_that_returns_without_reporting_fails_saying_what_it_returned():
    from raysweep.context import LocalContext
    from raysweep.errors import MissingMetric
    from raysweep.tasks.base import FunctionTask
    from raysweep.trial import reported_or_raise

    def returns(config, ctx):  # as a Ray Tune function trainable may end
        return {"val_loss": 0.3}

    task, ctx = FunctionTask(returns), LocalContext(max_epochs=1, metric="val_loss")
    with pytest.raises(MissingMetric, match=r"^the task returned without calling ctx\.report\(\): report 'val_loss' "
                                            r"once per epoch \(it returned \{'val_loss': 0\.3\}: report that instead\)$"):
        reported_or_raise(ctx, task.train({}, ctx))
    ctx.report({"val_loss": 0.3})
    reported_or_raise(ctx, None)  # reported: nothing to say
    # Resumed from a checkpoint with no epoch left to train (its driver died as it ended): no report is due.
    reported_or_raise(LocalContext(max_epochs=1, metric="val_loss", resume={"epoch": 1}), None)


def test_a_checkpoint_that_would_not_load_back_is_refused_at_its_first_report():
    """An nn.Module or an optimizer itself saves fine and failed only when loaded
    (weights_only=True), at a resume or a restart: now the first report says so."""
    import torch

    from raysweep.context import LocalContext

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = LocalContext(max_epochs=2, metric="val_loss")
    with pytest.raises(TypeError, match=r"^ctx\.report\(checkpoint=\.\.\.\): model holds torch\.nn\.modules\.linear\.Linear, "
                                        r"which a checkpoint cannot \(it is loaded with weights_only=True\)"):
        ctx.report({"val_loss": 0.5}, checkpoint={"epoch": 1, "model": model})
    with pytest.raises(TypeError, match=r"^ctx\.report\(checkpoint=\.\.\.\): optimizer holds torch\.optim\.sgd\.SGD"):
        LocalContext(max_epochs=2, metric="val_loss").report(
            {"val_loss": 0.5}, checkpoint={"model": model.state_dict(), "optimizer": opt})
    ok = LocalContext(max_epochs=2, metric="val_loss")
    ok.report({"val_loss": 0.5}, checkpoint={"epoch": 1, "model": model.state_dict(), "optimizer": opt.state_dict()})
    assert ok.checkpoints[-1]["epoch"] == 1
