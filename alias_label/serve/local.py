"""A reconciliation service of one's own on 127.0.0.1, started as scripts/serve.py in a subprocess.

    with local_service(["--model", "student"]) as url:
        httpx.post(f"{url}/reconcile", data={"queries": '{"q0": {"query": "MIT"}}'})

It picks a free port, waits until the model has loaded and ``/health`` answers, and stops the
process on the way out, so notebooks, tests and benchmarks talk to the real server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

from alias_label.errors import UserError
from alias_label.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_service(flags: list[str] = (), env: dict | None = None, timeout_s: float = 300):
    """The URL of scripts/serve.py started with ``flags`` on a free port of 127.0.0.1, until the block ends."""
    import httpx

    port = free_port()
    command = [sys.executable, str(REPO_ROOT / "scripts" / "serve.py"), *flags, "--host", "127.0.0.1",
               "--port", str(port)]
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise UserError(f"serve.py exited with code {process.returncode}:\n{process.stdout.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise UserError(f"serve.py did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        process.stdout.close()
