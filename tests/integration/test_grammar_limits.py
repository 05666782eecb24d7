"""response_format schemas through a real server and the official client: limits are 400s without a long
wait, a client that leaves frees its compile, a big compile holds up neither json_object nor plain requests,
recursion either works (a tree) or is a 400 that says why."""

import asyncio
import json
import time

import httpx
import jsonschema
import openai
import psutil
import pytest

from tests.server_thread import ServerThread

# Each test ends in seconds; the first one also waits for the server to start, which a busy machine slows.
pytestmark = pytest.mark.timeout(240)

NAME = "grammar-tiny"
TIMEOUT_S = 2.0  # of CPU time: on a busy machine the (niced) trial gets less CPU and takes longer in wall time
TREE = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
# The tiny model answers TREE with no children; this one makes it go through the recursive `$ref` at least twice.
ROOTED_TREE = {
    "$defs": {"node": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "maxLength": 5}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "type": "object", "required": ["children"],
    "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 2}},
}


def optional_strings(count: int, prefix: str = "f") -> dict:
    """1,000 optional properties (~26 KB, under the size limit) take xgrammar seconds past TIMEOUT_S to
    compile (~6 s of CPU time on an idle machine here)."""
    return {"type": "object", "properties": {f"{prefix}{i}": {"type": "string"} for i in range(count)}}


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    srv = ServerThread.for_model(bundled_model_dir, NAME, num_threads=2, grammar_compile_workers=1,
                                 grammar_compile_timeout_s=TIMEOUT_S).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    chat(client, None, max_tokens=1)  # the first response_format request starts the compiler process
    wait_for(lambda: all(server.backends[NAME].grammars.worker_pids))
    return client


@pytest.fixture
def grammars(server):
    return server.backends[NAME].grammars


def response_format(schema: dict | None) -> dict:
    return ({"type": "json_object"} if schema is None else
            {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})


def chat(client, schema: dict | None, **args):
    return client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "JSON please"}],
                                          response_format=response_format(schema), **{"max_tokens": 20, **args})


async def chat_async(client, schema: dict | None, **args):
    return await client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "JSON please"}], response_format=response_format(schema),
        **{"max_tokens": 20, **args})


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_schema_over_the_size_limit_is_a_400_at_once(client):
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, optional_strings(14_000))  # ~470 KB
    assert time.monotonic() - started < 2.0
    assert "grammar_max_schema_bytes" in caught.value.message
    assert caught.value.body["param"] == "response_format"


def test_a_schema_past_the_time_limit_is_a_400(client, grammars):
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError, match="grammar_compile_timeout_s"):
        chat(client, optional_strings(1000, "t"))
    assert time.monotonic() - started < TIMEOUT_S + 3.0
    assert chat(client, {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
                max_tokens=30).choices[0].finish_reason == "stop"


def test_a_client_that_hangs_up_during_a_compile_frees_it(server, client, grammars):
    chat(client, None)  # the compiler process is up
    wait_for(lambda: all(grammars.worker_pids))
    [pid] = grammars.worker_pids
    compiles = grammars.num_compiles
    body = {"model": NAME, "messages": [{"role": "user", "content": "JSON please"}], "max_tokens": 20,
            "response_format": response_format(optional_strings(1000, "l"))}
    with pytest.raises(httpx.ReadTimeout):  # no timeout header: the server learns only from the hang-up
        httpx.post(server.base_url + "/chat/completions", json=body, timeout=0.5)
    assert grammars.num_compiles == compiles + 1
    wait_for(lambda: grammars.num_in_flight == 0, timeout=1.0)
    wait_for(lambda: gone(pid), timeout=1.0)  # well before TIMEOUT_S would have stopped it


def test_a_compile_past_the_clients_read_timeout_is_stopped_and_a_504(client, grammars):
    """The official client says how long it will wait (x-stainless-read-timeout): the server stops the work
    then and says so, rather than compile for a client that has gone."""
    chat(client, None)
    wait_for(lambda: all(grammars.worker_pids))
    [pid] = grammars.worker_pids
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client.with_options(timeout=30), optional_strings(1000, "p"),
             extra_headers={"x-stainless-read-timeout": "0.5"})
    assert caught.value.status_code == 504 and caught.value.body["code"] == "deadline_exceeded"
    wait_for(lambda: grammars.num_in_flight == 0, timeout=1.0)
    wait_for(lambda: gone(pid), timeout=1.0)


async def test_json_object_and_plain_requests_finish_while_a_big_compile_runs(server, client, grammars):
    chat(client, None)
    async_client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    compiles = grammars.num_compiles
    big = asyncio.ensure_future(chat_async(async_client, optional_strings(1000, "b")))
    while grammars.num_compiles == compiles:
        await asyncio.sleep(0.01)
    json_object = await chat_async(async_client, None, max_tokens=8)
    plain = await async_client.completions.create(model=NAME, prompt="Lists", max_tokens=8,
                                                  extra_body={"ignore_eos": True})
    assert grammars.num_in_flight == 1 and not big.done(), "the big compile ended first; make it bigger"
    assert json_object.choices[0].message.content.startswith("{")
    assert plain.usage.completion_tokens == 8
    big.cancel()  # its client leaves: the compile is killed rather than left to reach TIMEOUT_S
    await asyncio.gather(big, return_exceptions=True)
    await async_client.close()


@pytest.mark.parametrize("schema, complaint", [
    ({"$ref": "#"}, "no finite instance"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "no finite instance"),
    ({"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]}, "no finite instance"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not resolve"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}, "points outside"),
])
def test_schemas_no_finite_value_can_satisfy_are_400s_that_say_why(client, schema, complaint):
    with pytest.raises(openai.BadRequestError, match=complaint):
        chat(client, schema)


@pytest.mark.parametrize("schema", [TREE, ROOTED_TREE], ids=["tree", "rooted tree"])
def test_a_tree_schema_gives_trees(client, schema):
    finished = 0
    for seed in range(3):
        choice = chat(client, schema, max_tokens=80, temperature=0.8, seed=seed).choices[0]
        assert choice.message.content.startswith("{")
        if choice.finish_reason == "stop":
            finished += 1
            jsonschema.validate(json.loads(choice.message.content), schema)
    assert finished >= 1
