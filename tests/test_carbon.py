"""codecarbon's estimates (carbon.py): looked up once per machine, the world average without a
country, and a busy process estimated above an idle one."""

from __future__ import annotations

import json
import time

import pytest

from raysweep import carbon


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for cached in (carbon.cpu_tdp, carbon.kg_per_kwh):
        cached.cache_clear()
    yield tmp_path / "raysweep"
    for cached in (carbon.cpu_tdp, carbon.kg_per_kwh):
        cached.cache_clear()


def test_codecarbons_lookups_are_kept_per_machine(fresh_cache, monkeypatch):
    model, tdp = carbon.cpu_tdp()
    assert tdp > 0
    assert json.loads((fresh_cache / "cpu_power.json").read_text()) == {carbon._fingerprint(): [model, tdp]}
    carbon.cpu_tdp.cache_clear()

    import codecarbon.core.cpu

    def no_lookup():
        raise AssertionError("looked up again")

    monkeypatch.setattr(codecarbon.core.cpu, "TDP", no_lookup)  # a second process reads the file
    assert carbon.cpu_tdp() == (model, tdp)


def test_carbon_intensity_is_codecarbons_world_average_without_a_country(fresh_cache):
    assert carbon.kg_per_kwh(None) == pytest.approx(0.475)  # codecarbon's world average, 475 g/kWh
    assert carbon.kg_per_kwh("FRA") < carbon.kg_per_kwh("USA") < carbon.kg_per_kwh("IND")  # nuclear, mixed, coal
    assert carbon.co2e_kg(3.6e6, "FRA") == pytest.approx(carbon.kg_per_kwh("FRA"))  # 1 kWh
    assert carbon.known_country("DEU") and not carbon.known_country("XYZ")


def test_a_busy_process_is_estimated_above_an_idle_one():
    energy = carbon.CpuEnergy(interval_s=3600)  # sampled by hand below
    energy.delta_j()
    time.sleep(0.5)
    energy.sample()
    idle = energy.delta_j()
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:
        pass
    energy.sample()
    busy = energy.delta_j()
    assert 0 < idle < busy


def test_before_codecarbons_first_reading_the_process_cpu_time_is_the_load():
    """A trial's first epochs (10 ms on digits) come before codecarbon's first reading, a
    second in; codecarbon's load over a few milliseconds would be 0 or a spike (10 ms clock
    ticks). Its model still holds: the TDP's share of the CPU time the process got, plus the
    RAM's power over the wall time."""
    from codecarbon.core.util import count_cpus

    _, tdp = carbon.cpu_tdp()
    for _ in range(5):  # each meter's first figure; the spike came on some, not all
        energy = carbon.CpuEnergy(interval_s=3600)
        energy.delta_j()
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < 0.1:  # busy
            pass
        busy_j = energy.delta_j()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert busy_j == pytest.approx(tdp / count_cpus() * cpu + energy._ram_w * wall, rel=0.2)
        start = time.perf_counter()
        time.sleep(0.1)  # idle: the RAM's power, and next to no CPU
        assert energy.delta_j() / (time.perf_counter() - start) == pytest.approx(energy._ram_w, rel=0.2)


def test_between_samples_energy_grows_at_the_last_power_and_never_goes_back():
    energy = carbon.CpuEnergy(interval_s=3600)
    time.sleep(0.2)
    energy.sample()  # codecarbon's first reading: the power from here on
    energy.delta_j()
    time.sleep(0.2)
    estimated = energy.delta_j()  # no sample since: the last power x 0.2 s
    assert estimated == pytest.approx(energy._power_w * 0.2, rel=0.3)
    readings = [energy.delta_j() for _ in range(100)]
    assert all(r >= 0 for r in readings)


def test_the_sampling_thread_ends_with_its_meter():
    import gc
    import threading

    before = set(threading.enumerate())
    energy = carbon.CpuEnergy(interval_s=0.05)
    (sampler,) = set(threading.enumerate()) - before
    assert sampler.name == "raysweep-energy" and sampler.is_alive()
    del energy
    gc.collect()
    sampler.join(timeout=2)
    assert not sampler.is_alive()
