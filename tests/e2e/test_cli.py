"""`turnout serve` as a user runs it: a subprocess, from an unrelated directory, on the bundled model."""

import json
import os
import socket
import subprocess
import sys

import httpx
import openai
import pytest

from tests.server_thread import free_port, wait_ready


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "server", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--model", "--port", "--max-num-seqs", "--max-model-len", "bundled model", "--max-body-bytes",
                   "--allowed-origins"):
        assert option in out


def test_bad_option_value_is_refused_with_the_value_quoted():
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--max-num-seqs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "max_num_seqs" in r.stderr and "0" in r.stderr


def test_a_bad_limit_is_refused_with_the_value_quoted():
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--body-timeout", "-1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "body_timeout" in r.stderr and "-1.0" in r.stderr


SERVED_MAX_BODY = 65536


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundled_model_dir):
    """`turnout serve` with no --model, started from an empty directory; yields its port. Two of the limit
    flags are set, to see that they reach the server."""
    cwd = tmp_path_factory.mktemp("cwd")
    port = free_port()
    turnout = os.path.join(os.path.dirname(sys.executable), "turnout")  # the installed console script
    limits = ["--max-body-bytes", str(SERVED_MAX_BODY), "--allowed-origins", "http://a.example,http://b.example"]
    with open(cwd / "server.log", "w") as log:
        proc = subprocess.Popen([turnout, "serve", "--port", str(port), *limits], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_ready(port, proc, log_path=cwd / "server.log")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_serve_bundled_model_from_any_directory(served):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{served}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["turnout-tiny"]
    out = client.chat.completions.create(model="turnout-tiny", max_tokens=8,
                                         messages=[{"role": "user", "content": "What is a tuple?"}])
    assert out.choices[0].message.content


def test_the_limit_flags_reach_the_server(served):
    url = f"http://127.0.0.1:{served}/v1/completions"
    body = json.dumps({"model": "turnout-tiny", "prompt": "x" * SERVED_MAX_BODY}).encode()
    r = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"limit of {SERVED_MAX_BODY} bytes" in r.json()["error"]["message"]
    preflight = httpx.options(url, headers={"origin": "http://b.example", "access-control-request-method": "POST"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://b.example"


TERMINATOR = b"0\r\n\r\n"


def read_segments(port: int, payload: dict) -> list[bytes]:
    """Send one request on a fresh connection; return what each recv() got until the body ended."""
    body = json.dumps(payload).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    segments: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head + body)
        while not b"".join(segments).endswith(TERMINATOR):
            data = sock.recv(1 << 20)
            assert data, f"connection closed before the body ended; got {b''.join(segments)!r}"
            segments.append(data)
    return segments


def test_stream_head_comes_with_the_first_event_and_the_last_event_with_the_end(served):
    """Read off a raw socket from a server in its own process (in one process, the GIL would hold the
    reader back until both writes were done): a client wakes once for the head and first event, and once
    for the last event, [DONE] and the end of the body."""
    segments = read_segments(served, {"model": "turnout-tiny", "prompt": "The for statement", "max_tokens": 6,
                                      "temperature": 0, "ignore_eos": True, "stream": True})
    first, last = segments[0], segments[-1]
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"data: {" in first.split(b"\r\n\r\n", 1)[1], first
    assert last.endswith(b"data: [DONE]\n\n\r\n" + TERMINATOR)
    assert b'"finish_reason":"length"' in last, last
    events = [line for line in b"".join(segments).split(b"\n") if line.startswith(b"data: {")]
    assert len(events) == 6  # one event per token: writes are merged, events never are


def test_a_browser_opening_the_servers_address_gets_the_playground(served):
    """What the README says: open http://127.0.0.1:8000 after `make serve`."""
    page = httpx.get(f"http://127.0.0.1:{served}/", headers={"accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/playground")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>turnout playground</title>" in page.text
    script = httpx.get(f"http://127.0.0.1:{served}/playground/playground.js")  # from the installed package
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
