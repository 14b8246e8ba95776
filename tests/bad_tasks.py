"""Objects a spec can name as its task that are not tasks (`tests.bad_tasks:...`)."""

NOT_A_TASK = 3


class NeedsArgs:
    """A task class is created with no arguments; this one cannot be."""

    def __init__(self, size):
        self.size = size

    def train(self, config, ctx):
        raise AssertionError("never created, so never trained")
