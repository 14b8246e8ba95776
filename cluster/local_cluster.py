"""A two-node Ray cluster and an MLflow server on this machine, all on 127.0.0.1, until Ctrl-C.

    python cluster/local_cluster.py [--head-cpus 2] [--worker-cpus 2 ...] [--no-mlflow]

Prints the addresses and the environment a client needs, then waits; Ctrl-C (or SIGTERM)
stops exactly the processes it started. For trying the cluster path without a cloud.
"""

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from raysweep.testing import LocalCluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-cpus", type=int, default=2)
    parser.add_argument("--worker-cpus", type=int, nargs="+", default=[2], help="one value per worker node")
    parser.add_argument("--no-mlflow", action="store_true", help="don't start an MLflow server")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly under `kill` too
    print("starting the head node, worker node(s) and MLflow server (a minute on a small machine)...", flush=True)
    with LocalCluster(head_cpus=args.head_cpus, worker_cpus=args.worker_cpus, mlflow=not args.no_mlflow) as c:
        print(f"Ray:       {c.address} (dashboard and job API {c.dashboard_url})")
        if c.mlflow_url:
            print(f"MLflow:    {c.mlflow_url}")
        tracking = f" --tracking-uri {c.mlflow_url}" if c.mlflow_url else ""
        print("\nin another shell, from the repository root:")
        print("  # a search as a Ray job (driver and trials on the cluster), following its logs")
        print(f"  raysweep submit search_spaces/digits_mlp.yaml --address {c.dashboard_url}{tracking} "
              "--storage /tmp/raysweep-shared")
        print("  # or a search whose driver runs in that shell, trials on the cluster")
        print(f"  RAY_ADDRESS={c.address} raysweep search search_spaces/digits_mlp.yaml{tracking}")
        print("\nCtrl-C stops everything started here.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            print("stopping...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
