"""Entrypoint for `ray job submit ... -- python jobs/train.py SPEC [flags]` (same flags as `raysweep train`)."""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` raysweep may not be installed: use the copy shipped
# in the working directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from raysweep.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
