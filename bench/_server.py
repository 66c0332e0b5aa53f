"""A server under benchmark in a child process: start, wait until ready, CPU time, log, stop.

Shared by ``bench.web_chat`` and ``bench.phone_calls``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["HOST", "ServerProcess", "cpu_seconds", "free_port"]

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0.0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A server in a child process; its log goes to ``workdir/<name>.log``.

    ``cmd`` must contain ``--port N``. Subclasses say when the server is ready.
    """

    name = "server"
    poll_s = 0.2
    """How often :meth:`wait_ready` asks :meth:`ready`, in s."""

    def __init__(self, workdir: Path, cmd: list[str], env: dict[str, str]) -> None:
        self.port = int(cmd[cmd.index("--port") + 1])
        self.log_path = workdir / f"{self.name}.log"
        self._log = self.log_path.open("wb")
        # cwd = workdir: no .env from the checkout leaks into the bench server.
        self.proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Return once :meth:`ready`; raise RuntimeError (with the log's tail) if the
        process exits or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if self.ready():
                return
            time.sleep(self.poll_s)
        raise RuntimeError(f"{self.name} not ready within {timeout_s:g} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def gateway_serve_cmd(port: int, clients_dir: Path) -> list[str]:
    """The command line of ``gateway serve`` on ``HOST:port`` (one uvicorn worker)."""
    return [
        sys.executable,
        "-c",
        "from gateway.cli import main; main()",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--clients-dir",
        str(clients_dir),
    ]


def gateway_bench_env(data_dir: Path) -> dict[str, str]:
    """This environment without REDIS_URL/DATABASE_URL, the data folder set,
    warnings-only logs and every web rate limit lifted (the bench is the load)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        GATEWAY_DATA_DIR=str(data_dir),
        GATEWAY_LOG_LEVEL="WARNING",
        GATEWAY_WEB_RATE_PER_S="1000000",
        GATEWAY_WEB_RATE_BURST="1000000",
        GATEWAY_WEB_NEW_SESSIONS_PER_MIN="1000000",
    )
    return env
