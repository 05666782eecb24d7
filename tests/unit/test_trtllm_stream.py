"""TRTLLMBackend.generate's glue, run here without a GPU: a scripted stand-in for TensorRT-LLM's
`LLM.generate_async` result (an async iterator of itself whose `.outputs` grow, with `.finished` and
`.abort()`, as in tensorrt_llm/executor/result.py). Only the engine is stood in; our backend, mapping,
detokenizer and tokenizer are the real ones. The real engine runs in bench/trtllm_check.py on a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from backends.errors import ContextLengthExceeded, InvalidRequest
from backends.trtllm import TRTLLMBackend, TRTLLMConfig
from backends.trtllm.outputs import TokenTexts
from backends.types import FinishReason, GenerateRequest, SamplingParams
from tests.unit.test_trtllm_mapping import TRTLLM_SAMPLING_FIELDS


class StandInSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self.best_of = kwargs.get("best_of") or kwargs["n"]  # as tensorrt_llm's __post_init__ does


class ScriptedResult:
    def __init__(self, script: list[list]):
        self.script, self.outputs, self.finished, self.aborted = script, [], False, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.finished or not self.script:
            raise StopAsyncIteration
        self.outputs = self.script.pop(0)
        self.finished = all(o.finish_reason for o in self.outputs)
        return self

    def abort(self):
        self.aborted = True


class ScriptedLLM:
    def __init__(self, script):
        self.result, self.calls = ScriptedResult(script), []

    def generate_async(self, prompt_ids, sampling_params, streaming):
        self.calls.append((prompt_ids, sampling_params, streaming))
        return self.result


def out(ids, finish=None):
    return SimpleNamespace(token_ids=list(ids), finish_reason=finish, logprobs=[], cumulative_logprob=None)


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


def started(bundled_model_dir, tokenizer, script) -> TRTLLMBackend:
    """The backend as start() leaves it, with the scripted engine in TensorRT-LLM's place."""
    backend = TRTLLMBackend(TRTLLMConfig(model=str(bundled_model_dir)))
    backend._llm = ScriptedLLM(script)
    backend._hf_tokenizer = tokenizer
    backend._token_texts = TokenTexts(tokenizer)
    backend._vocab_size = 4096
    backend._sampling_params_class = StandInSamplingParams
    backend._sampling_fields = frozenset(TRTLLM_SAMPLING_FIELDS)
    return backend


async def collect(backend, **sampling):
    request = GenerateRequest("r", "m", SamplingParams(**sampling), prompt="Hello there")
    return [d async for d in backend.generate(request)]


async def test_two_interleaved_choices_stream_and_the_last_delta_carries_usage(bundled_model_dir, tokenizer):
    a, b = tokenizer.encode(" red green blue"), tokenizer.encode(" one two")
    script = [[out(a[:1]), out([])], [out(a[:1]), out(b[:1])], [out(a, "length"), out(b[:1])],
              [out(a, "length"), out(b, "stop")]]
    backend = started(bundled_model_dir, tokenizer, script)
    deltas = await collect(backend, n=2, temperature=0.9, max_tokens=len(a))
    assert "".join(d.text for d in deltas if d.index == 0) == " red green blue"
    assert "".join(d.text for d in deltas if d.index == 1) == " one two"
    assert [d.finish_reason for d in deltas if d.finish_reason] == [FinishReason.LENGTH, FinishReason.STOP]
    assert [d.usage for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    prompt_len = len(tokenizer.encode("Hello there"))
    assert (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (prompt_len, len(a) + len(b))
    prompt_ids, params, streaming = backend._llm.calls[0]
    assert streaming and params.n == 2 and params.max_tokens == len(a) and prompt_ids == tokenizer.encode("Hello there")
    assert not backend._llm.result.aborted


async def test_closing_the_stream_aborts_the_engine_request(bundled_model_dir, tokenizer):
    ids = tokenizer.encode(" a b c d e f")
    backend = started(bundled_model_dir, tokenizer, [[out(ids[:i])] for i in range(1, len(ids))])
    stream = backend.generate(GenerateRequest("r", "m", SamplingParams(max_tokens=50), prompt="Hello"))
    await stream.__anext__()
    await stream.aclose()
    assert backend._llm.result.aborted


async def test_a_stop_string_finishes_the_request_and_aborts_the_rest(bundled_model_dir, tokenizer):
    ids = tokenizer.encode(" alpha beta. gamma delta epsilon")
    backend = started(bundled_model_dir, tokenizer, [[out(ids[:i])] for i in range(1, len(ids) + 1)])
    deltas = await collect(backend, stop=["."], max_tokens=40)
    assert "".join(d.text for d in deltas) == " alpha beta"
    assert deltas[-1].finish_reason == FinishReason.STOP and deltas[-1].usage is not None
    assert backend._llm.result.aborted


async def test_best_of_waits_for_the_final_ranked_result(bundled_model_dir, tokenizer):
    ids = tokenizer.encode(" x y")
    backend = started(bundled_model_dir, tokenizer, [[out(ids, "length")]])
    backend._llm.result.aresult = _returning(backend._llm.result)
    deltas = await collect(backend, n=1, best_of=3, temperature=1.0, max_tokens=len(ids))
    assert backend._llm.calls[0][2] is False  # not streamed
    assert [d.token_ids for d in deltas] == [ids] and deltas[0].usage.completion_tokens == len(ids)


def _returning(result):
    async def aresult():
        result.outputs = result.script.pop(0)
        result.finished = True
        return result
    return aresult


async def test_requests_are_checked_before_the_engine_sees_them(bundled_model_dir, tokenizer):
    backend = started(bundled_model_dir, tokenizer, [])
    with pytest.raises(ContextLengthExceeded):
        await collect(backend, max_tokens=1024)
    with pytest.raises(InvalidRequest, match="typical_p"):
        await collect(backend, typical_p=0.9)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        await anext(backend.generate(GenerateRequest("r", "m", SamplingParams(), prompt_token_ids=[4096])))
    backend._sampling_fields = TRTLLM_SAMPLING_FIELDS - {"prompt_ignore_length"}  # a TensorRT-LLM before 1.x
    with pytest.raises(InvalidRequest, match="newer tensorrt_llm") as err:
        await collect(backend, presence_penalty=0.5)
    assert err.value.param == "presence_penalty"
    assert backend._llm.calls == []


def test_logit_bias_reaches_trtllm_as_a_float32_tensor_over_the_model_vocabulary(bundled_model_dir, tokenizer):
    backend = started(bundled_model_dir, tokenizer, [])
    request = GenerateRequest("r", "m", SamplingParams(logit_bias={3: 2.5}), prompt="Hi")
    bias = backend._sampling_params(request, [1, 2]).embedding_bias
    assert str(bias.dtype) == "torch.float32" and bias.shape == (4096,)
    assert bias[3].item() == 2.5 and bias.sum().item() == 2.5
