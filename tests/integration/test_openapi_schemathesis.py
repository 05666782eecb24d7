"""POST /v1/completions with `echo` and a prompt of token ids the tokenizer cannot take."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import BUNDLED
from tests.server_thread import ServerThread


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    srv = ServerThread.for_model(bundled_model_dir, BUNDLED, max_model_len=64, num_threads=2).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("token_id", [-5, 2**40])
def test_echo_of_a_token_id_the_tokenizer_cannot_take_is_a_400(server, token_id):
    """Found by schemathesis: the echo was decoded before the ids were checked, and the tokenizer's
    OverflowError was a 500."""
    response = httpx.post(server.base_url + "/completions", timeout=60,
                          json={"model": BUNDLED, "prompt": [[token_id]], "echo": True, "max_tokens": 2})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt"
