"""Seeds derived from a spec's seed. Imports nothing: Ray Data's task processes load it
with `ingest` (with torch imported for it, each spent 1.6 s more starting)."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of one epoch: the same on every rank and after a restart."""
    return seed * 100_003 + epoch
