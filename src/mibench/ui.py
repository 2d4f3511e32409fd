"""``mibench ui``: the MLflow UI over this project's tracking store, with an honest exit.

``mlflow ui`` on a port that is already taken logs "address already in use" and exits 0, after the caller
printed a URL that now shows someone else's service. So the port is claimed-checked first, the UI is started
as a child process, the URL is printed only once it answers, and a UI that stops before answering is an
error with its last log lines. A tracking *server* URI (``http(s)://``, ``databricks``) is refused with a
message: such a server serves its own UI.
"""

from __future__ import annotations

import collections
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REMOTE_SCHEMES = ("http://", "https://", "databricks", "uc:")


class UIError(RuntimeError):
    """The UI cannot be served (remote store, port in use, server failed to start); the message says why."""


def check_store(uri: str) -> None:
    """Refuse URIs ``mlflow ui`` cannot serve: a tracking server's address, or a missing local sqlite store."""
    if uri.startswith(REMOTE_SCHEMES):
        raise UIError(
            f"the tracking URI is {uri} (MLFLOW_TRACKING_URI): that is a tracking server, which serves its own UI; "
            f"open {uri} in a browser, or unset MLFLOW_TRACKING_URI to browse results/mlflow.db"
        )
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise UIError(f"no tracking store at {uri}; run the workflow first (make run)")


def check_port(host: str, port: int) -> None:
    """Raise :class:`UIError` naming the port if something already listens there (or it cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to listen on
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise UIError(
                f"cannot serve on {host}:{port}: {reason}. Something else listens there (another `mibench ui`?): "
                f"stop it, or pick another port with --port"
            ) from None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError):
        return False


def serve(
    uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    ready_timeout: float = 120.0,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run ``mlflow ui`` over ``uri`` until it stops; returns its exit code (0 after Ctrl-C).

    Raises :class:`UIError` before starting (remote URI, missing store, port in use) or when the server stops
    before it answered on ``host:port`` (with the end of its log).
    """
    check_store(uri)
    check_port(host, port)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    url = f"http://{host}:{port}"
    # its own session, so that stopping it stops all of it (uvicorn and the job consumers it starts)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    relay = _Relay(proc)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with code {proc.poll()}" if proc.poll() is not None else "did not answer"
                relay.thread.join(timeout=2)
                raise UIError(f"the MLflow UI {state} before serving {url}:\n{relay.tail()}")
            time.sleep(0.25)
        relay.live = True  # from now on the server's log goes to the terminal, as with plain `mlflow ui`
        if on_ready is not None:
            on_ready(url)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP (kill, a closed terminal) stop the UI like Ctrl-C does: with its server, not without."""
    raise KeyboardInterrupt


class _Relay:
    """Reads the server's output: kept (last lines) until it serves, then passed through to stderr."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=15)
        self.live = False
        self.thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self.thread.start()

    def _run(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line.rstrip())
            if self.live:
                sys.stderr.write(line)

    def tail(self) -> str:
        return "\n".join(self.lines)
