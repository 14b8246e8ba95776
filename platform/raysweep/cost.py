"""The cost and compute meter: what a trial used, reported with its metrics every epoch.

A trial's meter measures one *segment*: one process (or worker group) running the trial, from
the moment its trial function started (a worker group's start-up, data loading and model
building are billed, as a cluster bills them) to each report. The driver's ledger
(`book.TrialBook`) adds up a trial's segments: a restart from an older checkpoint repeats
epochs, and those repeated epochs were paid for, so they are billed again. What it reports,
all workers together:

- `cost_wall_s`: wall time the trial's workers have held their resources;
- `cost_cpu_core_hours`, `cost_gpu_hours`: the *allocation*, workers x cpus_per_worker (or
  gpus_per_worker) x wall / 3600: what a cluster bills, whether the cores compute or wait;
- `cost_device_hours`: GPU-hours for a trial that holds GPUs, else CPU core-hours;
- `cost_usd`: core-hours x `cost.cpu_hour_usd` + GPU-hours x `cost.gpu_hour_usd`;
- `samples`: training samples processed; `samples_per_s`: over the last epoch;
- `flops`: training FLOPs, forward + backward of one batch counted by
  `torch.utils.flop_counter.FlopCounterMode` (matrix multiplies and convolutions; elementwise
  ops, optimizer steps and validation are not counted), per sample, times `samples`;
- `energy_j`: on a GPU, NVML's total-energy counter, deltas summed over the GPUs the trial
  holds, times the trial's share of each (gpus_per_worker below 1: trials sharing a GPU each
  count their allocation's share of its energy, not all of it); on a CPU, codecarbon's
  estimate for each worker's process (carbon.py), summed over workers;
- `co2e_kg`: `energy_j` times the carbon intensity of `cost.country`'s electricity (carbon.py);
- `mfu`: achieved training FLOP/s over the GPUs' peak (GPU only, known devices, see PEAK_FLOPS);
- `peak_host_mem_mb` (RSS of rank 0's process) and `peak_cuda_mem_mb` (GPU only).

Every one of the summed metrics (`BILLED`) is linear in its segment's use, so a trial's total
is the sum of its segments' last reports. Work after a segment's last report (the epoch a
crash cut short) is not known to anyone and is not billed.
"""

from __future__ import annotations

import copy
import random
import resource
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch loads in the trials, where it trains; the driver reads the ledger's names only
    import torch

# Summed over a trial's segments by the driver's ledger (book.py).
BILLED = ("cost_wall_s", "cost_cpu_core_hours", "cost_gpu_hours", "cost_device_hours", "cost_usd",
          "samples", "flops", "energy_j", "co2e_kg")
SEGMENT_KEY = "cost_segment"  # which process measured a report: the ledger's, not logged

# Dense bf16 peak FLOP/s by device name fragment (vendor datasheets, no sparsity).
PEAK_FLOPS = {"H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12,
              "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def flops_per_sample(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> float:
    """Forward + backward FLOPs of one batch, per sample, on a copy of the model (so neither
    DDP's gradient hooks nor the real gradients are touched)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        loss_fn(probe(x), y).backward()
    return counter.get_total_flops() / len(x)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


class _Energy:
    """NVML total-energy counter of one CUDA device (millijoules since the driver loaded)."""

    def __init__(self, device: torch.device):
        self._handle = None
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            self._handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._last = self._read()
        except Exception:  # noqa: BLE001 - no NVML, or a GPU without the counter: no energy figure
            self._handle = None

    def delta_j(self) -> float | None:
        if self._handle is None:
            return None
        now = self._read()
        delta, self._last = (now - self._last) / 1000.0, now
        return delta


class Meter:
    def __init__(
        self,
        *,
        workers: int = 1,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        cpu_hour_usd: float = 0.0,
        gpu_hour_usd: float = 0.0,
        started_at: float | None = None,
        country: str | None = None,
        cpu_energy: bool = True,
    ):
        """`started_at`: time.time() when the trial function began (its process or worker
        group starting is billed too); None: now. `country`: for `co2e_kg` (carbon.py);
        `cpu_energy`: estimate a CPU trial's energy (off for meters that only count)."""
        self.workers, self.cpus, self.gpus = workers, cpus_per_worker, gpus_per_worker
        self.cpu_hour_usd, self.gpu_hour_usd = cpu_hour_usd, gpu_hour_usd
        self.country, self._cpu_energy = country, cpu_energy
        import torch

        self.device = torch.device("cpu")
        self._energy = None  # _Energy (NVML) on a GPU, carbon.CpuEnergy on a CPU; None: no figure
        # Wall clock, not monotonic: a worker group's clock starts in the trial's process.
        self._started = time.time() if started_at is None else started_at
        self.segment = random.getrandbits(48)  # exact as a float: Tune's results may pass through JSON
        self.samples = 0.0
        self.flops = 0.0
        self.flops_per_sample: float | None = None
        self.energy_j: float | None = None
        self._samples_per_s: float | None = None

    def attach(self, device: torch.device) -> None:
        """The worker's device, known once the context is set up: GPU energy and memory."""
        self.device = device
        if device.type == "cuda":
            energy = _Energy(device)
            self._energy = energy if energy._handle is not None else None
        elif self._cpu_energy:
            try:
                from .carbon import CpuEnergy

                self._energy = CpuEnergy()
            except Exception:  # noqa: BLE001 - no codecarbon, or it cannot read this machine: no energy figure
                self._energy = None

    # -- fed by the loop
    def count_flops(self, model, x, y, loss_fn) -> None:
        if self.flops_per_sample is None:
            self.flops_per_sample = flops_per_sample(model, x, y, loss_fn)

    def local_energy_j(self) -> float:
        """This worker's share of its GPU's energy since the last call (0 without NVML): summed
        over workers by the loop. The counter is the whole device's: a worker holding half of
        it is billed half."""
        delta = self._energy.delta_j() if self._energy is not None else None
        if delta is None:
            return 0.0
        # codecarbon's estimate is this process's own; NVML's counter is the device's
        return delta * min(1.0, self.gpus) if self.device.type == "cuda" else delta

    def add_epoch(self, samples: float, seconds: float, energy_j: float | None = None) -> None:
        """One epoch of `samples` (all workers) in `seconds`; `energy_j` summed over workers."""
        self.samples += samples
        self._samples_per_s = samples / seconds if seconds > 0 else None
        if self.flops_per_sample is not None:
            self.flops += self.flops_per_sample * samples
        if self._energy is not None and energy_j is not None:
            self.energy_j = (self.energy_j or 0.0) + energy_j

    # -- read at each report
    @property
    def wall_s(self) -> float:
        return max(0.0, time.time() - self._started)

    def metrics(self) -> dict[str, float]:
        wall = self.wall_s
        core_h = self.workers * self.cpus * wall / 3600
        gpu_h = self.workers * self.gpus * wall / 3600
        out = {
            SEGMENT_KEY: self.segment,
            "cost_wall_s": wall,
            "cost_cpu_core_hours": core_h,
            "cost_gpu_hours": gpu_h,
            "cost_device_hours": gpu_h if self.gpus > 0 else core_h,
            "cost_usd": core_h * self.cpu_hour_usd + gpu_h * self.gpu_hour_usd,
            "peak_host_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        if self.samples:
            out["samples"] = self.samples
            if self._samples_per_s is not None:
                out["samples_per_s"] = self._samples_per_s
        if self.flops:
            out["flops"] = self.flops
        if self.energy_j is not None:
            from .carbon import co2e_kg

            out["energy_j"] = self.energy_j
            out["co2e_kg"] = co2e_kg(self.energy_j, self.country)
        if self.device.type == "cuda":
            import torch

            out["peak_cuda_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            peak = peak_flops(self.device)
            if peak and self.flops_per_sample and self._samples_per_s:
                gpus = max(1.0, self.workers * self.gpus)
                out["mfu"] = self.flops_per_sample * self._samples_per_s / (peak * gpus)
        return out
