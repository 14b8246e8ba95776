"""The shared fit loop, driven through `LocalContext`: the real loop, outside Ray."""

from __future__ import annotations

import pytest
import torch

from raysweep.context import LocalContext
from raysweep.models import best_epoch_state
from raysweep.tasks.digits import DigitsCNN, DigitsMLP
from raysweep.spec import validate
from raysweep.trial import context_kwargs
from tests.conftest import make_raw


COST_KEYS = {"samples", "samples_per_s", "flops", "peak_host_mem_mb", "energy_j", "co2e_kg"}  # and cost_*: cost.py
CONFIG = {"lr": 1e-2, "batch_size": 64, "hidden": 32, "dropout": 0.0}


@pytest.mark.parametrize("task", [DigitsMLP(), DigitsCNN()], ids=["mlp", "cnn"])
def test_reports_the_metric_contract_every_epoch(task):
    ctx = LocalContext(max_epochs=3, seed=0, metric="val_loss")
    task.train({**CONFIG, "channels": 8}, ctx)
    assert [r["epoch"] for r in ctx.reports] == [1, 2, 3]
    for r in ctx.reports:
        task_keys = {k for k in r if not k.startswith("cost_") and k not in COST_KEYS}
        assert task_keys == {"train_loss", "val_loss", "val_loss_best", "val_accuracy", "epoch", "epoch_time_s"}
    # val_loss_best: the running minimum of val_loss
    running = [min(r["val_loss"] for r in ctx.reports[: i + 1]) for i in range(len(ctx.reports))]
    assert [r["val_loss_best"] for r in ctx.reports] == running
    assert ctx.reports[-1]["val_loss"] < ctx.reports[0]["val_loss"]
    assert ctx.reports[-1]["val_accuracy"] > 0.85


def test_checkpoints_every_k_epochs_and_always_the_last():
    ctx = LocalContext(max_epochs=5, seed=0, checkpoint_every=2)
    DigitsMLP().train(CONFIG, ctx)
    assert [c["epoch"] for c in ctx.checkpoints] == [2, 4, 5]


def test_the_epochs_asha_may_stop_a_trial_at_always_save():
    # A trial ASHA stops after epoch 3 (a rung) must have epoch 3's model, the one of the value
    # it was ranked by, not epoch 2's (trial.context_kwargs gives the spec's rungs).
    ctx = LocalContext(max_epochs=7, seed=0, checkpoint_every=4, checkpoint_epochs=(1, 3))
    DigitsMLP().train(CONFIG, ctx)
    assert [c["epoch"] for c in ctx.checkpoints] == [1, 3, 4, 7]
    spec = validate(make_raw(**{"max_epochs": 20, "checkpoint.every": 5}))
    assert context_kwargs(spec)["checkpoint_epochs"] == (1, 3, 9)  # grace 1, rf 3
    fifo = validate(make_raw(**{"max_epochs": 20, "checkpoint.every": 5, "scheduler.type": "fifo"}))
    assert context_kwargs(fifo)["checkpoint_epochs"] == ()  # nothing stops a trial early


def test_resume_continues_exactly_where_the_checkpoint_left_off():
    full = LocalContext(max_epochs=4, seed=0)
    DigitsMLP().train(CONFIG, full)
    first = LocalContext(max_epochs=2, seed=0)
    DigitsMLP().train(CONFIG, first)
    resumed = LocalContext(max_epochs=4, seed=0, resume=first.checkpoints[-1])
    DigitsMLP().train(CONFIG, resumed)
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    assert resumed.reports[-1]["val_loss"] == pytest.approx(full.reports[-1]["val_loss"], rel=1e-5)
    assert resumed.reports[-1]["val_loss_best"] == pytest.approx(full.reports[-1]["val_loss_best"], rel=1e-5)


def test_resumed_from_its_last_epochs_checkpoint_a_trial_reports_that_epoch_again():
    """Trained and saved to max_epochs, its last report lost (a killed driver; --resume from a
    later checkpoint than Tune's state names): it says that epoch again, and trains nothing."""
    done = LocalContext(max_epochs=3, seed=0)
    DigitsMLP().train(CONFIG, done)
    resumed = LocalContext(max_epochs=3, seed=0, resume=done.checkpoints[-1])
    DigitsMLP().train(CONFIG, resumed)
    assert [r["epoch"] for r in resumed.reports] == [3] and resumed.checkpoints == []
    assert resumed.reports[0]["val_loss"] == done.reports[-1]["val_loss"]


def test_resumed_from_a_checkpoint_the_search_may_not_have_recorded_a_trial_reports_it_then_trains_on():
    """--resume put a later checkpoint in place of one Tune deleted (resume.refill_checkpoints):
    its epoch's report may have died with the driver, so it is said again, and the epochs after
    it train as they would have (the re-report is not counted as an epoch of the new process)."""
    full = LocalContext(max_epochs=4, seed=0)
    DigitsMLP().train(CONFIG, full)
    first = LocalContext(max_epochs=2, seed=0)
    DigitsMLP().train(CONFIG, first)
    resumed = LocalContext(max_epochs=4, seed=0, resume=first.checkpoints[-1])
    resumed.resume_unreported = True
    DigitsMLP().train(CONFIG, resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3, 4] and resumed.epoch == 5
    assert resumed.reports[0]["val_loss"] == first.reports[-1]["val_loss"]
    assert [c["epoch"] for c in resumed.checkpoints] == [3, 4]
    assert resumed.reports[-1]["val_loss"] == pytest.approx(full.reports[-1]["val_loss"], rel=1e-5)


def test_resumed_past_epochs_the_search_may_not_have_recorded_a_trial_reports_each_of_them_again():
    """A killed driver recorded epoch 1; the trial's checkpoints of epochs 2 and 3 reached
    storage after (context.RayContext.resume_state goes on from epoch 3): epochs 2 and 3 are
    said again, from the metrics each checkpoint carries, then epoch 4 trains. (Only epoch 3's,
    MLflow's run had a hole at epoch 2: seen by hand with two kills in a 12-epoch search.)"""
    first = LocalContext(max_epochs=3, seed=0)
    DigitsMLP().train(CONFIG, first)
    resumed = LocalContext(max_epochs=4, seed=0, resume=first.checkpoints[-1])
    resumed.resume_unreported, resumed.resume_recorded_epoch = True, 1
    DigitsMLP().train(CONFIG, resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3, 4] and resumed.epoch == 5
    assert [r["val_loss"] for r in resumed.reports[:2]] == [r["val_loss"] for r in first.reports[1:]]
    assert [len(c["history"]) for c in resumed.checkpoints] == [4]


def test_a_report_without_the_specs_metric_is_refused():
    ctx = LocalContext(max_epochs=1, seed=0, metric="val_f1")
    with pytest.raises(KeyError, match="got no 'val_f1'"):
        DigitsMLP().train(CONFIG, ctx)


def test_every_objective_must_be_reported_by_the_task_or_the_meter():
    ctx = LocalContext(max_epochs=1, seed=0, metric="val_loss", objectives=("val_loss", "cost_usd"))
    DigitsMLP().train(CONFIG, ctx)  # cost_usd: the meter's
    assert "cost_usd" in ctx.reports[-1]
    ctx = LocalContext(max_epochs=1, seed=0, metric="val_loss", objectives=("val_loss", "n_params"))
    with pytest.raises(KeyError, match="got no 'n_params', one of the spec's objectives") as refused:
        DigitsMLP().train(CONFIG, ctx)
    listed = str(refused.value).split("(reported: ")[1]
    assert "val_loss" in listed and "cost_usd" in listed and "cost_segment" not in listed  # not the ledger's own key


def test_bf16_precision_runs_the_forward_pass_in_bfloat16_and_still_learns():
    dtypes = []
    task = DigitsMLP()
    build = task.build_model

    def build_with_probe(config):
        model = build(config)
        model[0].register_forward_hook(lambda module, inputs, out: dtypes.append(out.dtype))
        return model

    task.build_model = build_with_probe
    ctx = LocalContext(max_epochs=3, seed=0, precision="bf16")
    task.train(CONFIG, ctx)
    assert set(dtypes) == {torch.bfloat16}  # training and validation batches alike
    assert ctx.checkpoints[-1]["model"]["0.weight"].dtype == torch.float32  # weights stay fp32
    assert ctx.reports[-1]["val_accuracy"] > 0.85
    fp32 = LocalContext(max_epochs=1, seed=0)
    dtypes.clear()
    task.train(CONFIG, fp32)
    assert set(dtypes) == {torch.float32}


def test_a_missing_hyperparameter_is_named():
    with pytest.raises(ValueError, match="DigitsMLP needs 'batch_size': put it in the spec's space or fixed"):
        DigitsMLP().train({"lr": 0.01}, LocalContext(max_epochs=1, seed=0))


def test_cosine_schedule_anneals_the_rate_and_resumes_on_it():
    config = {**CONFIG, "lr_schedule": "cosine"}
    full = LocalContext(max_epochs=4, seed=0)
    DigitsMLP().train(config, full)
    assert full.checkpoints[-1]["lr_scheduler"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)

    def die_after_epoch_2(metrics, checkpoint):  # the trial dies after epoch 2 of its 4-epoch schedule
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    first = LocalContext(max_epochs=4, seed=0, on_report=die_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        DigitsMLP().train(config, first)
    resumed = LocalContext(max_epochs=4, seed=0, resume=first.checkpoints[-1])
    DigitsMLP().train(config, resumed)
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    assert resumed.reports[-1]["val_loss"] == pytest.approx(full.reports[-1]["val_loss"], rel=1e-5)


def test_an_unknown_lr_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule 'step'"):
        DigitsMLP().train({**CONFIG, "lr_schedule": "step"}, LocalContext(max_epochs=1, seed=0))


def _rate_jumps_after_epoch_3(monkeypatch):
    """The task's schedule: lr as configured for 3 epochs, then 300x. The jump wrecks the
    model, so the last epoch is not the best by construction, not by training noise (lr 0.3
    alone left the last epoch the best on some machines)."""
    import raysweep.tasks.base as base

    monkeypatch.setattr(base, "lr_schedule", lambda name, optimizer, epochs: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 if epoch < 3 else 300.0))


def test_ranked_by_val_loss_best_checkpoints_carry_the_best_epochs_weights(monkeypatch):
    _rate_jumps_after_epoch_3(monkeypatch)
    task, config = DigitsMLP(), CONFIG
    full = LocalContext(max_epochs=8, seed=0, metric="val_loss_best")
    task.train(config, full)
    losses = [r["val_loss"] for r in full.reports]
    best_epoch = losses.index(min(losses)) + 1
    assert best_epoch <= 3 and losses[-1] > 2 * min(losses)  # the last epoch is far from the best

    state = best_epoch_state(full.checkpoints[-1])  # what the search evaluates and logs
    assert state["epoch"] == best_epoch
    x, y = task.splits_for(config, 0).val
    with torch.no_grad():
        val_loss = torch.nn.functional.cross_entropy(task.load_model(config, state)(x), y).item()
    assert val_loss == pytest.approx(min(losses), rel=1e-5)

    # Resumed after the best epoch, a trial keeps it. (From a run that ended there: the
    # recorded optimizer state is the live one, which later epochs change.)
    first = LocalContext(max_epochs=best_epoch, seed=0, metric="val_loss_best")
    task.train(config, first)
    resumed = LocalContext(max_epochs=8, seed=0, metric="val_loss_best", resume=first.checkpoints[-1])
    task.train(config, resumed)
    assert [r["epoch"] for r in resumed.reports] == list(range(best_epoch + 1, 9))
    assert resumed.checkpoints[-1]["best_epoch"] == best_epoch

    # Ranked by anything else, a checkpoint holds only the last epoch's weights.
    last = LocalContext(max_epochs=2, seed=0, metric="val_loss")
    task.train(config, last)
    assert "best_model" not in last.checkpoints[-1]
    assert best_epoch_state(last.checkpoints[-1]) is last.checkpoints[-1]
