"""Tool calls on every installed backend (conftest.FACTORIES), the way the chat front end asks for them.

Each backend declares its ToolSupport. GRAMMAR backends (hf, vllm in process) get the rendered prompt and
the constraint of the tool choice, and the front end's reader finds the calls in their text; UPSTREAM
backends (openai in front of turnout and of vLLM's server) get the tools and messages and send the calls
back as deltas. Either way every call names a given function and its arguments validate against its
schema. The others (tgi, trtllm) are refused by the front end with InvalidRequest (a 400) naming `tools`.

One upstream does not hold its side: vLLM 0.32's server (which needs a tool parser for required and named
choices; hermes reads the bundled template's syntax) constrains the call's name but not its arguments on
this model (`{"a": ...}` comes back as the string "True"). Its calls are checked for what does hold (they
arrive in OpenAI's shape, naming given functions, with JSON arguments) and the gap is recorded here.
"""

from __future__ import annotations

import itertools
import json
from contextlib import aclosing

import jsonschema
import pytest

from backends.errors import InvalidRequest
from backends.types import GenerateRequest, SamplingParams, ToolChoice, ToolFunction, ToolSupport
from server.openai.convert import render_chat
from server.openai.tool_calls import message_calls
from server.tool_calling.plan import tool_plan
from tests.contract.conftest import MODEL_NAME

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUPPORT = {"hf": ToolSupport.GRAMMAR, "vllm": ToolSupport.GRAMMAR, "openai-turnout": ToolSupport.UPSTREAM,
           "openai-vllm": ToolSupport.UPSTREAM, "tgi": ToolSupport.NONE, "trtllm": ToolSupport.NONE}
WEATHER = ToolFunction("get_weather", "Current weather in a city", {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]})
ADD = ToolFunction("add", None, {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0,
                                                                        "maximum": 9}}, "required": ["a"]})
FUNCTIONS = [WEATHER, ADD]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
UNCONSTRAINED_UPSTREAM = {"openai-vllm"}
_ids = itertools.count()


async def calls_made(harness, choice: ToolChoice) -> list[dict]:
    backend = harness.backend
    plan = tool_plan(FUNCTIONS, choice, True, backend.tool_support, MODEL_NAME, history_has_calls=False)
    sampling = SamplingParams(max_tokens=200, temperature=0.0)
    rid = f"contract-tools-{next(_ids)}"
    if plan.support is ToolSupport.GRAMMAR:
        sampling.json_schema = plan.constraint()
        prompt = await render_chat(backend.tokenizing, MESSAGES, True, plan.template_tools())
        request = GenerateRequest(rid, MODEL_NAME, sampling, prompt_token_ids=prompt)
    else:
        request = GenerateRequest(rid, MODEL_NAME, sampling, messages=MESSAGES, tools=FUNCTIONS, tool_choice=choice)
    async with aclosing(backend.generate(request)) as stream:
        deltas = [delta async for delta in stream]
    if plan.support is ToolSupport.GRAMMAR:
        reader = plan.reader()
        read = reader.feed("".join(d.text for d in deltas))
        read += reader.finish()
        return message_calls(read.calls)
    return message_calls([piece for d in deltas for piece in d.tool_calls or ()])


@pytest.mark.parametrize("choice", [ToolChoice("required"), ToolChoice("function", "add")],
                         ids=["required", "named"])
async def test_calls_validate_against_their_schema_or_tools_are_refused(harness, choice):
    support = harness.backend.tool_support
    assert support is SUPPORT[harness.kind]
    if support is ToolSupport.NONE:
        with pytest.raises(InvalidRequest) as refused:
            tool_plan(FUNCTIONS, choice, True, support, MODEL_NAME, history_has_calls=False)
        assert refused.value.param == "tools"
        return
    calls = await calls_made(harness, choice)
    assert calls, f"{harness.kind} made no call under tool_choice {choice.mode}"
    schemas = {f.name: f.parameters for f in FUNCTIONS}
    for call in calls:
        assert call["id"] and call["type"] == "function"
        assert call["function"]["name"] in schemas
        if choice.mode == "function":
            assert call["function"]["name"] == "add"
        arguments = json.loads(call["function"]["arguments"])
        if harness.kind not in UNCONSTRAINED_UPSTREAM:
            jsonschema.validate(arguments, schemas[call["function"]["name"]])
