"""turnout.v1 messages <-> core types. Validation goes through the OpenAI schemas (server/grpc/schemas.py), so the
two protocols share ranges and error messages."""

from __future__ import annotations

import json

from pydantic import ValidationError

from backends.errors import InvalidRequest
from backends.types import FinishReason, GenerateRequest, TokenLogprob, Usage
from server.errors import from_validation_error
from server.grpc.gen import generate_pb2 as pb
from server.grpc.schemas import GenerateFields
from server.openai.convert import completion_sampling_params

# Proto3 `optional` fields: absent means "the HTTP API's default", so only set ones are passed on.
_OPTIONAL = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty", "seed",
             "skip_special_tokens", "n", "best_of", "beam_width", "length_penalty", "logprobs")
# Plain scalars whose proto default (0, false) is also the HTTP default.
_PLAIN = ("min_tokens", "presence_penalty", "frequency_penalty", "ignore_eos", "use_beam_search", "early_stopping")
_FORMAT_TYPES = {
    pb.ResponseFormat.TYPE_TEXT: "text",
    pb.ResponseFormat.TYPE_JSON_OBJECT: "json_object",
    pb.ResponseFormat.TYPE_JSON_SCHEMA: "json_schema",
}
FINISH_REASONS = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.ABORT: pb.FINISH_REASON_ABORT,
}


def request_fields(message: pb.GenerateRequest) -> dict:
    """The request in the HTTP API's field names, for GenerateFields to validate."""
    s = message.sampling
    fields: dict = {"model": message.model}
    which = message.WhichOneof("input")
    if which == "text":
        fields["prompt"] = message.text
    elif which == "token_ids":
        fields["prompt"] = list(message.token_ids.ids)
    fields.update({name: getattr(s, name) for name in _OPTIONAL if s.HasField(name)})
    fields.update({name: getattr(s, name) for name in _PLAIN})
    if s.stop:
        fields["stop"] = list(s.stop)
    if s.stop_token_ids:
        fields["stop_token_ids"] = list(s.stop_token_ids)
    if s.logit_bias:
        fields["logit_bias"] = {str(token): bias for token, bias in s.logit_bias.items()}
    if s.HasField("response_format"):
        fields["response_format"] = _response_format(s.response_format)
    return fields


def _response_format(fmt: pb.ResponseFormat) -> dict:
    if fmt.type not in _FORMAT_TYPES:  # left unset (TYPE_UNSPECIFIED), or a number this proto does not define
        *others, last = (pb.ResponseFormat.Type.Name(t) for t in _FORMAT_TYPES)
        got = pb.ResponseFormat.Type.Name(fmt.type) if fmt.type in pb.ResponseFormat.Type.values() else fmt.type
        raise InvalidRequest(f"response_format.type: Input should be {', '.join(others)} or {last} (got {got})",
                             param="response_format.type")
    out: dict = {"type": _FORMAT_TYPES[fmt.type]}
    if fmt.type == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        try:
            schema = json.loads(fmt.json_schema or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"response_format.json_schema is not valid JSON: {exc}",
                                 param="response_format.json_schema") from None
        out["json_schema"] = {"schema": schema}
    return out


def to_generate_request(message: pb.GenerateRequest, request_id: str) -> GenerateRequest:
    try:
        fields = GenerateFields.model_validate(request_fields(message), strict=True)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    params = completion_sampling_params(fields)
    prompt = fields.prompt
    return GenerateRequest(
        request_id=request_id,
        model=fields.model,
        sampling=params,
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_token_ids=None if isinstance(prompt, str) else list(prompt),
    )


def logprobs_message(items: list[TokenLogprob] | None) -> list[pb.TokenLogprob]:
    if not items:
        return []
    return [
        pb.TokenLogprob(token_id=i.token_id, token=i.token, logprob=i.logprob or 0.0,
                        top=[pb.TopLogprob(token_id=t.token_id, token=t.token, logprob=t.logprob) for t in i.top])
        for i in items
    ]


def usage_message(usage: Usage) -> pb.Usage:
    return pb.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens)
