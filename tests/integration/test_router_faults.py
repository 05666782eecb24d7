"""Fault test: two replicas of the bundled model behind the router, one crashes under concurrent load.

Non-streaming requests must all succeed (the router restarts them on the other replica); streams that
were running on the crashed replica must end with an error event, never a silently truncated 200.
"""

from __future__ import annotations

import asyncio

import openai
import pytest

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from server.config import RouterSettings
from server.router import Router
from tests.server_thread import ServerThread

MODEL = "tiny-pair"
MAX_TOKENS = 120  # long enough that both replicas are surely decoding several at once when one crashes


@pytest.fixture
def pair(bundled_model_dir):
    replicas = [HFBackend(HFEngineConfig(model=str(bundled_model_dir), served_model_name=MODEL, max_num_seqs=32,
                                         num_threads=1)) for _ in range(2)]
    # Checks every 0.2 s find the crash at once; their timeout is generous so that a loaded machine does not
    # take a healthy in-process engine out of rotation.
    router = Router({MODEL: replicas}, settings=RouterSettings(health_check_interval=0.2, health_check_timeout=10))
    server = ServerThread.for_router(router).start()
    yield server, replicas
    server.stop()


def crash(backend: HFBackend) -> None:
    """Make the engine's next step raise, as a real engine fault (OOM, CUDA error) would."""
    def broken_step():
        raise RuntimeError("injected fault: the replica's engine crashed")

    backend.engine.core.step = broken_step


async def one_request(client: openai.AsyncOpenAI, i: int) -> tuple[str, str]:
    """('ok', text) or ('cut', error message)."""
    common = dict(model=MODEL, prompt=f"The for statement {i}", max_tokens=MAX_TOKENS, temperature=0.0,
                  extra_body={"ignore_eos": True})
    if i % 2 == 0:
        response = await client.completions.create(**common)
        assert response.usage.completion_tokens == MAX_TOKENS
        return "ok", response.choices[0].text
    pieces, finish = [], None
    try:
        stream = await client.completions.create(**common, stream=True)
        async for chunk in stream:
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
    except openai.APIError as exc:
        return "cut", str(exc.message)
    assert finish == "length", "a stream ended without a finish reason or an error event"
    return "ok", "".join(pieces)


def test_one_replica_crashing_midway_loses_no_buffered_request(pair):
    server, replicas = pair

    async def load():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=120)
        first_wave = [asyncio.create_task(one_request(client, i)) for i in range(32)]
        # Crash one replica once both are busy decoding the first wave.
        deadline = asyncio.get_running_loop().time() + 60
        while min(r.engine.num_running for r in replicas) < 4:
            assert asyncio.get_running_loop().time() < deadline, (
                "the replicas never both ran 4 requests at once", server.router.replica_health(),
                [(r.engine.num_running, r.engine.num_waiting) for r in replicas])
            await asyncio.sleep(0.01)
        await asyncio.to_thread(crash, replicas[0])
        second_wave = [asyncio.create_task(one_request(client, i)) for i in range(32, 64)]
        results = await asyncio.gather(*first_wave, *second_wave, return_exceptions=True)
        await client.close()
        return results

    results = asyncio.run(load())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"requests failed outright: {errors[:3]}"
    by_index = dict(enumerate(results))
    buffered = [by_index[i] for i in by_index if i % 2 == 0]
    streamed = [by_index[i] for i in by_index if i % 2 == 1]
    assert all(kind == "ok" for kind, _ in buffered), "a non-streaming request failed"
    cut = [message for kind, message in streamed if kind == "cut"]
    assert cut, "no stream was running on the crashed replica: the test did not exercise a mid-stream failure"
    assert all("failed after the stream started" in m for m in cut), cut[:2]
    assert all(kind == "ok" for kind, _ in streamed[16:]), "streams started after the crash must not be cut"
    assert server.router.replica_health()[MODEL] == {f"{MODEL}/0": False, f"{MODEL}/1": True}
