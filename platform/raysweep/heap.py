"""A command's heap: what its imports build, left out of the cyclic collector's walks."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def heavy_imports():
    """Import Ray, Tune, MLflow and torch without collecting, then leave what they built out of
    the cyclic garbage collector's walks.

    A search's driver holds about a million long-lived objects (mostly those modules) that each
    full collection walks again. Measured on a search of 8 trials (docs/design.md, point 20):
    1.0 s of collections during the imports, 2.3 s while the trials ran (1.1 s with the
    imports frozen), and 3.7 s of the interpreter's final collection after the last line was
    printed (`cli.main` freezes the heap as it returns). Only a command's own process does this;
    `run_search` called from a notebook leaves the caller's collector alone. Objects made later
    are collected as before; what is frozen lives until the process exits, as modules do anyway.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def run_imports(own_process: bool) -> contextlib.AbstractContextManager:
    """Around a run's imports: `heavy_imports` in a command's own process; nothing for
    `run_search` called from a notebook, whose collector stays the caller's."""
    return heavy_imports() if own_process else contextlib.nullcontext()
