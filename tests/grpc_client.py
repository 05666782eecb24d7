"""Helpers for tests that drive the gRPC API with the generated stubs."""

from __future__ import annotations

import grpc

from server.grpc.gen import generate_pb2 as pb
from server.grpc.gen import generate_pb2_grpc as pb_grpc


def stub(target: str) -> pb_grpc.GenerationStub:
    return pb_grpc.GenerationStub(grpc.insecure_channel(target))


def generate_request(model: str, prompt: str | list[int], request_id: str = "", **sampling) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=model, request_id=request_id, sampling=pb.SamplingParameters(**sampling))
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    return request
