"""A real ``mlflow server`` on 127.0.0.1 for tests: started in its own process group, always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, payload: dict | None = None, timeout: float = 10) -> dict:
    """GET (or POST ``payload``) a REST endpoint of the server and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def start(db: Path, artifacts: Path, port: int, log: Path) -> subprocess.Popen:
    """``mlflow server`` over the sqlite store ``db`` (one worker: ready in about 10 s on our machines)."""
    cmd = [
        str(MLFLOW),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    handle = open(log, "ab")  # closed with the process by stop()
    proc = subprocess.Popen(cmd, cwd=db.parent, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    proc._mibench_log = handle  # type: ignore[attr-defined]
    return proc


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server not ready after {timeout:g} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server's whole process group (its PID alone leaves the uvicorn worker running)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):  # children left behind by a SIGKILL of the leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc._mibench_log.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def mlflow_server(db: Path, artifacts: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A running server over ``db``; yields (base URL, process). Stopped on exit, whatever happened."""
    artifacts = artifacts or db.parent / "mlartifacts"
    port = free_port()
    log = db.parent / f"mlflow-server-{port}.log"
    proc = start(db, artifacts, port, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, log)
        yield url, proc
    finally:
        stop(proc)
