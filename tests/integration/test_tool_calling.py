"""Tool calling on /v1/chat/completions through the official openai client, against real servers.

`required` and named choices run on the bundled model: a grammar makes every call parse and follow its
schema whatever the model. `auto` needs a model that chooses, so a copy of the bundled model is fine-tuned
here for ~40 s (`tools finetune --method full`) on conversations that call a weather function or answer in
text; it then calls where asked and answers in text otherwise, in the bundled template's syntax."""

import itertools
import json
import random

import jsonschema
import openai
import pytest

from server.tool_calling.rendering import call_text, instructions
from tests.server_thread import ServerThread
from tools.cli import main as tools_main

MODEL = "turnout-tiny"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0,
                                                                         "maximum": 99},
                                                                   "b": {"type": "integer", "minimum": 0,
                                                                         "maximum": 99}},
                                  "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def streamed(client, **request):
    """The reply as the client's stream helper assembles it."""
    with client.chat.completions.stream(**request) as stream:
        for _ in stream:
            pass
        return stream.get_final_completion().choices[0]


def calls(message):
    return [(c.function.name, c.function.arguments) for c in message.tool_calls or ()]


def check_valid(message):
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "add"}}],
                         ids=["required", "named"])
def test_constrained_call_parses_validates_and_streams_the_same(client, tool_choice):
    request = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=tool_choice, max_tokens=120,
                   temperature=0)
    whole = client.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    check_valid(whole.message)
    if isinstance(tool_choice, dict):
        assert [c.function.name for c in whole.message.tool_calls] == ["add"]
    stream = streamed(client, **request)
    assert stream.finish_reason == "tool_calls" and stream.message.content is None
    assert calls(stream.message) == calls(whole.message)


def test_raw_stream_sends_id_and_name_first_then_argument_fragments(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice={
        "type": "function", "function": {"name": "get_weather"}}, max_tokens=120, temperature=0, stream=True))
    entries = [e for c in chunks for e in c.choices[0].delta.tool_calls or ()]
    assert entries[0].index == 0 and entries[0].id.startswith("call_") and entries[0].type == "function"
    assert entries[0].function.name == "get_weather" and entries[0].function.arguments == ""
    assert len(entries) > 2 and all(e.id is None and e.function.name is None for e in entries[1:])
    jsonschema.validate(json.loads("".join(e.function.arguments for e in entries)), SCHEMAS["get_weather"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_required_without_parallel_calls_makes_exactly_one(client):
    for seed in range(3):
        choice = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=False, max_tokens=120, seed=seed).choices[0]
        assert len(choice.message.tool_calls) == 1
        check_valid(choice.message)


def test_round_trip_the_tool_result_reaches_the_model_and_it_answers(client, server):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=120, temperature=0).choices[0]
    call = first.message.tool_calls[0]
    history = [*ASK, first.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, tool_choice="none",
                                            max_tokens=24, temperature=0).choices[0]
    assert answer.message.tool_calls is None and answer.message.content
    assert answer.finish_reason in ("stop", "length")
    # what the model was shown: the tool list, its own call in the template's syntax, and the result
    rendered = _rendered(client, server, history, TOOLS)
    assert instructions(TOOLS) in rendered
    assert call_text(call.function.name, call.function.arguments) in rendered
    assert "<tool_response>\nsunny, 21 degrees\n</tool_response>" in rendered


def _rendered(client, server, messages, tools) -> str:
    import httpx

    tokens = httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "messages": messages, "tools": tools}
                        ).raise_for_status().json()["tokens"]
    return httpx.post(f"{server.url}/detokenize", json={"model": MODEL, "tokens": tokens}
                      ).raise_for_status().json()["prompt"]


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools.0.type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
     "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools.0.function.parameters"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "sometimes", "tools": TOOLS}, "tool_choice"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": TOOLS, "messages": [*ASK, {"role": "tool", "content": "x"}]}, "messages.1"),
    ({"tools": TOOLS, "messages": [{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages.0"),
]


@pytest.mark.parametrize("fields,param", BAD, ids=[p for _, p in BAD])
def test_invalid_tool_fields_are_a_400_naming_the_field(client, fields, param):
    request = {"model": MODEL, "messages": ASK, "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param, caught.value.body


def test_tools_with_tool_choice_none_answer_in_text(client):
    choice = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="none",
                                            max_tokens=8, temperature=0).choices[0]
    assert choice.message.tool_calls is None and choice.message.content


# -- auto, on a model that has learnt to choose ------------------------------------------------------------

CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Lisbon", "Prague", "Dublin",
          "Athens", "Warsaw", "Tokyo", "Lima", "Cairo", "Delhi"]
TOPICS = ["lists", "tuples", "the with statement", "generators", "decorators", "classes", "modules", "exceptions"]
CITY = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _record(question: str, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": instructions([CITY])}, {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def _call(city: str) -> str:
    return call_text("get_weather", json.dumps({"city": city}))


@pytest.fixture(scope="module")
def caller(bundled_model_dir, tmp_path_factory):
    """A server on the bundled model fine-tuned (~40 s) to call get_weather once, twice (to compare two
    cities) or answer in text."""
    work = tmp_path_factory.mktemp("tool-caller")
    records = [_record(f"What is the weather in {c}?", _call(c)) for c in CITIES]
    pairs = list(itertools.combinations(CITIES, 2))
    random.Random(1).shuffle(pairs)
    records += [_record(f"Compare the weather in {a} and {b}.", _call(a) + "\n" + _call(b)) for a, b in pairs[:24]]
    records += [_record(f"Tell me about {t}.", f"Python has {t}.") for t in TOPICS]
    random.Random(0).shuffle(records)
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code = tools_main(["finetune", "--model", str(bundled_model_dir), "--data", str(work / "train.jsonl"),
                       "--out", str(work / "model"), "--method", "full", "--epochs", "6", "--batch-size", "8",
                       "--lr", "1e-3", "--max-eval", "1", "--max-new-tokens", "4", "--threads", "2", "--quiet",
                       "--no-eval-before", "--report", str(work / "report.json")])
    assert code == 0
    server = ServerThread.for_model(work / "model", "caller", max_num_seqs=8, num_threads=2).start()
    yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    server.stop()


def _auto(question: str, **fields) -> dict:
    return dict(model="caller", messages=[{"role": "user", "content": question}], tools=[CITY], max_tokens=150,
                temperature=0, **fields)


def test_auto_calls_when_asked_and_streams_the_same_call(caller):
    request = _auto("What is the weather in Paris?")
    whole = caller.chat.completions.create(**request).choices[0]
    assert whole.finish_reason == "tool_calls", whole.message
    assert [c.function.name for c in whole.message.tool_calls] == ["get_weather"]
    assert "city" in json.loads(whole.message.tool_calls[0].function.arguments)
    stream = streamed(caller, **request)
    assert stream.finish_reason == "tool_calls" and calls(stream.message) == calls(whole.message)
    assert stream.message.content == whole.message.content


def test_auto_answers_in_text_when_no_call_is_wanted(caller):
    choice = caller.chat.completions.create(**_auto("Tell me about lists.")).choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content.startswith("Python has")


def test_auto_parallel_calls_and_parallel_tool_calls_false(caller):
    both = caller.chat.completions.create(**_auto("Compare the weather in Paris and London.")).choices[0]
    assert both.finish_reason == "tool_calls" and len(both.message.tool_calls) == 2, both.message
    assert [c.index for c in streamed(caller, **_auto("Compare the weather in Paris and London."))
            .message.tool_calls] == [0, 1]
    one = caller.chat.completions.create(**_auto("Compare the weather in Paris and London.",
                                                 parallel_tool_calls=False)).choices[0]
    assert calls(one.message) == calls(both.message)[:1]
