"""Tools for trying raysweep without a cloud and for its tests: `LocalCluster`, several Ray
nodes (and an MLflow server) on one machine; `LocalContext` lives in raysweep.context."""

from .localcluster import LocalCluster, free_port

__all__ = ["LocalCluster", "free_port"]
