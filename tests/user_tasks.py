"""User tasks the tests name by import path ("tests.user_tasks:...")."""


def missing_metric(config, ctx):
    """Reports a metric other than the spec's: the trial must fail with a clear reason."""
    for epoch in range(1, ctx.max_epochs + 1):
        ctx.report({"loss": 1.0 / epoch, "epoch": epoch})


class Quadratic:
    """A class task with no torch at all: the metric is a known function of the config."""

    def train(self, config, ctx):
        for epoch in range(1, ctx.max_epochs + 1):
            ctx.report({"val_loss": (config["x"] - 0.3) ** 2 + 1.0 / epoch})
