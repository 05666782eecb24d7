"""Our server as a child process, the way users run it (`turnout serve`), with start-up time and memory.

Start-up time is from spawning the process to GET /ready answering 200 (imports, model load, engine start).
Memory is the resident set of the server process and any children, read with psutil after loading and
again whenever asked (the KV cache fills lazily, so RSS after a load run is the honest peak-ish number).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


class ChildServer:
    """An HTTP server in a child process: `start()` (or `with`) spawns it and waits until `ready_url`
    answers 200, recording the start-up time; `stop()` ends it. Its output goes to a log file, removed
    after a clean stop and quoted in errors."""

    def __init__(self, name: str, args: list[str], ready_url: str, *, env: dict | None = None,
                 ready_timeout_s: float = 180.0, own_session: bool = False):
        """`own_session` starts it in its own process group, which `stop()` then signals as a whole (for
        servers with children of their own, like vLLM's engine core)."""
        self.name, self.args, self.ready_url, self.env = name, args, ready_url, env
        self.ready_timeout_s = ready_timeout_s
        self.own_session = own_session
        self.startup_s: float | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self._proc: subprocess.Popen | None = None

    def start(self):
        start = time.perf_counter()
        self._proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=self.own_session)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.perf_counter() + self.ready_timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.perf_counter() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")
                try:
                    if http.get(self.ready_url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {self.ready_timeout_s}s:\n{self.log_tail()}")

    def rss_mb(self) -> float:
        """Resident memory of the server and its children, in MiB."""
        proc = psutil.Process(self._proc.pid)
        procs = [proc, *proc.children(recursive=True)]
        return round(sum(p.memory_info().rss for p in procs) / 2**20, 1)

    def pin_to(self, cpus: set[int]) -> None:
        """Run every thread of the server's process tree on `cpus` only (as `taskset -a` would)."""
        proc = psutil.Process(self._proc.pid)
        for p in (proc, *proc.children(recursive=True)):
            for thread in p.threads():
                os.sched_setaffinity(thread.id, cpus)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process tree has used so far."""
        proc = psutil.Process(self._proc.pid)
        times = [p.cpu_times() for p in (proc, *proc.children(recursive=True))]
        return sum(t.user + t.system for t in times)

    @property
    def log_path(self) -> Path:
        """Its output so far (removed by a clean `stop()`)."""
        self._log.flush()
        return Path(self._log.name)

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        self._log.close()
        if self._proc is not None and self._proc.returncode in (0, -signal.SIGTERM):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._log.name)

    def _signal(self, sig: int) -> None:
        if self.own_session:
            os.killpg(self._proc.pid, sig)
        else:
            self._proc.send_signal(sig)


class ServerProcess(ChildServer):
    """`with ServerProcess(model_dir, ...) as server:` starts `turnout serve`, waits until ready, stops it."""

    def __init__(self, model_dir: str, served_model_name: str, *, num_threads: int, max_num_seqs: int = 64,
                 extra_args: list[str] | None = None, ready_timeout_s: float = 180.0,
                 command: list[str] | None = None, own_session: bool = False):
        """`command` replaces the `turnout` executable (e.g. `[sys.executable, "-m", "server"]` to run this
        checkout's code rather than the installed one). `own_session`: see `ChildServer`; it also gives the
        server its own scheduling autogroup, as a separately deployed service would have."""
        self.port = free_port()
        self.served_model_name = served_model_name
        args = [*(command or turnout_command()), "serve", "--model", model_dir, "--served-model-name",
                served_model_name, "--port", str(self.port), "--num-threads", str(num_threads),
                "--max-num-seqs", str(max_num_seqs), "--log-level", "warning", *(extra_args or [])]
        super().__init__("turnout-serve", args, f"http://127.0.0.1:{self.port}/ready",
                         ready_timeout_s=ready_timeout_s, own_session=own_session)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
