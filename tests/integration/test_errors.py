"""Bad input gets a clear OpenAI-shaped 4xx (never 422, never 500) and leaves the engine untouched."""

import httpx
import pytest

from tests.integration.conftest import BUNDLED

OK_COMPLETION = {"model": BUNDLED, "prompt": "x", "max_tokens": 2}
OK_CHAT = {"model": BUNDLED, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

BAD_REQUESTS = [
    ("completions", {**OK_COMPLETION, "temperature": 2.5}, "temperature"),
    ("completions", {**OK_COMPLETION, "temperature": -0.1}, "temperature"),
    ("completions", {**OK_COMPLETION, "top_p": 0}, "top_p"),
    ("completions", {**OK_COMPLETION, "top_p": 1.5}, "top_p"),
    ("completions", {**OK_COMPLETION, "max_tokens": 0}, "max_tokens"),
    ("completions", {**OK_COMPLETION, "max_tokens": "ten"}, "max_tokens"),
    ("completions", {**OK_COMPLETION, "n": 0}, "n"),
    ("completions", {**OK_COMPLETION, "n": 10_000}, "n"),
    ("completions", {**OK_COMPLETION, "stop": [str(i) for i in range(17)]}, "stop"),
    ("completions", {**OK_COMPLETION, "presence_penalty": 3}, "presence_penalty"),
    ("completions", {**OK_COMPLETION, "logit_bias": {"abc": 1}}, "logit_bias"),
    ("completions", {**OK_COMPLETION, "prompt": []}, None),
    ("completions", {**OK_COMPLETION, "prompt": [10**9]}, "prompt"),
    ("completions", {"model": BUNDLED}, "prompt"),
    ("completions", {**OK_COMPLETION, "stream_options": {"include_usage": True}}, None),
    ("chat/completions", {**OK_CHAT, "messages": []}, "messages"),
    ("chat/completions", {**OK_CHAT, "messages": [{"role": "wizard", "content": "x"}]}, None),
    ("chat/completions", {**OK_CHAT, "top_logprobs": 3}, None),
    ("chat/completions", {**OK_CHAT, "max_completion_tokens": -1}, "max_completion_tokens"),
]


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD_REQUESTS)
def test_invalid_input_is_a_400_in_openai_shape(server, endpoint, body, param):
    steps_before = server.engine().num_steps
    r = httpx.post(f"{server.base_url}/{endpoint}", json=body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"].split(".")[0] == param
    assert server.engine().num_steps == steps_before  # nothing reached the engine
    assert server.engine().num_running == 0


def test_invalid_json_and_non_object_bodies(server):
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        r = httpx.post(server.base_url + "/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400
        error_of(r)


def test_unknown_model_is_404(server):
    r = httpx.post(server.base_url + "/completions", json={**OK_COMPLETION, "model": "nope"})
    assert r.status_code == 404
    error = error_of(r)
    assert error["code"] == "model_not_found" and "nope" in error["message"]


def test_prompt_longer_than_the_context_is_context_length_exceeded(server, client):
    max_len = client.models.list().data[0].model_extra["max_model_len"]
    long_prompt = list(range(5, 5 + max_len + 10))
    for endpoint, body in (("completions", {**OK_COMPLETION, "prompt": long_prompt}),
                           ("completions", {**OK_COMPLETION, "prompt": [5] * (max_len - 1), "max_tokens": 5})):
        r = httpx.post(f"{server.base_url}/{endpoint}", json=body)
        assert r.status_code == 400
        error = error_of(r)
        assert error["code"] == "context_length_exceeded" and str(max_len) in error["message"]
    chat = {**OK_CHAT, "messages": [{"role": "user", "content": "word " * (max_len * 2)}]}
    r = httpx.post(server.base_url + "/chat/completions", json=chat)
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_streaming_request_with_bad_input_gets_a_400_not_a_broken_stream(server):
    r = httpx.post(server.base_url + "/completions", json={**OK_COMPLETION, "prompt": [10**9], "stream": True})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")


def test_unknown_route_and_wrong_method(server):
    assert httpx.get(server.url + "/v1/nothing").status_code == 404
    error_of(httpx.get(server.url + "/v1/nothing"))
    r = httpx.get(server.base_url + "/completions")
    assert r.status_code == 405
    error_of(r)


def test_server_still_serves_after_bad_requests(client):
    out = client.completions.create(model=BUNDLED, prompt="x", max_tokens=3, extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 3
