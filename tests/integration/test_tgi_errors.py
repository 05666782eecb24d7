"""TGI's error shapes for failures the real engine does not produce on demand: a gateway-logic test with a
backend that fails on purpose (overloaded before starting, dead after the first token)."""

import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import GenerationError, OverloadedError

from backends.errors import EngineDead, Overloaded, UpstreamError
from backends.tgi import TGIBackend, TGIBackendConfig
from backends.types import FinishReason, GenerateRequest, ModelInfo, OutputDelta, SamplingParams
from tests.inert_backend import InertBackend
from tests.server_thread import ServerThread


class FailingBackend(InertBackend):
    """Overloaded when the prompt says so; otherwise one token, then the engine dies."""

    info = ModelInfo(name="failing", max_model_len=64)

    async def generate(self, request):
        if request.prompt == "busy":
            raise Overloaded("no free slot")
        yield OutputDelta(token_ids=[7], text="a", finish_reason=None)
        if request.prompt == "fine":
            yield OutputDelta(token_ids=[8], text="b", finish_reason=FinishReason.LENGTH)
            return
        raise EngineDead("engine failed: boom")


@pytest.fixture(scope="module")
def failing_server():
    srv = ServerThread({"failing": FailingBackend()}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tgi(failing_server):
    return InferenceClient(model=failing_server.url, timeout=30)


def test_overloaded_is_429_overloaded(tgi):
    with pytest.raises(OverloadedError, match="no free slot") as err:
        tgi.text_generation("busy", max_new_tokens=2)
    assert err.value.__cause__.response.status_code == 429
    with pytest.raises(OverloadedError):
        list(tgi.text_generation("busy", max_new_tokens=2, stream=True))


def test_failure_mid_stream_is_a_generation_error_event(tgi):
    assert tgi.text_generation("fine", max_new_tokens=2) == "ab"
    stream = tgi.text_generation("x", max_new_tokens=2, stream=True)
    assert next(stream) == "a"
    with pytest.raises(GenerationError, match="boom"):
        next(stream)
    with pytest.raises(GenerationError) as err:
        tgi.text_generation("x", max_new_tokens=2)
    assert err.value.__cause__.response.status_code == 424


async def test_tgi_backend_maps_upstream_failures(failing_server):
    backend = TGIBackend(TGIBackendConfig(url=failing_server.url, timeout=30))
    await backend.start()
    try:
        assert backend.info.name == "failing" and backend.info.max_model_len == 64
        busy = backend.generate(GenerateRequest("r1", "failing", SamplingParams(max_tokens=2), prompt="busy"))
        with pytest.raises(Overloaded, match="no free slot"):
            await anext(busy)
        dying = backend.generate(GenerateRequest("r2", "failing", SamplingParams(max_tokens=2), prompt="x"))
        assert (await anext(dying)).text == "a"
        with pytest.raises(UpstreamError, match="boom"):
            await anext(dying)
    finally:
        await backend.close()
