"""The turnout.v1.Generation servicer: thin translation between protobuf and the core types, over the same
router, backends, validation, errors and telemetry as the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing

import grpc
from google.protobuf.message import Message

from backends.errors import InvalidRequest
from backends.types import OutputDelta
from server.admission import Unauthenticated
from server.errors import grpc_status, to_turnout_error
from server.grpc.convert import FINISH_REASONS, logprobs_message, to_generate_request, usage_message
from server.grpc.gen import generate_pb2 as pb
from server.grpc.gen import generate_pb2_grpc as pb_grpc
from server.grpc.handlers import Undecodable
from server.http.auth_middleware import presented_key
from server.keys import ApiKey
from server.rate_limits import estimate_tokens
from server.router import Router
from server.telemetry import RequestRecord, Telemetry, check_request_id, mint_request_id

REQUEST_ID_METADATA = "x-request-id"


class GenerationService(pb_grpc.GenerationServicer):
    def __init__(self, router: Router, telemetry: Telemetry):
        self.router = router
        self.telemetry = telemetry
        self._active: dict[str, set[asyncio.Task]] = {}  # request id -> the tasks serving calls with it
        self._aborted: set[asyncio.Task] = set()

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "Generate", request) as record:
            stream = self._generate(request, record, context)
            async with aclosing(stream):
                ends: dict[int, pb.ChoiceEnd] = {}
                usage = None
                async for delta in stream:
                    if delta.token_ids or delta.text:
                        yield pb.GenerateResponse(delta=pb.Delta(
                            index=delta.index, token_ids=delta.token_ids, text=delta.text,
                            logprobs=logprobs_message(delta.logprobs)))
                    if delta.finish_reason is not None:
                        ends[delta.index] = _choice_end(delta)
                    usage = delta.usage or usage
                finished = pb.Finished(choices=[ends[i] for i in sorted(ends)])
                if usage is not None:
                    finished.usage.CopyFrom(usage_message(usage))
                yield pb.GenerateResponse(finished=finished)

    async def Complete(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "Complete", request) as record:
            choices: dict[int, pb.Choice] = {}
            out = pb.CompleteResponse(request_id=record.request_id, model=request.model)
            async with aclosing(self._generate(request, record, context)) as stream:
                async for delta in stream:
                    choice = choices.setdefault(delta.index, pb.Choice(index=delta.index))
                    choice.token_ids.extend(delta.token_ids)
                    choice.text += delta.text
                    choice.logprobs.extend(logprobs_message(delta.logprobs))
                    if delta.finish_reason is not None:
                        end = _choice_end(delta)
                        choice.finish_reason = end.finish_reason
                        if end.HasField("cumulative_logprob"):
                            choice.cumulative_logprob = end.cumulative_logprob
                    if delta.usage is not None:
                        out.usage.CopyFrom(usage_message(delta.usage))
            out.choices.extend(choices[i] for i in sorted(choices))
            return out

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "Tokenize", request) as record:
            backend = self._local_tokenizer(request.model or None, record)
            add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
            ids = await backend.tokenizing.encode(request.text, add_special_tokens=add_special, param="text")
            return pb.TokenizeResponse(token_ids=ids, max_model_len=backend.info.max_model_len)

    async def Detokenize(self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "Detokenize", request) as record:
            tokenizer = self._local_tokenizer(request.model or None, record).tokenizer
            vocab = len(tokenizer)
            bad = [t for t in request.token_ids if not 0 <= t < vocab]
            if bad:  # the HTTP endpoint's message
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param="tokens")
            return pb.DetokenizeResponse(text=tokenizer.decode(list(request.token_ids)))

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "ListModels", request) as record:
            return pb.ListModelsResponse(models=[
                pb.Model(id=info.name, owned_by=info.owned_by, max_model_len=info.max_model_len)
                for info in self.router.models(record.api_key)
            ])

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext):
        async with self._call(context, "Abort", request):
            tasks = self._active.get(request.request_id)
            if not tasks:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no running request has id {request.request_id!r}")
            for task in tasks:
                self._aborted.add(task)
                task.cancel()
            return pb.AbortResponse()

    def _generate(self, request: pb.GenerateRequest, record: RequestRecord, context: grpc.aio.ServicerContext):
        # Validate first, then resolve the model: the order (and so the error) the HTTP API has.
        generate_request = to_generate_request(request, record.request_id)
        admitted = self.router.admit(
            record, 1, generate_request.sampling,
            estimate_tokens([generate_request.prompt or ""], [generate_request.prompt_token_ids or []]),
            call_timeout=context.time_remaining())  # the call's deadline (gRPC also cancels the call at it)
        generate_request.tenant, generate_request.deadline = admitted.tenant, admitted.deadline
        if header := self.router.settings.affinity_session_header:  # prefix_affinity's session id, as metadata
            generate_request.session = dict(context.invocation_metadata() or ()).get(header.lower()) or None
        backend = self.router.resolve(generate_request.model, record.api_key)
        return self.telemetry.observed(record, backend, generate_request)

    def _local_tokenizer(self, model: str | None, record: RequestRecord):
        backend = self.router.resolve(model, record.api_key)
        record.model = backend.info.name if model is None else model
        if backend.tokenizing is None:
            raise InvalidRequest(f"model {backend.info.name!r} has no local tokenizer", param="model")
        return backend

    def _api_key(self, metadata: dict) -> ApiKey | None:
        """The call's key from its `authorization` metadata (`Bearer KEY`) or `x-api-key`; Unauthenticated
        when the server needs one and this is missing or unknown."""
        if not self.router.keys.required:
            return None
        presented = presented_key(metadata)
        key = self.router.keys.find(presented) if presented else None
        if key is None:
            raise Unauthenticated("missing API key: send `authorization: Bearer KEY` metadata"
                                  if presented is None else "invalid API key")
        return key

    @contextlib.asynccontextmanager
    async def _call(self, context: grpc.aio.ServicerContext, method: str, request: Message | Undecodable):
        """One call's record, request id (GenerateRequest's field, else `x-request-id` metadata, else
        minted; sent back as initial metadata), abort registration, and error -> status code (a request
        that did not parse is INVALID_ARGUMENT); then the telemetry."""
        metadata = dict(context.invocation_metadata() or ())
        client_id = request.request_id if isinstance(request, pb.GenerateRequest) else ""
        record = self.telemetry.begin("grpc", f"grpc:{method}", client_id or metadata.get(REQUEST_ID_METADATA))
        record.request_id = record.request_id or mint_request_id(method.lower())
        task = asyncio.current_task()
        self._active.setdefault(record.request_id, set()).add(task)
        status = grpc.StatusCode.OK
        try:
            record.api_key = self._api_key(metadata)
            if isinstance(request, Undecodable):
                raise InvalidRequest(request.message)
            check_request_id(record.request_id, "request_id")
            await context.send_initial_metadata(((REQUEST_ID_METADATA, record.request_id),))
            yield record
        except asyncio.CancelledError:
            if task not in self._aborted:
                status = _cancel_status(context)  # the client cancelled, or its deadline passed
                raise
            task.uncancel()
            status = grpc.StatusCode.CANCELLED
            await context.abort(status, f"request {record.request_id!r} was aborted")
        except GeneratorExit:  # the stream was closed while a message was being sent
            status = _cancel_status(context)
            raise
        except grpc.aio.AbortError:  # context.abort() above already set the status
            status = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            error = to_turnout_error(exc)
            status = grpc_status(error)
            await context.abort(status, error.message)
        finally:
            tasks = self._active.get(record.request_id, set())
            tasks.discard(task)
            if not tasks:
                self._active.pop(record.request_id, None)
            self._aborted.discard(task)
            self.telemetry.finish(record, status.name)


def _choice_end(delta: OutputDelta) -> pb.ChoiceEnd:
    end = pb.ChoiceEnd(index=delta.index, finish_reason=FINISH_REASONS[delta.finish_reason])
    if delta.cumulative_logprob is not None:
        end.cumulative_logprob = delta.cumulative_logprob
    return end


def _cancel_status(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
