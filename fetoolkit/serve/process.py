"""Start the service as users do (``python -m fetoolkit.serve``) in a child process and stop it.

Used by ``make bench-serve`` and by the tests, which talk HTTP to a real server process
(``launch`` also starts ``fetoolkit.serve.bare``, the benchmark's reference app).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``python -m fetoolkit.serve`` child process listening on ``HOST:port``."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's stdout/stderr log."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def start_server(
    overrides: Sequence[str],
    run_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    want_status: int = 200,
    timeout: float = 240.0,
    cwd: Path | None = None,
) -> ServerProcess:
    """``python -m fetoolkit.serve hydra.run.dir=run_dir *overrides`` on a free port (``PORT``), with
    ``LOG_LEVEL=warning`` and ``env`` added to this process's environment; waits (bounded) until
    ``GET /api/health`` answers ``want_status`` (200: healthy; 503: up but the model did not load).

    Raises:
        RuntimeError: the process exited, or ``timeout`` passed first (the message ends with its log).
    """
    return launch(
        ["-m", "fetoolkit.serve", f"hydra.run.dir={run_dir}", *overrides],
        run_dir,
        env=env,
        want_status=want_status,
        timeout=timeout,
        cwd=cwd,
    )


def launch(
    python_args: Sequence[str],
    run_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    want_status: int = 200,
    timeout: float = 240.0,
    cwd: Path | None = None,
) -> ServerProcess:
    """``python *python_args`` (this interpreter) serving HTTP on a free port it is given as ``PORT``;
    its output goes to ``run_dir/server.log``. Waits as ``start_server`` does."""
    import httpx

    port = free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "server.log"
    full_env = {**os.environ, "PORT": str(port), "LOG_LEVEL": "warning", **(env or {})}
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, *python_args], cwd=cwd, env=full_env, stdout=logf, stderr=subprocess.STDOUT
        )
    server = ServerProcess(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/api/health", timeout=2.0).status_code == want_status:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"no /api/health {want_status} within {timeout} s:\n{server.log_tail()}")
