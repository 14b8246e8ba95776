"""A user task module that raises while it is imported (`task: tests.broken_task:train`).

The message spans two lines, as real import errors often do: the CLI must still print one.
"""

raise RuntimeError("broken on purpose\nsecond line of the error")
