"""A team's MLflow server, some milliseconds away: a local `mlflow server` behind a TCP proxy
that adds a round trip to every request.

    python benchmarks/latency.py LISTEN_PORT TARGET_PORT RTT_MS     # the proxy alone

The proxy holds the first bytes a client sends after the server last spoke (a new request)
for RTT_MS before passing them on; the rest of a request's body, and every answer, pass at
once. So each request costs one round trip more, as on a network RTT_MS away with unlimited
bandwidth (an upload of megabytes costs more on a real one). `server_behind(rtt_ms, root)`
starts both as processes of their own, on 127.0.0.1, and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from raysweep.tracking.uri import server_env  # as raysweep's own servers: no job runner (design.md, point 34)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _proxy(listen: int, target: int, delay_s: float) -> None:
    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        new_request = [True]

        async def up():
            with contextlib.suppress(OSError):
                while data := await client_reader.read(65536):
                    if new_request[0]:
                        new_request[0] = False
                        await asyncio.sleep(delay_s)
                    server_writer.write(data)
                    await server_writer.drain()
            server_writer.close()

        async def down():
            with contextlib.suppress(OSError):
                while data := await server_reader.read(65536):
                    new_request[0] = True
                    client_writer.write(data)
                    await client_writer.drain()
            client_writer.close()

        await asyncio.gather(up(), down())

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer: {log.read_text()[-2000:]}")
        time.sleep(0.3)


@contextlib.contextmanager
def server_behind(rtt_ms: float, root: Path):
    """The URL of an `mlflow server` (SQLite, artifacts under `root`) reached through the proxy."""
    server_port, proxy_port = _free_port(), _free_port()
    log = root / "server.log"
    procs = []
    try:
        with open(log, "a") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(server_port),
                 "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                 "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_env()))
            procs.append(subprocess.Popen(
                [sys.executable, __file__, str(proxy_port), str(server_port), str(rtt_ms)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        url = f"http://127.0.0.1:{proxy_port}"
        _wait_healthy(url, procs[0], log)
        yield url
    finally:
        for proc in procs:  # each in its own process group: never killed by name
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    listen_port, target_port, rtt = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(_proxy(listen_port, target_port, rtt / 1000))
