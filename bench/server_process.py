"""Our server as a child process, the way users run it (`turnout serve`), with start-up time and memory.

Start-up time is from spawning the process to GET /ready answering 200 (imports, model load, engine start).
Memory is the resident set of the server process and any children, read with psutil after loading and
again whenever asked (the KV cache fills lazily, so RSS after a load run is the honest peak-ish number).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def turnout_command() -> list[str]:
    """The `turnout` console script of this interpreter's environment, else `python -m server`."""
    script = Path(sys.executable).parent / "turnout"
    if script.exists():
        return [str(script)]
    found = shutil.which("turnout")
    return [found] if found else [sys.executable, "-m", "server"]


class ServerProcess:
    """`with ServerProcess(model_dir, ...) as server:` starts `turnout serve`, waits until ready, stops it."""

    def __init__(self, model_dir: str, served_model_name: str, *, num_threads: int, max_num_seqs: int = 64,
                 extra_args: list[str] | None = None, ready_timeout_s: float = 180.0,
                 command: list[str] | None = None):
        """`command` replaces the `turnout` executable (e.g. `[sys.executable, "-m", "server"]` to run this
        checkout's code rather than the installed one)."""
        self.port = free_port()
        self.served_model_name = served_model_name
        self.args = [*(command or turnout_command()), "serve", "--model", model_dir, "--served-model-name", served_model_name,
                     "--port", str(self.port), "--num-threads", str(num_threads),
                     "--max-num-seqs", str(max_num_seqs), "--log-level", "warning", *(extra_args or [])]
        self.ready_timeout_s = ready_timeout_s
        self.startup_s: float | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="turnout-bench-", suffix=".log", delete=False)
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerProcess:
        start = time.perf_counter()
        self._proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.perf_counter() + self.ready_timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.perf_counter() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"turnout serve exited with {self._proc.returncode}:\n{self.log_tail()}")
                try:
                    if http.get(f"http://127.0.0.1:{self.port}/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"turnout serve not ready after {self.ready_timeout_s}s:\n{self.log_tail()}")

    def rss_mb(self) -> float:
        """Resident memory of the server and its children, in MiB."""
        proc = psutil.Process(self._proc.pid)
        procs = [proc, *proc.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in procs) / 2**20, 1)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process tree has used so far."""
        proc = psutil.Process(self._proc.pid)
        times = [p.cpu_times() for p in (proc, *proc.children(recursive=True))]
        return sum(t.user + t.system for t in times)

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        if self._proc is not None and self._proc.returncode in (0, -15):
            os.unlink(self._log.name)
