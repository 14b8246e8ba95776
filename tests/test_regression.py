"""The built-in regression task: R^2 as scikit-learn computes it, your own table, bad tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import r2_score

from raysweep.context import LocalContext
from raysweep.tasks import resolve_task
from raysweep.tasks.regression import regression_splits
from raysweep.tasks.tabular import source_of

CONFIG = {"lr": 3e-3, "batch_size": 32, "hidden": 16, "layers": 1, "dataset": "diabetes"}


def _trained(config, epochs=5):
    task = resolve_task("regression")
    ctx = LocalContext(max_epochs=epochs, seed=0, metric="val_r2", meter={"cpus_per_worker": 1})
    task.train(config, ctx)
    return task, ctx


def test_val_and_test_r2_are_scikit_learns_on_the_same_predictions():
    task, ctx = _trained(CONFIG)
    state = ctx.checkpoints[-1]
    model = task.load_model(CONFIG, state)
    splits = regression_splits(source_of(CONFIG, "regression", ("diabetes",)), 0)
    with torch.no_grad():
        val_pred = model(splits.val[0]).squeeze(-1).numpy()
        test_pred = model(splits.test[0]).squeeze(-1).numpy()
    assert ctx.reports[-1]["val_r2"] == pytest.approx(r2_score(splits.val[1].numpy(), val_pred), abs=1e-5)
    assert ctx.reports[-1]["val_loss"] == pytest.approx(float(np.mean((val_pred - splits.val[1].numpy()) ** 2)),
                                                        rel=1e-5)
    test = task.evaluate(CONFIG, state, 0)
    assert test["test_r2"] == pytest.approx(r2_score(splits.test[1].numpy(), test_pred), abs=1e-5)
    # 442 rows: a 60/20/20 split; the target standardised by the train split's statistics
    assert [len(s[1]) for s in (splits.train, splits.val, splits.test)] == [264, 89, 89]
    assert float(splits.train[1].mean()) == pytest.approx(0, abs=1e-6)


def test_a_table_of_your_own_with_a_numeric_target(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(price=2 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=200))
    frame.to_csv(tmp_path / "houses.csv", index=False)
    monkeypatch.chdir(tmp_path)
    config = {"lr": 1e-2, "batch_size": 16, "hidden": 16, "layers": 0, "data": "houses.csv", "target": "price"}
    _, ctx = _trained(config, epochs=30)
    assert ctx.reports[-1]["val_r2"] > 0.95  # a linear target a linear model learns


@pytest.mark.parametrize("column,values,says", [
    ("kind", ["a", "b"] * 10, "regression: target column 'kind' of t.csv is not numeric; for class labels use the "
                              "tabular task"),
    ("flat", [1.0] * 20, "regression: target column 'flat' of t.csv is constant"),
])
def test_a_target_that_cannot_be_regressed_on_is_refused_in_one_line(tmp_path, monkeypatch, column, values, says):
    pd.DataFrame({"x": range(20), column: values}).to_csv(tmp_path / "t.csv", index=False)
    monkeypatch.chdir(tmp_path)
    task = resolve_task("regression")
    with pytest.raises(ValueError, match=f"^{says}$".replace("(", r"\(").replace(")", r"\)")):
        task.splits_for({"data": "t.csv", "target": column}, 0)
    with pytest.raises(ValueError, match=r"^regression: unknown dataset 'wine' \(choose diabetes; or data: a file\)$"):
        task.splits_for({"dataset": "wine"}, 0)
