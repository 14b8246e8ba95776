"""A search's totals, from its trials' last reports: one definition for the search's own summary
(from the driver's book) and `raysweep report` (from MLflow alone), so the two agree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Per-trial cumulative cost metrics (cost.py's ledger): a trial's last report holds its total,
# and the search's is their sum. Also logged under these names on the parent run.
SUMMED = ("cost_device_hours", "cost_cpu_core_hours", "cost_gpu_hours", "cost_usd", "flops", "samples", "energy_j",
          "co2e_kg")


def cost_sums(metrics: Iterable[Mapping[str, float]], orphaned: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each cost metric summed over the trials' last reports that hold it, and over the runs a
    dead driver left that --resume could not continue (`orphaned`: their compute was spent)."""
    sums = {k: float(v) for k, v in (orphaned or {}).items() if k in SUMMED}
    for last in metrics:
        for key in SUMMED:
            if key in last:
                sums[key] = sums.get(key, 0.0) + float(last[key])
    return sums


def search_totals(metrics: Iterable[Mapping[str, float]], *, epochs_run: int, epochs_budget: int,
                  orphaned: Mapping[str, float] | None = None) -> dict[str, float | None]:
    """What a search cost and how much early stopping saved. `epochs_budget`: trials x max_epochs."""
    sums = cost_sums(metrics, orphaned)
    return {
        "device_hours": sums.get("cost_device_hours", 0.0),
        "cost_usd": sums.get("cost_usd", 0.0),
        "flops": sums.get("flops", 0.0),
        "samples": sums.get("samples", 0.0),
        "energy_j": sums.get("energy_j"),  # None: no trial measured or estimated any (carbon.py)
        "co2e_kg": sums.get("co2e_kg"),
        "compute_saved_fraction": 1 - epochs_run / epochs_budget if epochs_budget else 0.0,
        "epochs_run": epochs_run,
        "epochs_budget": epochs_budget,
    }
