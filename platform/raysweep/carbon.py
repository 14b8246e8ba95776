"""Energy where no GPU meter exists, and emissions for every trial: codecarbon's estimates.

A GPU trial's `energy_j` is NVML's counter (cost.py). A CPU trial has no meter to read here
(RAPL is rarely readable in a container or a VM), so its energy is codecarbon's estimate in
its *process* tracking mode: the CPU's power from its thermal design power (codecarbon's table
of CPU models, or its generic constant for a model it does not know) times the share of the
machine's cores this process kept busy, plus the RAM's power for the memory the process holds
(codecarbon's RAM model), times the time. Emissions (`co2e_kg`) are energy times the carbon
intensity of the electricity of `cost.country` (codecarbon's offline energy-mix data; without
a country, its world average). Nothing is sent anywhere: codecarbon's offline data only.

These are estimates, not measurements; docs/concepts.md#cost says what each figure is.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import threading
import time
import weakref
from pathlib import Path

JOULES_PER_KWH = 3.6e6


def _quiet() -> None:
    # codecarbon logs its hardware detection at INFO and warns when it falls back to its
    # load-based estimate, which is the point here.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)


def _fingerprint() -> str:
    """What identifies this machine's CPU, cheaply: the kernel's model name, the cores, the
    codecarbon version (its table may learn the model)."""
    from importlib.metadata import version

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()}|{model or platform.processor()}|{os.cpu_count()}|{version('codecarbon')}"


def _cached(name: str, key: str, compute):
    """`compute()`'s JSON-able answer, kept in ~/.cache/raysweep/<name>.json under `key`:
    codecarbon's lookups take it a second or two (it inspects the CPU, reads its tables with
    pandas), too long to repeat in every trial process. A cache that cannot be read or
    written costs the lookup again, nothing else."""
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raysweep" / f"{name}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return cached[key]
    _quiet()
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**cached, key: value}))
        os.replace(tmp, path)
    except OSError:
        pass
    return value


@functools.lru_cache(maxsize=1)
def cpu_tdp() -> tuple[str | None, float | None]:
    """This machine's CPU model and TDP in watts from codecarbon's table (for a model it does
    not know, its default of 4 W a thread); kept per machine (`_cached`) and per process."""
    def lookup():
        from codecarbon.core.cpu import TDP

        found = TDP()
        return [found.model, found.tdp]

    return tuple(_cached("cpu_power", _fingerprint(), lookup))


class CpuEnergy:
    """This process's CPU and RAM energy since the last call, by codecarbon's process mode.

    codecarbon reads the CPU times and memory of the process and its children by scanning
    every process on the machine (about 4 ms with Ray's ~90 processes here): too slow for
    every epoch of a 60 ms-epoch trial. As codecarbon's own tracker does, a thread samples the
    power every `interval_s` and energy is power x time: `delta_j` adds what the samples
    measured to the latest power times the time since the last one, in microseconds.

    Before the first sample there is no power figure of codecarbon's to go on, and none can be
    taken early: its process load is CPU time, in clock ticks of 10 ms, over the wall time
    since its last reading, so over a trial's first milliseconds it reads 0 or several times
    the real load (38 W measured here against 10 W a second later; a 10 ms epoch then reported
    a spike or nothing). Until then `delta_j` uses the same model, codecarbon's TDP share of
    the busy cores plus its RAM power, with this process's own CPU time (`time.process_time`,
    nanoseconds) as the load. The first sample covers the whole time since the start and
    corrects the estimate.
    """

    def __init__(self, interval_s: float = 1.0):
        _quiet()
        from codecarbon.core.util import count_cpus
        from codecarbon.external.hardware import CPU, POWER_CONSTANT
        from codecarbon.external.ram import RAM

        self.model, tdp = cpu_tdp()
        self._cpu = CPU.from_utils(output_dir=".", mode="cpu_load", model=self.model, tdp=tdp, tracking_mode="process")
        self._ram = RAM(tracking_mode="process")
        self._lock = threading.Lock()
        self._sampled_j, self._reported_j = 0.0, 0.0
        self._power_w: float | None = None  # codecarbon's, from the first sample on
        # The provisional model's terms: CPU.from_utils's TDP (its constant for an unknown
        # CPU), its core count, and the RAM's power now (memory held, not a rate).
        self._tdp_w, self._cpus = float(tdp if tdp is not None else POWER_CONSTANT), count_cpus()
        self._ram_w = self._ram.total_power().W
        for part in (self._cpu, self._ram):
            part.start()
        self._last = time.perf_counter()
        self._start = (self._last, time.process_time())
        # The thread holds the meter weakly: a finished trial's meter is collected and its thread ends.
        threading.Thread(target=_sampler, args=(weakref.ref(self), interval_s), daemon=True,
                         name="raysweep-energy").start()

    def sample(self) -> None:
        with self._lock:
            now = time.perf_counter()
            seconds, self._last = now - self._last, now
            joules = [part.measure_power_and_energy(last_duration=seconds)[1].kWh * JOULES_PER_KWH
                      for part in (self._cpu, self._ram)]
            self._sampled_j += sum(joules)
            if seconds > 0:
                self._power_w = sum(joules) / seconds

    def _provisional_w(self, now: float) -> float:
        wall = now - self._start[0]
        load = (time.process_time() - self._start[1]) / wall if wall > 0 else 0.0
        return self._tdp_w * min(load, self._cpus) / self._cpus + self._ram_w

    def delta_j(self) -> float:
        with self._lock:
            now = time.perf_counter()
            power = self._power_w if self._power_w is not None else self._provisional_w(now)
            total = self._sampled_j + power * (now - self._last)
            # The next sample corrects the estimate; what was reported is never taken back.
            delta = max(0.0, total - self._reported_j)
            self._reported_j += delta
            return delta


def _sampler(ref, interval_s: float) -> None:
    while True:
        time.sleep(interval_s)
        energy = ref()
        if energy is None:
            return
        try:
            energy.sample()
        except Exception:  # noqa: BLE001 - a process that cannot be read: the last power figure stands
            return
        del energy


@functools.lru_cache(maxsize=None)
def kg_per_kwh(country: str | None) -> float:
    """Carbon intensity of electricity in `country` (ISO 3166-1 alpha-3), or the world average,
    from codecarbon's offline data; kept per machine (`_cached`) and per process."""
    from importlib.metadata import version

    def lookup():
        from codecarbon.core.emissions import Emissions
        from codecarbon.core.units import Energy, EmissionsPerKWh
        from codecarbon.external.geography import GeoMetadata
        from codecarbon.input import DataSource

        source = DataSource()
        if country is None:
            return EmissionsPerKWh.from_g_per_kWh(source.get_carbon_intensity_per_source_data()["world_average"]).kgs_per_kWh
        return Emissions(source).get_country_emissions(Energy(kWh=1.0), GeoMetadata(country_iso_code=country))

    return _cached("carbon_intensity", f"{country or 'world'}|{version('codecarbon')}", lookup)


def known_country(country: str) -> bool:
    """Whether codecarbon's offline energy-mix data has `country` (else it would silently use
    the world average)."""
    from importlib.metadata import version

    def lookup():
        from codecarbon.input import DataSource

        return sorted(DataSource().get_global_energy_mix_data())

    return country in _cached("countries", version("codecarbon"), lookup)


def co2e_kg(energy_j: float, country: str | None) -> float:
    return energy_j / JOULES_PER_KWH * kg_per_kwh(country)
