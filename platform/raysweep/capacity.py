"""What the cluster can run: whether a trial fits at all, and how many run at once.

A trial is `workers_per_trial` bundles of {CPU: cpus_per_worker, GPU: gpus_per_worker}. An
in-process trial's one bundle must fit on one node; a Ray Train group's bundles may spread
over nodes (Ray Train places them with the PACK strategy, which spills over).

A fixed cluster that can never hold a trial is refused before any trial queues (`check`:
exit 2). On an autoscaling cluster the nodes may not exist yet: the search warns once and
fails after `resources.scale_wait_s` if still no node can hold a trial (`CapacityWait`).
The autoscaler, when there is one, writes its node types and their maximum counts into the
GCS (Ray Train reads the same record to refuse worker groups no cluster size can hold).

Without `search.max_concurrent`, concurrency follows the cluster as nodes join and leave
(`CapacityLimiter`), rather than what it held when the search started.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import ray
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.stopper import Stopper

from .errors import SpecError
from .spec import Spec

# How often the limiter and the wait look at the cluster again (a GCS call each).
RECHECK_S = 5.0


@dataclass(frozen=True)
class Need:
    """One trial's resources, and the CPU a streamed dataset keeps free for Ray Data."""

    workers: int
    cpus: float
    gpus: float
    spread: bool  # a Ray Train group: bundles on any nodes
    reserve_cpus: float = 0.0

    def bundles_on(self, node: dict) -> int:
        """Worker bundles one node of these resources holds."""
        counts = [math.floor(node.get("CPU", 0) / self.cpus + 1e-9) if self.cpus else math.inf,
                  math.floor(node.get("GPU", 0) / self.gpus + 1e-9) if self.gpus else math.inf]
        held = min(counts)
        return 1 << 20 if held == math.inf else int(held)

    def trials_on(self, nodes: list[dict]) -> int:
        """Trials these nodes hold at once."""
        nodes = _reserve(nodes, self.reserve_cpus)
        if self.spread:
            return sum(self.bundles_on(n) for n in nodes) // self.workers
        return sum(self.bundles_on(n) // self.workers for n in nodes)

    def describe(self) -> str:
        gpu = f" + {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.workers} worker(s) x {self.cpus:g} CPU{gpu}"


def _reserve(nodes: list[dict], cpus: float) -> list[dict]:
    """The nodes less `cpus` CPU on the largest one (left free for Ray Data's tasks)."""
    if not cpus or not nodes:
        return nodes
    largest = max(range(len(nodes)), key=lambda i: nodes[i].get("CPU", 0))
    return [{**n, "CPU": max(0.0, n.get("CPU", 0) - cpus)} if i == largest else n for i, n in enumerate(nodes)]


def trial_need(spec: Spec, streamed: bool = False) -> Need:
    """One trial of `spec`: a Ray Train group's workers may spread over nodes (tasks.needs_ray_train)."""
    from .tasks import needs_ray_train, resolve_task

    res = spec.resources
    return Need(res.workers_per_trial, res.cpus_per_worker, res.gpus_per_worker,
                needs_ray_train(spec, resolve_task(spec.task)), 1.0 if streamed else 0.0)


def live_nodes() -> list[dict]:
    """Each alive node's total resources."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def autoscaler_node_types() -> Optional[list[tuple[dict, int]]]:
    """(resources, max count) of each node type the cluster's autoscaler may start; None
    where no autoscaler runs (a local Ray, `ray start` nodes: a fixed cluster)."""
    from .ray_internals import autoscaler_cluster_config

    try:
        config = autoscaler_cluster_config()
    except Exception:  # an older GCS without the record: treat as fixed
        return None
    if config is None or not config.node_group_configs:
        return None
    return [(dict(g.resources), g.max_count) for g in config.node_group_configs]


def _largest(nodes: list[dict], key: str) -> float:
    return max((n.get(key, 0) for n in nodes), default=0)


def _nodes_text(nodes: list[dict]) -> str:
    shapes: dict[str, int] = {}
    for n in nodes:
        gpu = f" + {n.get('GPU', 0):g} GPU" if n.get("GPU") else ""
        shape = f"{n.get('CPU', 0):g} CPU{gpu}"
        shapes[shape] = shapes.get(shape, 0) + 1
    return ", ".join(f"{count} x {shape}" for shape, count in shapes.items()) or "none"


def why_not(need: Need, nodes: list[dict], where: str) -> str:
    """One line naming the resources setting no node of `nodes` satisfies."""
    ask = f"a trial needs {need.describe()}"
    if need.gpus and _largest(nodes, "GPU") < need.gpus:
        key = "resources.gpus_per_worker"
        has = (f"no node has {need.gpus:g} GPU" if _largest(nodes, "GPU") else "no node has a GPU")
    elif _largest(nodes, "CPU") < need.cpus:
        key, has = "resources.cpus_per_worker", f"the largest node has {_largest(nodes, 'CPU'):g} CPU"
    else:
        key = "resources.workers_per_trial"
        held = sum(need.bundles_on(n) for n in nodes) if need.spread else \
            max((need.bundles_on(n) for n in nodes), default=0)
        has = f"{where} holds {held} such worker(s) {'at most' if need.spread else 'on one node'}"
    return f"{key}: {ask}; {has} ({where}: {_nodes_text(nodes)})"


def _largest_cluster(nodes: list[dict], types: list[tuple[dict, int]]) -> list[dict]:
    """The live nodes plus every node the autoscaler may still start (-1: unbounded, taken as many)."""
    extra = [dict(res) for res, count in types for _ in range(count if count >= 0 else 64)]
    return nodes + extra


def check(need: Need, say=print, cache: str | None = None) -> bool:
    """Refuse (SpecError) a trial no node can ever hold; on an autoscaling cluster whose nodes
    cannot hold one yet, warn once and return True (the caller then waits, see CapacityWait).

    `cache`: the spec's data.cache, for a streamed dataset (`need.reserve_cpus`), whose trials
    would take the CPU its read tasks need."""
    nodes = live_nodes()
    if need.trials_on(nodes) >= 1:
        return False
    types = autoscaler_node_types()
    if types is None and need.reserve_cpus and replace(need, reserve_cpus=0).trials_on(nodes) >= 1:
        raise SpecError(
            f"data.cache: the data streams from its files while trials train (cache: {cache}), and a trial's "
            f"{need.describe()} leave none of this cluster's CPU ({_nodes_text(nodes)}) for Ray Data to read "
            "with; set data.cache: memory, or fewer CPUs per trial"
        )
    if types is None:
        raise SpecError(why_not(need, nodes, "this cluster"))
    largest = _largest_cluster(nodes, types)
    if need.trials_on(largest) < 1:
        raise SpecError(why_not(need, largest, "this cluster at its autoscaler's largest"))
    say(f"waiting for the autoscaler: {why_not(need, nodes, 'the cluster now')}")
    return True


class CapacityWait(Stopper):
    """Stops the search when, `wait_s` after it started, no node can yet hold a trial (an
    autoscaling cluster that never scaled up): `failure` then says why."""

    def __init__(self, need: Need, wait_s: float):
        self.need, self.wait_s = need, wait_s
        self.deadline = time.monotonic() + wait_s
        self.failure: Optional[str] = None
        self._fits = False
        self._checked = 0.0

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        now = time.monotonic()
        if self._fits or self.failure is not None or now - self._checked < min(RECHECK_S, self.wait_s):
            return self.failure is not None
        self._checked = now
        nodes = live_nodes()
        if self.need.trials_on(nodes) >= 1:
            self._fits = True
        elif now >= self.deadline:
            self.failure = (f"no trial could start within resources.scale_wait_s ({self.wait_s:g} s): "
                            f"{why_not(self.need, nodes, 'the cluster')}")
        return self.failure is not None

    def __getstate__(self):  # Tune pickles the run config's stopper: the deadline is this driver's
        return {**self.__dict__, "deadline": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.deadline = time.monotonic() + self.wait_s


class CapacityLimiter(ConcurrencyLimiter):
    """`ConcurrencyLimiter` whose limit is what the cluster holds now, looked at again every
    `RECHECK_S`: trials start as nodes join (a cluster that starts with no workers ran one
    trial at a time for the whole search when the limit was fixed at the start).

    On an autoscaling cluster one trial more than fits is let through: waiting for resources,
    it is the demand the autoscaler adds a node for. `cap` (search.max_concurrent) bounds it.
    """

    def __init__(self, searcher: Searcher, need: Need, cap: Optional[int] = None):
        self.need, self.cap, self._checked = need, cap, 0.0
        super().__init__(searcher, max_concurrent=self._limit())

    def _limit(self) -> int:
        fit = max(1, self.need.trials_on(live_nodes()))
        if autoscaler_node_types() is not None:
            fit += 1
        return fit if self.cap is None else min(fit, self.cap)

    def suggest(self, trial_id: str):
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            self._checked = now
            self.max_concurrent = self._limit()
        return super().suggest(trial_id)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._checked = 0.0  # a restored search looks at the cluster it runs on now
