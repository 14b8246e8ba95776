"""The test cluster's own helpers (the cluster itself is exercised by test_cluster.py and test_jobs.py)."""

from __future__ import annotations

import socket

from raysweep.testing import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_can_be_bound():
    # A node's ports are all chosen before `ray start` binds any of them, and the kernel may give
    # a just-closed ephemeral port again: once two came out equal and the head refused to start.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[-5:]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
