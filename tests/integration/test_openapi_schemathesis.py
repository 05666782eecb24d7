"""schemathesis, as CI runs it, against GET /openapi.json of a live server: every operation of the published
schema, with bodies generated from it, valid and not, and every check: no 5xx; every status, content type,
header and body as documented, streams event by event; valid bodies accepted and invalid ones refused,
with the one relaxation tests/integration/schemathesis.toml explains, and no failure filtered. What it found
is kept below as tests.

The settings are in the toml, so the same run can be pointed at any server by hand. The server here has a
64-token context, so a request asking for no length bound still ends quickly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.openapi import document
from tests.integration.conftest import BUNDLED
from tests.integration.test_poison_requests import assert_still_serving
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN_TIMEOUT = 600
"""A bound on a run gone wrong; a normal one takes 35-55 s on two cores (the toml says what sets it)."""


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    srv = ServerThread.for_model(bundled_model_dir, BUNDLED, max_model_len=64, num_threads=2).start()
    yield srv
    srv.stop()


def test_the_server_publishes_the_document(server):
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(json.dumps(document()))


def test_every_operation_answers_as_published(server):
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(CONFIG),
               "run", server.url + "/openapi.json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the hooks module, by name
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-2000:]


@pytest.mark.parametrize("token_id", [-5, 2**40])
def test_echo_of_a_token_id_the_tokenizer_cannot_take_is_a_400(server, token_id):
    """Found by schemathesis: the echo was decoded before the ids were checked, and the tokenizer's
    OverflowError was a 500."""
    response = httpx.post(server.base_url + "/completions", timeout=60,
                          json={"model": BUNDLED, "prompt": [[token_id]], "echo": True, "max_tokens": 2})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize("length_penalty", [1e300, -1e300])
def test_beam_search_with_an_extreme_length_penalty_is_a_400(server, length_penalty):
    """Found by schemathesis: beam search scores `generated ** length_penalty`, which overflowed (or reached
    0) for an extreme penalty, a 500; the penalty is bounded now."""
    response = httpx.post(server.base_url + "/completions", timeout=60, json={
        "model": BUNDLED, "prompt": "def", "max_tokens": 8, "n": 2, "use_beam_search": True,
        "length_penalty": length_penalty})
    assert response.status_code == 400 and response.json()["error"]["param"] == "length_penalty", response.text


NO_INSTANCE = {"type": "string", "pattern": "[^\\s\\S]"}  # a string no character can start


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/completions", {"model": BUNDLED, "prompt": "x", "max_tokens": 5, "response_format": {
        "type": "json_schema", "json_schema": {"schema": NO_INSTANCE}}}, 400),
    ("/generate", {"inputs": "x", "parameters": {"max_new_tokens": 5, "grammar": {
        "type": "json", "value": NO_INSTANCE}}}, 422),
], ids=["openai", "tgi"])
def test_a_response_format_without_instance_is_the_requests_fault(server, path, body, status):
    """Found by schemathesis: a schema with no instance that schema_check.py misses used to fail in the engine
    (500; TGI 424) when its grammar allowed no next token; it is the request's own 4xx now."""
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == status, response.text


def test_the_server_still_serves_after(server):
    assert_still_serving(server)
