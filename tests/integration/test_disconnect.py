"""A client that leaves frees its sequence: the engine's running count drops within a step or two."""

import threading
import time

import httpx

from tests.integration.conftest import BUNDLED

LONG = {"model": BUNDLED, "prompt": "The for statement", "max_tokens": 200, "ignore_eos": True}


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def test_streaming_client_disconnect_aborts_its_sequence(server):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    with httpx.stream("POST", server.base_url + "/completions", json={**LONG, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert engine.num_running == 1
        steps_at_close = engine.num_steps
    wait_for(lambda: engine.num_running == 0)
    steps = engine.num_steps - steps_at_close
    assert steps <= 2, f"the sequence kept running for {steps} steps after the client left"
    assert engine.core.scheduler.blocks.num_holders == 0


def test_non_streaming_client_disconnect_aborts_its_sequence(server):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    errors = []

    def impatient_client():
        try:
            # 800 tokens take over a second here; the client gives up after 0.3 s of waiting for the answer
            httpx.post(server.base_url + "/completions", json={**LONG, "max_tokens": 800},
                       timeout=httpx.Timeout(5.0, read=0.3))
        except httpx.ReadTimeout as exc:  # gives up and closes the connection
            errors.append(exc)

    thread = threading.Thread(target=impatient_client)
    thread.start()
    wait_for(lambda: engine.num_running == 1)
    thread.join()
    steps_at_close = engine.num_steps
    wait_for(lambda: engine.num_running == 0)
    assert errors, "the request finished before the client gave up; make it longer"
    assert engine.num_steps - steps_at_close <= 2
    assert engine.core.scheduler.blocks.num_holders == 0


def test_others_keep_generating_when_one_client_leaves(server, client):
    engine = server.engine()
    results = {}

    def steady():
        results["out"] = client.completions.create(model=BUNDLED, prompt="Classes", max_tokens=60,
                                                   extra_body={"ignore_eos": True})

    thread = threading.Thread(target=steady)
    thread.start()
    with httpx.stream("POST", server.base_url + "/completions", json={**LONG, "stream": True}) as r:
        next(r.iter_lines())
    thread.join()
    assert results["out"].usage.completion_tokens == 60
    wait_for(lambda: engine.num_running == 0)
