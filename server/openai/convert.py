"""OpenAI request schemas -> core types. The only place that knows both vocabularies."""

from __future__ import annotations

from jinja2 import TemplateError

from backends.errors import InvalidRequest
from backends.tokenizing import Tokenizing
from backends.types import SamplingParams, ToolChoice, ToolFunction
from server.openai.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields
from server.openai.tool_schemas import ToolDefinition
from server.tool_calling.rendering import for_template


def _stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    if not bias:
        return {}
    out = {}
    for key, value in bias.items():
        # Plain ASCII digits only: int() would also take "-1" (the vocabulary's last token, counted from
        # the end), " 5", "1_0" and other scripts' digits.
        if not (key.isascii() and key.isdigit()):
            raise InvalidRequest(f"logit_bias keys must be token ids (non-negative integers), got {key!r}",
                                 param="logit_bias")
        out[int(key)] = value
    return out


def _common(req: SamplingFields, max_tokens: int | None) -> dict:
    return dict(
        max_tokens=max_tokens,
        min_tokens=req.min_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=0 if req.top_k is None or req.top_k < 0 else req.top_k,
        min_p=req.min_p,
        typical_p=req.typical_p,
        repetition_penalty=req.repetition_penalty,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        logit_bias=_logit_bias(req.logit_bias),
        seed=req.seed,
        stop=_stop_list(req.stop),
        stop_token_ids=list(req.stop_token_ids or []),
        json_schema=_json_schema(req),
        ignore_eos=req.ignore_eos,
        n=req.n,
        use_beam_search=req.use_beam_search,
        beam_width=req.beam_width or req.n,
        length_penalty=req.length_penalty,
        early_stopping=req.early_stopping,
        skip_special_tokens=req.skip_special_tokens,
    )


def _json_schema(req: SamplingFields) -> dict | None:
    """The schema output must follow ({} for any JSON object), or None."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.json_schema is not None:
        return fmt.json_schema.schema_
    return fmt.value or {}


def completion_sampling_params(req: CompletionRequest) -> SamplingParams:
    params = SamplingParams(
        **_common(req, req.max_tokens),
        best_of=req.best_of,
        logprobs=req.logprobs,
        prompt_logprobs=req.logprobs if req.echo and req.logprobs is not None else None,
    )
    if params.min_tokens and params.max_tokens is not None and params.min_tokens > params.max_tokens:
        raise InvalidRequest(
            f"min_tokens ({params.min_tokens}) must be <= max_tokens ({params.max_tokens})", param="min_tokens"
        )
    return params


def chat_sampling_params(req: ChatCompletionRequest) -> SamplingParams:
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return SamplingParams(
        **_common(req, max_tokens),
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )


def tool_functions(tools: list[ToolDefinition] | None) -> list[ToolFunction]:
    return [ToolFunction(t.function.name, t.function.description, t.function.parameters) for t in tools or ()]


def chat_tools(req: ChatCompletionRequest) -> tuple[list[ToolFunction], ToolChoice]:
    """The request's functions and tool choice, with the rules that tie its fields together."""
    functions = tool_functions(req.tools)
    names = [f.name for f in functions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidRequest(f"tools: function names must be unique, {duplicates[0]!r} is defined twice",
                             param="tools")
    wire = req.tool_choice
    if wire is None:
        choice = ToolChoice("auto" if functions else "none")
    elif isinstance(wire, str):
        choice = ToolChoice(wire)
    else:
        choice = ToolChoice("function", wire.function.name)
        if wire.function.name not in names:
            raise InvalidRequest(f"tool_choice names the function {wire.function.name!r}, which is not in tools "
                                 f"({', '.join(map(repr, names)) or 'none given'})", param="tool_choice")
    if choice.mode in ("required", "function") and not functions:
        raise InvalidRequest(f"tool_choice {choice.mode!r} needs tools to choose from", param="tool_choice")
    if functions and choice.mode != "none" and req.response_format is not None \
            and req.response_format.type != "text":
        raise InvalidRequest("response_format cannot constrain a reply that may call tools; use tool_choice "
                             "'none' or drop response_format", param="response_format")
    return functions, choice


def message_dicts(messages: list[ChatMessage]) -> list[dict]:
    """The conversation as OpenAI-shaped dicts, content as plain text: what a chat template and a remote
    server take."""
    out = []
    for m in messages:
        message: dict = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                     for c in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out


async def render_chat(tokenizing: Tokenizing, messages: list[dict], add_generation_prompt: bool,
                      tools: list[dict] | None = None) -> list[int]:
    """Apply the model's chat template (off the event loop when the conversation is big); the template adds
    any special tokens it wants. A conversation whose text alone cannot fit the context is refused first.
    `tools` (OpenAI's definitions) reach a template that knows them, else the fallback rendering
    (server/tool_calling/rendering.py)."""
    tokenizer = tokenizing.tokenizer
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise InvalidRequest(
            "this model has no chat template; use /v1/completions with a plain prompt instead",
            param="messages",
        )
    conversation, template_tools = for_template(messages, tools, template)
    chars = sum(len(m["content"]) for m in conversation) + len(repr(template_tools or "")) + sum(
        len(c["function"]["arguments"]) for m in messages for c in m.get("tool_calls") or ())
    tokenizing.check_size(chars, param="messages")
    return await tokenizing.run(chars, _render, tokenizer, conversation, add_generation_prompt, template_tools)


def _render(tokenizer, conversation: list[dict], add_generation_prompt: bool, tools: list[dict] | None) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(conversation, tools=tools, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
        return tokenizer.encode(text, add_special_tokens=False)
    except (TemplateError, TypeError, ValueError) as exc:  # the template's own checks (raise_exception), or
        # text the tokenizer cannot take
        raise InvalidRequest(f"messages: the chat template refused them: {exc}", param="messages") from None
