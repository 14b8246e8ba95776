"""What a task's hyperparameters may be, checked before any trial runs: no torch, so that
`raysweep validate` checks a spec in a fraction of a second (tasks are resolved, and their
rules checked, without importing what trains them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

LR_SCHEDULES = ("constant", "cosine")


def check_schedule(key: str, name: Any) -> None:
    if name not in LR_SCHEDULES:
        raise ValueError(f"{key}: {name!r} is not a schedule (use one of {', '.join(LR_SCHEDULES)})")


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Bounds:
    """The numbers a task's hyperparameter may be: finite, an integer if `integer`, from `low`
    to `high`, each end included unless open. Checked before any trial runs (`check_values`):
    out of range, each trial would fail on its own (batch_size 0) or train on nonsense
    (dropout 1.5 raises in torch; a float batch_size is silently truncated)."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((value > self.low) if self.low_open else (value >= self.low)) and (
            (value < self.high) if self.high_open else (value <= self.high))

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low, high = f"{self.low:g}", f"{self.high:g}"
        if math.isinf(self.high):
            return f"{kind} {'>' if self.low_open else '>='} {low}"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class OneOf:
    """A hyperparameter that takes one of these values (of the same type: `augment: 'false'`
    is a truthy string, not false). `optional`: null is allowed too, meaning not given (a
    table task's `dataset: null` beside a `data:` section, as `--set fixed.dataset=null` writes)."""

    values: tuple
    optional: bool = False

    def allows(self, value: Any) -> bool:
        return (value is None and self.optional) or any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(_shown(v).strip("'") for v in self.values) + (" or null" if self.optional else "")


POSITIVE = Bounds(0, low_open=True)  # lr
NON_NEGATIVE = Bounds(0)  # weight_decay
COUNT = Bounds(1, integer=True)  # batch_size, hidden units, channels
PROBABILITY = Bounds(0, 1, high_open=True)  # dropout: at 1 every activation is zeroed


def check_values(rules: dict[str, Bounds | OneOf], fixed: dict[str, Any], space: dict[str, Any],
                 fixed_at: str = "fixed.") -> None:
    """Each value a config can hold for a key with a rule: the fixed one (its key named
    `fixed_at` + key), a choice's every value, a range's both ends (a sampler may return
    either). A ValueError naming the spec key."""
    for key, rule in rules.items():
        if key in fixed and not rule.allows(fixed[key]):
            raise ValueError(f"{fixed_at}{key}: {_shown(fixed[key])} is not {rule}")
        param = space.get(key)
        if param is None:
            continue
        values = getattr(param, "values", None)
        if values is not None:
            bad = [v for v in values if not rule.allows(v)]
            if bad:
                raise ValueError(f"space.{key}.values: {_shown(bad[0])} is not {rule}")
        elif isinstance(rule, OneOf):
            raise ValueError(f"space.{key}: must be a choice of {str(rule).removeprefix('one of ')}, not a range")
        elif rule.integer and param.type != "int":
            raise ValueError(f"space.{key}: must be an int or choice parameter ({rule}), not {param.type}")
        else:
            for end in ("low", "high"):
                value = getattr(param, end)
                if not rule.allows(value):  # ints as written (`:g` overflows on a huge one)
                    shown = f"{value:g}" if isinstance(value, float) else _shown(value)
                    raise ValueError(f"space.{key}: {end} ({shown}) is not {rule}")
