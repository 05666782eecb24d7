"""Hypothesis-driven hostile input over every POST route and the gRPC API of the real server: whatever a
client sends, the answer is never a 5xx (gRPC: never INTERNAL or UNKNOWN), and the server is healthy
after, with nothing left in the engine.

The playground's GET routes too: odd and traversing paths under /playground/ (`..`, `%2e%2e`, NUL, `//`),
HEAD, other methods and big query strings, sent raw (no client tidies the path first): never a 5xx, and
nothing is ever served but the playground's own files.

Transport-level hostility too: any Content-Type on any POST route (415 unless it is JSON), and request heads
with any number of header lines of any size and bytes, sent raw (400 or 431 when they break the parser or
the limits). Read timeouts and slow clients do not fit here (each example would wait out a timeout):
tests/integration/test_head_limits.py, test_body_limits.py and test_slow_clients.py have them.

Bodies are built field by field from each route's real field names: each field present or not, each value
either plausible (so requests get past validation and into the engine) or hostile (wrong types, huge or
negative numbers, NaN and infinities, lone surrogates, nesting, garbage). The server under fuzz has a
64-token context, so even a request that asks for no length bound ends quickly, and a few hundred
requests take about a minute. New fields and routes belong here: add them to the tables below.
"""

from __future__ import annotations

import json
import socket
import time

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.grpc.gen import generate_pb2 as pb
from server.http.body_guard import is_json
from server.playground.routes import CONTENT_TYPES, FILES
from tests.grpc_client import stub
from tests.integration.conftest import BUNDLED
from tests.integration.test_poison_requests import assert_still_serving
from tests.server_thread import ServerThread

EXAMPLES = 50  # per route: 8 HTTP routes (chat twice: with and without tools) and gRPC, ~500 requests

# Text with everything Unicode has, lone surrogates included (JSON writes them as \udXXX escapes).
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
odd_numbers = st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**30), 1e308, -1e-308])
hostile = st.recursive(
    st.none() | st.booleans() | odd_numbers | st.integers(-5, 10) | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


small_count = st.integers(1, 4)
unit_float = st.floats(0.05, 1.0)
token_id = st.integers(0, 4095)
schema = st.sampled_from([{}, {"type": "object"}, {"type": "string"}, {"$ref": "#"}, {"type": "nonsense"},
                          {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}])
function_name = st.sampled_from(["f", "get_weather", "", "has space", "x" * 65]) | any_text
tool_call = st.fixed_dictionaries(
    {"id": any_text, "type": st.sampled_from(["function", "other"]),
     "function": st.fixed_dictionaries({"name": function_name, "arguments": any_text | st.just('{"a": 1}')})})
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]),
     "content": any_text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": any_text}), max_size=2)},
    optional={"tool_calls": st.lists(tool_call, max_size=2), "tool_call_id": any_text})
tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "function", "retrieval"]),
     "function": st.fixed_dictionaries({"name": function_name},
                                       optional={"description": any_text, "parameters": schema, "strict": st.booleans()})})
tool_choice = st.sampled_from(["none", "auto", "required", "any"]) | st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": function_name})})
response_format = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema"])},
    optional={"json_schema": st.fixed_dictionaries({}, optional={"name": any_text, "schema": schema})})

# Plausible values, field by field: each body is built from these, then one or two fields are made hostile.
SAMPLING = {
    "max_tokens": small_count,
    "temperature": st.floats(0.0, 2.0),
    "top_p": unit_float,
    "n": small_count,
    "stream": st.booleans(),
    "stop": any_text | st.lists(any_text, max_size=3),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(token_id.map(str), st.floats(-100, 100), max_size=3),
    "seed": st.integers(0, 2**32),
    "user": any_text,
    "top_k": st.integers(-1, 50),
    "min_p": unit_float,
    "typical_p": unit_float,
    "repetition_penalty": st.floats(0.5, 2.0),
    "min_tokens": small_count,
    "ignore_eos": st.booleans(),
    "stop_token_ids": st.lists(token_id, max_size=3),
    "skip_special_tokens": st.booleans(),
    "use_beam_search": st.booleans(),
    "beam_width": small_count,
    "length_penalty": st.floats(-2, 2),
    "early_stopping": st.booleans(),
    "return_token_ids": st.booleans(),
    "response_format": response_format,
}
COMPLETIONS = ({"model": st.just(BUNDLED),
                "prompt": any_text | st.lists(any_text, min_size=1, max_size=3) | st.lists(token_id, min_size=1,
                                                                                              max_size=5)},
               {**SAMPLING, "echo": st.booleans(), "logprobs": st.integers(0, 5), "best_of": small_count})
CHAT = ({"model": st.just(BUNDLED), "messages": st.lists(message, min_size=1, max_size=3)},
        {**SAMPLING, "max_completion_tokens": small_count, "logprobs": st.booleans(),
         "top_logprobs": st.integers(0, 5), "add_generation_prompt": st.booleans(),
         "tools": st.lists(tool, max_size=3), "tool_choice": tool_choice, "parallel_tool_calls": st.booleans()})
CHAT_WITH_TOOLS = ({**CHAT[0], "tools": st.lists(tool, min_size=1, max_size=3)},
                   {k: v for k, v in CHAT[1].items() if k != "tools"})
"""Tools in every body (above, they are one optional field among thirty)."""
TOKENIZE = ({}, {"model": st.just(BUNDLED), "prompt": any_text, "messages": st.lists(message, max_size=3),
                 "tools": st.lists(tool, max_size=2),
                 "add_special_tokens": st.booleans(), "add_generation_prompt": st.booleans(), "inputs": any_text})
EMBEDDINGS = ({"model": st.just(BUNDLED),
               "input": any_text | st.lists(any_text, min_size=1, max_size=5) | st.lists(token_id, max_size=70)
               | st.lists(st.lists(st.integers(-2, 4100), max_size=70), max_size=4)},
              {"encoding_format": st.sampled_from(["float", "base64", "int8", ""]),
               "dimensions": st.integers(-1, 300), "user": any_text})
DETOKENIZE = ({"tokens": st.lists(token_id, max_size=5)}, {"model": st.just(BUNDLED)})
TGI_PARAMETERS = {
    "best_of": small_count, "temperature": st.floats(0.01, 2), "repetition_penalty": unit_float,
    "frequency_penalty": st.floats(-2, 2), "top_k": small_count, "top_p": st.floats(0.05, 0.99),
    "typical_p": st.floats(0.05, 0.99), "do_sample": st.booleans(), "max_new_tokens": small_count,
    "return_full_text": st.booleans(), "stop": st.lists(any_text, max_size=2), "truncate": small_count,
    "details": st.booleans(), "decoder_input_details": st.booleans(), "seed": st.integers(0, 2**64 - 1),
    "top_n_tokens": small_count, "adapter_id": any_text,
    "grammar": st.fixed_dictionaries({"type": st.sampled_from(["json", "json_object", "json_schema", "regex"]),
                                      "value": schema})}
TGI = ({"inputs": any_text.filter(bool)},
       {"stream": st.booleans(), "model": st.just(BUNDLED),
        "parameters": st.fixed_dictionaries({"max_new_tokens": small_count},
                                            optional={k: v for k, v in TGI_PARAMETERS.items()
                                                      if k != "max_new_tokens"})})



@pytest.fixture(scope="module")
def server(bundled_model_dir):
    srv = ServerThread.for_model(bundled_model_dir, BUNDLED, grpc=True, max_model_len=64, num_threads=2).start()
    yield srv
    srv.stop()


ROUTES = {
    "/v1/completions": COMPLETIONS,
    "/v1/chat/completions": CHAT,
    "/tokenize": TOKENIZE,
    "/detokenize": DETOKENIZE,
    "/v1/embeddings": EMBEDDINGS,
    "/": TGI,
    "/generate": TGI,
    "/generate_stream": TGI,
}


@st.composite
def body(draw, fields: tuple[dict, dict]) -> bytes:
    """Mostly plausible bodies with one or two fields made hostile; sometimes garbage."""
    required, optional = fields
    kind = draw(st.sampled_from(["plausible", "mutated", "mutated", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64) | hostile.map(lambda v: json.dumps(v).encode()))
    data = draw(st.fixed_dictionaries(required, optional=optional))
    if kind == "mutated":
        names = sorted({*required, *optional, "stream_options", "tools", "unknown_field"})
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)):
            data[name] = draw(hostile)
    return json.dumps(data).encode()


# Headers the server reads: request ids, API keys (this server has none; a key is then ignored), the
# client's read timeout.
plain_headers = st.just({"content-type": "application/json"})
odd_headers = st.fixed_dictionaries({"content-type": st.just("application/json")}, optional={
    "x-request-id": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40) | st.just("r" * 300),
    "authorization": st.sampled_from(["Bearer", "Basic abc", "Bearer tk-x", "bearer  y", "Bearer a b"]),
    "x-api-key": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20),
    "x-stainless-read-timeout": st.sampled_from(["0", "-1", "nan", "inf", "1e308", "abc", "0.0001", "30"]),
})


def fuzz_route(path: str, fields: tuple[dict, dict] | None = None):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(raw=body(fields or ROUTES[path]), sent_headers=plain_headers | plain_headers | odd_headers)
    def run(server, http, raw, sent_headers):
        response = http.post(server.url + path, content=raw, headers=sent_headers)
        if response.status_code == 504 and sent_headers.get("x-stainless-read-timeout") == "0.0001":
            # A client that waits 0.1 ms for output gets the documented 504 (deadline_exceeded) from any
            # request that reaches a backend; valid embedding requests (most of that route's) always do.
            assert response.json()["error"]["code"] == "deadline_exceeded", response.text[:300]
            return
        assert response.status_code < 500, (raw, response.status_code, response.text[:300])
        if response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", ""):
            assert response.text.rstrip().endswith(("[DONE]", "}")), response.text[-200:]

    return run


def test_no_post_route_answers_5xx_to_anything(server):
    started = time.perf_counter()
    with httpx.Client(timeout=60) as http:
        for path in ROUTES:
            fuzz_route(path)(server, http)
        fuzz_route("/v1/chat/completions", CHAT_WITH_TOOLS)(server, http)
    assert_still_serving(server)
    assert time.perf_counter() - started < 600


sampling_parameters = st.fixed_dictionaries({}, optional={
    "max_tokens": st.integers(0, 6), "temperature": st.floats(-0.5, 2.5) | st.just(float("nan")),
    "top_p": st.floats(-0.5, 1.2), "top_k": st.integers(-2, 50), "min_p": st.floats(-0.5, 1.2),
    "typical_p": st.floats(-0.5, 1.2), "repetition_penalty": st.floats(-1, 3), "presence_penalty": st.floats(-3, 3),
    "frequency_penalty": st.floats(-3, 3), "seed": st.integers(0, 2**63 - 1), "n": st.integers(0, 5),
    "best_of": st.integers(0, 6), "use_beam_search": st.booleans(), "beam_width": st.integers(0, 5),
    "logprobs": st.integers(0, 22), "min_tokens": st.integers(0, 8), "ignore_eos": st.booleans(),
    "stop": st.lists(st.text(max_size=5), max_size=18), "stop_token_ids": st.lists(st.integers(0, 4100), max_size=3),
    "logit_bias": st.dictionaries(st.integers(0, 4100), st.floats(-150, 150), max_size=3),
    "response_format": st.builds(pb.ResponseFormat, type=st.integers(0, 4),
                                 json_schema=st.sampled_from(["", "{}", '{"type":"string"}', "{bad", '{"$ref":"#"}'])),
})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(model=st.sampled_from([BUNDLED, BUNDLED, "", "nope"]), text=st.text(max_size=30),
       ids=st.lists(st.integers(0, 4100), max_size=4), use_ids=st.booleans(), sampling=sampling_parameters,
       streamed=st.booleans())
def _grpc_generate(server, model, text, ids, use_ids, sampling, streamed):
    request = pb.GenerateRequest(model=model, sampling=pb.SamplingParameters(**sampling))
    if use_ids:
        request.token_ids.ids.extend(ids)
    else:
        request.text = text
    generation = stub(server.grpc_target)
    try:
        if streamed:
            list(generation.Generate(request, timeout=60))
        else:
            generation.Complete(request, timeout=60)
    except grpc.RpcError as failure:
        assert failure.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), failure.details()


def test_grpc_never_answers_internal_or_unknown(server):
    _grpc_generate(server)
    assert_still_serving(server)


# Header values httpx can send (no leading or trailing space): plausible media types, and anything else.
content_type = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON;charset=latin-1", "text/plain",
    "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonl", "application/json-patch+json", "json", "*/*", ";", "application/json,text/plain",
]) | st.from_regex(r"[!-~]([ -~]{0,38}[!-~])?", fullmatch=True)


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(path=st.sampled_from(list(ROUTES)), media_type=content_type)
def _content_types(server, http, path, media_type):
    r = http.post(server.url + path, content=b"{}", headers={"content-type": media_type})
    assert r.status_code < 500, (media_type, r.status_code, r.text[:300])
    assert (r.status_code == 415) == (not is_json(media_type)), (media_type, r.status_code, r.text[:300])


def test_any_content_type_is_json_or_a_415(server):
    with httpx.Client(timeout=60) as http:
        _content_types(server, http)
    assert_still_serving(server)


token = st.from_regex(r"[A-Za-z0-9-]{1,30}", fullmatch=True).map(str.encode)
header_line = st.tuples(token | st.binary(min_size=1, max_size=30),  # mostly names, sometimes garbage
                        st.text(max_size=200).map(lambda v: v.encode().replace(b"\r", b"").replace(b"\n", b""))
                        | st.binary(max_size=200).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b"")))


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(lines=st.lists(header_line, max_size=3), many=st.sampled_from([0, 0, 50, 97, 98, 150, 1000]),
       big=st.sampled_from([0, 0, 1000, 32_000, 33_000, 200_000]))
def _heads(server, lines, many, big):
    """Header lines of any bytes, up to 1000 more of them (the limit is 100) and one of up to 200 kB (32 kB)."""
    lines = lines + [(b"x-many-%d" % i, b"1") for i in range(many)] + [(b"x-big", b"b" * big)]
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in lines) + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # b"": the server closed the connection (a timeout fails the test)
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 400, 431), answer[:300]
    if status != 200:
        assert set(json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]) == {"message", "type", "param", "code"}


def test_any_request_head_is_served_or_a_400_or_431_in_json(server):
    _heads(server)
    assert_still_serving(server)


traversal = st.sampled_from([
    "../server/app.py", "../../pyproject.toml", "..%2fserver%2fapp.py", "%2e%2e/%2e%2e/server/app.py",
    "%2e%2e%2fpyproject.toml", "%2E%2E/routes.py", "static/../routes.py", "./playground.js", "..", "%2e%2e",
    "....//....//routes.py", "/etc/passwd", "//etc/passwd", "%00", "playground.js%00.html", "playground.js/",
    "playground.js;.html", "PLAYGROUND.JS", "static/playground.js", "__init__.py", "%5c..%5croutes.py",
    "..\\routes.py", "index.html", "%ff%fe", "a" * 300,
])
path_bytes = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="?#"), max_size=40)
percent_bytes = st.binary(max_size=12).map(lambda raw: "".join(f"%{byte:02x}" for byte in raw))
query = st.sampled_from([0, 0, 10, 4000, 30_000, 40_000]).map(lambda n: "?" + "q=" + "x" * n if n else "")


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(method=st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
       prefix=st.sampled_from(["/playground/", "/playground", "/playground//", "/"]),
       tail=traversal | path_bytes | percent_bytes, suffix=query)
def _playground_paths(server, method, prefix, tail, suffix):
    target = prefix + tail + suffix
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n"
    if method == "POST":
        head += "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    else:
        head += "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, (target[:200], answer[:300])
    raw_head, body = answer.split(b"\r\n\r\n", 1)
    content_type = next((line.split(b":", 1)[1].strip() for line in raw_head.split(b"\r\n")[1:]
                         if line.lower().startswith(b"content-type:")), b"")
    if status == 200 and method == "GET" and content_type.decode() in CONTENT_TYPES.values():
        # a page file, whole: never a file of the repository that a traversing path might have reached
        assert body in {file.body for file in FILES.values()}, (target[:200], body[:200])
    assert b"def build_app(" not in body and b"[build-system]" not in body, target[:200]
    if method == "HEAD" and status != 431:
        # (a 431 refuses a head still arriving, method unknown, and closes the connection after its JSON)
        assert body == b"", target[:200]


def test_no_playground_path_serves_anything_but_its_files_or_answers_5xx(server):
    _playground_paths(server)
    assert_still_serving(server)
