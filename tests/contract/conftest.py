"""One backend per parameter, loaded once per test run and shared by every contract test.

All backends serve the bundled model, so their answers can be compared with each other and with
`transformers` itself. The backends live on one session-wide event loop: an engine binds to the loop
it was started on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio

from backends.base import Backend
from tests.contract.trtllm_backend import TRTLLM_PARAM

MODEL_NAME = "turnout-tiny"


@dataclass
class Harness:
    kind: str
    backend: Backend
    running: Callable[[], int] | None
    """Sequences the serving engine is running now (to see that an abort reached it)."""
    generated: Callable[[], int] | None = None
    """For an upstream too fast to catch running (vLLM finishes 1,000 tokens in about a second): tokens it
    has generated in total, to check that an aborted request stopped well short of its max_tokens."""


def _hf(model_dir) -> tuple[Backend, Callable[[], int], Callable[[], None]]:
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig

    backend = HFBackend(HFEngineConfig(model=str(model_dir), served_model_name=MODEL_NAME, max_num_seqs=16))
    return backend, lambda: backend.engine.num_running, lambda: None


def _vllm(model_dir):
    from backends.vllm import VLLMBackend, VLLMConfig

    backend = VLLMBackend(VLLMConfig(model=str(model_dir), served_model_name=MODEL_NAME, dtype="float32",
                                     max_model_len=1024, max_num_seqs=16))
    return backend, lambda: backend.engine.get_num_unfinished_requests(), lambda: None


def _openai_turnout(model_dir):
    from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig
    from tests.server_thread import ServerThread

    server = ServerThread.for_model(model_dir, MODEL_NAME, max_num_seqs=16).start()
    backend = OpenAIUpstreamBackend(OpenAIUpstreamConfig(url=server.base_url, model=MODEL_NAME))
    return backend, lambda: server.engine().num_running, server.stop


def _openai_vllm(model_dir):
    from backends.openai import OpenAIUpstreamBackend, OpenAIUpstreamConfig
    from bench.vllm_server import VLLMServerProcess

    # hermes: vLLM's parser for the bundled template's tool-call syntax (its required and named tool
    # choices need a parser set too)
    upstream = VLLMServerProcess(str(model_dir), MODEL_NAME, max_num_seqs=16, extra_args=[
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']).start()
    backend = OpenAIUpstreamBackend(OpenAIUpstreamConfig(url=upstream.base_url, model=MODEL_NAME))
    return backend, None, upstream.stop, upstream.generation_tokens


def _tgi(model_dir):
    from backends.tgi import TGIBackend, TGIBackendConfig
    from tests.server_thread import ServerThread

    server = ServerThread.for_model(model_dir, MODEL_NAME, max_num_seqs=16).start()
    backend = TGIBackend(TGIBackendConfig(url=server.url, served_model_name=MODEL_NAME))
    return backend, lambda: server.engine().num_running, server.stop


def _trtllm(model_dir):
    from tests.contract.trtllm_backend import make_trtllm_backend

    backend = make_trtllm_backend(model_dir, MODEL_NAME)
    # TensorRT-LLM's executor exposes no public running count; its request stats list the live ones.
    return backend, lambda: len(getattr(backend, "live_requests", lambda: [])()), lambda: None


FACTORIES = {
    "hf": _hf,
    "vllm": _vllm,
    "openai-turnout": _openai_turnout,
    "openai-vllm": _openai_vllm,
    "tgi": _tgi,
    "trtllm": _trtllm,
}
PARAMS = [TRTLLM_PARAM if kind == "trtllm" else kind for kind in FACTORIES]


@pytest_asyncio.fixture(scope="session", loop_scope="session", params=PARAMS)
async def harness(request, bundled_model_dir):
    backend, running, stop_upstream, *generated = FACTORIES[request.param](bundled_model_dir)
    try:
        await backend.start()
        yield Harness(request.param, backend, running, *generated)
    finally:
        await backend.close()
        stop_upstream()


@pytest.fixture(scope="session")
def tokenizer(bundled_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_model_dir)


@pytest.fixture(scope="session")
def reference_greedy(bundled_model_dir, tokenizer):
    """transformers' own greedy continuation, the answer every backend must give."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()
    cache: dict[tuple[str, int], list[int]] = {}

    def greedy(prompt: str, max_tokens: int) -> list[int]:
        if (prompt, max_tokens) not in cache:
            ids = torch.tensor([tokenizer.encode(prompt)])
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or 0)
            cache[(prompt, max_tokens)] = out[0, ids.shape[1]:].tolist()
        return cache[(prompt, max_tokens)]

    return greedy


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll without blocking the loop (in-process engines deliver their outputs on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()
