"""A conversation with tools, as a chat template takes it.

A template that knows tools (its source mentions `tools`, as the bundled one's and most current models' do)
gets them as `tools=[...]` beside the messages, and the calls in the history with their arguments as
objects (transformers' convention). A template that does not gets the fallback rendering, in the bundled
template's syntax, through the roles every template has:

- the tool list and the instructions go into the system message (one is added first when there is none);
- an assistant's calls become its content: <tool_call>{"name": ..., "arguments": ...}</tool_call> lines;
- a tool's result becomes a user message: <tool_response>...</tool_response>.
"""

from __future__ import annotations

import json

from server.tool_calling.readers import CALL_CLOSE, CALL_OPEN


def instructions(tools: list[dict]) -> str:
    """The bundled template's words for the tool list (tools/chat.py renders the same)."""
    listing = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>{listing}\n"
            "</tools>\n\nFor each function call, return a json object with function name and arguments within "
            f"{CALL_OPEN}{CALL_CLOSE} XML tags:\n"
            f'{CALL_OPEN}\n{{"name": <function-name>, "arguments": <args-json-object>}}\n{CALL_CLOSE}')


def knows_tools(template) -> bool:
    return template is not None and "tools" in str(template)


def for_template(messages: list[dict], tools: list[dict] | None, template) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) to hand the template: `messages` are OpenAI-shaped dicts, `tools` OpenAI's tool
    definitions (or None)."""
    if knows_tools(template):
        return [_with_argument_objects(m) for m in messages], tools or None
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return messages, None
    return _fallback(messages, tools or []), None


def _with_argument_objects(message: dict) -> dict:
    if not message.get("tool_calls"):
        return message
    calls = []
    for call in message["tool_calls"]:
        function = dict(call["function"])
        try:
            function["arguments"] = json.loads(function["arguments"])
        except ValueError:
            pass  # not JSON: the template gets the text as the client sent it
        calls.append({**call, "function": function})
    return {**message, "tool_calls": calls}


def call_text(name: str, arguments: str) -> str:
    return f'{CALL_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n{CALL_CLOSE}'


def _fallback(messages: list[dict], tools: list[dict]) -> list[dict]:
    out = []
    if tools:
        listing = instructions(tools)
        if messages and messages[0]["role"] == "system":
            out.append({"role": "system", "content": messages[0]["content"] + "\n\n" + listing})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": listing})
    for message in messages:
        if message.get("tool_calls"):
            lines = [message.get("content") or ""] if message.get("content") else []
            lines += [call_text(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(lines)})
        elif message["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out
