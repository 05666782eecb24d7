"""The gRPC API (turnout.v1.Generation) over loopback with the generated stubs: streaming, parity with HTTP,
cancellation, deadlines, Abort, errors with the HTTP messages, health and reflection."""

import threading

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server.grpc.gen import generate_pb2 as pb
from tests.grpc_client import generate_request, stub
from tests.integration.conftest import BUNDLED
from tests.integration.test_disconnect import wait_for

LONG = dict(max_tokens=900, ignore_eos=True)


@pytest.fixture(scope="module")
def generation(server):
    return stub(server.grpc_target)


def test_generate_streams_deltas_then_one_finished_message(generation):
    messages = list(generation.Generate(generate_request(BUNDLED, "The for statement", max_tokens=6, temperature=0,
                                                         ignore_eos=True), timeout=60))
    deltas, last = messages[:-1], messages[-1]
    assert all(m.WhichOneof("event") == "delta" for m in deltas)
    assert last.WhichOneof("event") == "finished"
    assert sum(len(m.delta.token_ids) for m in deltas) == 6
    assert [(c.index, c.finish_reason) for c in last.finished.choices] == [(0, pb.FINISH_REASON_LENGTH)]
    assert last.finished.usage.completion_tokens == 6
    assert last.finished.usage.total_tokens == last.finished.usage.prompt_tokens + 6


def test_grpc_and_http_return_the_same_tokens_for_a_greedy_request(server, generation):
    prompt = "Classes provide a means of"
    http = httpx.post(server.base_url + "/completions", timeout=60, json={
        "model": BUNDLED, "prompt": prompt, "max_tokens": 12, "temperature": 0, "logprobs": 0}).json()
    request = generate_request(BUNDLED, prompt, max_tokens=12, temperature=0, logprobs=0)
    streamed = [m.delta for m in generation.Generate(request, timeout=60) if m.WhichOneof("event") == "delta"]
    complete = generation.Complete(request, timeout=60)
    choice = complete.choices[0]
    assert "".join(d.text for d in streamed) == choice.text == http["choices"][0]["text"]
    assert [t for d in streamed for t in d.token_ids] == list(choice.token_ids)
    assert [lp.token for lp in choice.logprobs] == http["choices"][0]["logprobs"]["tokens"]
    assert [lp.logprob for lp in choice.logprobs] == pytest.approx(http["choices"][0]["logprobs"]["token_logprobs"])
    assert complete.usage.prompt_tokens == http["usage"]["prompt_tokens"]


def test_token_id_prompt_n_choices_and_json_schema(generation):
    ids = list(generation.Tokenize(pb.TokenizeRequest(model=BUNDLED, text="A list"), timeout=10).token_ids)
    out = generation.Complete(generate_request(BUNDLED, ids, max_tokens=4, n=2, seed=7, temperature=1.0), timeout=60)
    assert [c.index for c in out.choices] == [0, 1]
    request = generate_request(BUNDLED, "JSON:", max_tokens=40, temperature=0)
    request.sampling.response_format.type = pb.ResponseFormat.TYPE_JSON_SCHEMA
    request.sampling.response_format.json_schema = '{"type": "object", "properties": {"a": {"type": "boolean"}}, ' \
                                                    '"required": ["a"], "additionalProperties": false}'
    text = generation.Complete(request, timeout=60).choices[0].text
    assert text.replace(" ", "").replace("\n", "") in ('{"a":true}', '{"a":false}')


def test_request_id_from_the_request_or_metadata_comes_back_as_metadata(generation):
    call = generation.Complete.with_call
    _, c1 = call(generate_request(BUNDLED, "x", request_id="mine-1", max_tokens=1), timeout=30)
    _, c2 = call(generate_request(BUNDLED, "x", max_tokens=1), timeout=30, metadata=(("x-request-id", "mine-2"),))
    _, c3 = call(generate_request(BUNDLED, "x", max_tokens=1), timeout=30)
    assert dict(c1.initial_metadata())["x-request-id"] == "mine-1"
    assert dict(c2.initial_metadata())["x-request-id"] == "mine-2"
    assert dict(c3.initial_metadata())["x-request-id"].startswith("complete-")


def test_cancelling_mid_stream_frees_the_engine_sequence(server, generation):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    call = generation.Generate(generate_request(BUNDLED, "The for statement", **LONG), timeout=60)
    for _ in range(5):
        next(call)
    assert engine.num_running == 1
    steps_at_cancel = engine.num_steps
    call.cancel()
    wait_for(lambda: engine.num_running == 0)
    # A few steps may pass while the cancellation crosses the network and threads; 900 would without it.
    assert engine.num_steps - steps_at_cancel <= 8, "the sequence kept running after the client cancelled"
    assert engine.core.scheduler.blocks.num_holders == 0
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.CANCELLED


def test_deadline_exceeded_aborts_the_request(server, generation):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    with pytest.raises(grpc.RpcError) as err:
        generation.Complete(generate_request(BUNDLED, "The for statement", **LONG), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: engine.num_running == 0)
    assert engine.core.scheduler.blocks.num_holders == 0


def test_abort_by_request_id_ends_the_call_with_cancelled(server, generation):
    engine = server.engine()
    wait_for(lambda: engine.num_running == 0)
    call = generation.Generate(generate_request(BUNDLED, "Classes", request_id="to-abort", **LONG), timeout=60)
    next(call)
    generation.Abort(pb.AbortRequest(request_id="to-abort"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.CANCELLED
    assert "to-abort" in err.value.details()
    wait_for(lambda: engine.num_running == 0)
    with pytest.raises(grpc.RpcError) as err:
        generation.Abort(pb.AbortRequest(request_id="to-abort"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("sampling", "http_body", "code"), [
    (dict(temperature=3.0), {"temperature": 3.0}, grpc.StatusCode.INVALID_ARGUMENT),
    (dict(top_p=0.0), {"top_p": 0.0}, grpc.StatusCode.INVALID_ARGUMENT),
    (dict(n=2, best_of=1), {"n": 2, "best_of": 1}, grpc.StatusCode.INVALID_ARGUMENT),
    (dict(max_tokens=5000), {"max_tokens": 5000}, grpc.StatusCode.INVALID_ARGUMENT),  # context length
])
def test_invalid_argument_has_the_http_message(server, generation, sampling, http_body, code):
    http = httpx.post(server.base_url + "/completions", timeout=30,
                      json={"model": BUNDLED, "prompt": "x", **http_body})
    assert http.status_code == 400
    with pytest.raises(grpc.RpcError) as err:
        list(generation.Generate(generate_request(BUNDLED, "x", **sampling), timeout=30))
    assert err.value.code() == code
    assert err.value.details() == http.json()["error"]["message"]


def test_missing_prompt_and_bad_token_ids_are_invalid_argument(generation):
    cases = [(pb.GenerateRequest(model=BUNDLED), "prompt: Field required"),
             (generate_request(BUNDLED, [10**6]), "token id 1000000 is outside the vocabulary")]
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            generation.Complete(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()


def test_unknown_model_is_not_found_with_the_http_message(server, generation):
    http = httpx.post(server.base_url + "/completions", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert http.status_code == 404
    with pytest.raises(grpc.RpcError) as err:
        list(generation.Generate(generate_request("nope", "x"), timeout=30))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == http.json()["error"]["message"]


def test_tokenize_detokenize_and_list_models(generation):
    models = generation.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert [m.id for m in models] == [BUNDLED] and models[0].max_model_len > 0
    ids = generation.Tokenize(pb.TokenizeRequest(text="hello world", add_special_tokens=False), timeout=10).token_ids
    assert generation.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=10).text == "hello world"
    with pytest.raises(grpc.RpcError) as err:
        generation.Detokenize(pb.DetokenizeRequest(token_ids=[10**6]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_streams_each_get_their_own_tokens(generation):
    results = {}

    def run(i):
        request = generate_request(BUNDLED, f"Item {i}", max_tokens=4, temperature=0, ignore_eos=True)
        results[i] = generation.Complete(request, timeout=60).usage.completion_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 4 for i in range(6)}


def test_health_service_answers_serving(server):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.grpc_target))
    for service in ("", "turnout.v1.Generation"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service(server):
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(server.grpc_target))
    services = set(database.get_services())
    assert {"turnout.v1.Generation", "grpc.health.v1.Health"} <= services
    file = database.FindFileContainingSymbol("turnout.v1.Generation")
    methods = {m.name for s in file.service if s.name == "Generation" for m in s.method}
    assert methods == {"Generate", "Complete", "Tokenize", "Detokenize", "ListModels", "Abort"}
