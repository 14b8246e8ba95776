"""What every benchmark records beside its figures: the machine, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def machine(**extra) -> dict:
    import ray
    import torch

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "torch": torch.__version__, "ray": ray.__version__, **extra}


def write_json(path: str, out: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
