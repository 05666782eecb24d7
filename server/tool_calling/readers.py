"""Reading tool calls out of generated text, piece by piece, as it streams.

Each reader takes the text of one choice in the pieces the backend yields (`feed`) and then `finish()`,
and returns what each piece means: text that is the answer's `content`, and `ToolCallDelta`s in OpenAI's
streaming shape (a call's first delta has its id and name, later ones add argument text). A non-streamed
response runs the same reader over the same pieces, so it carries exactly the calls a stream helper
assembles from the stream.

- `NamedCallReader` (tool_choice names a function): the grammar made the whole text the call's arguments.
- `ArrayCallReader` (tool_choice required): the grammar made the text a JSON array of
  {"name": ..., "arguments": {...}} objects (constraint.py); the calls stream as the array is written.
- `TaggedCallReader` (tool_choice auto): free text, in which the bundled template's syntax,
  <tool_call>{"name": ..., "arguments": {...}}</tool_call>, marks a call. Text that only might begin a
  tag is held back until it is clear; a block that is not a valid call of a known function is content.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from backends.types import ToolCallDelta

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class Read:
    """What one piece of text meant."""

    content: str = ""
    calls: list[ToolCallDelta] = field(default_factory=list)

    def __iadd__(self, other: Read) -> Read:
        self.content += other.content
        self.calls.extend(other.calls)
        return self


class NamedCallReader:
    def __init__(self, name: str):
        self._name = name
        self._announced = False

    def _announce(self) -> list[ToolCallDelta]:
        if self._announced:
            return []
        self._announced = True
        return [ToolCallDelta(0, new_call_id(), self._name, "")]

    def feed(self, text: str) -> Read:
        calls = self._announce()
        if text:
            calls.append(ToolCallDelta(0, arguments=text))
        return Read(calls=calls)

    def finish(self) -> Read:
        return Read(calls=self._announce())


@dataclass
class _Call:
    """One element of the array being written: where its pieces are, and what has been sent of it."""

    name: str | None = None
    arguments_start: int | None = None
    arguments_end: int | None = None
    announced: bool = False
    sent_to: int | None = None
    """Text offset up to which the arguments have been sent."""


class ArrayCallReader:
    """Scans the array character by character: string and escape state, nesting depth, and at depth 2
    (inside an element) which key's value is being written."""

    def __init__(self):
        self._text = ""
        self._at = 0
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._string_start = 0
        self._key: str | None = None
        self._expect_key = False
        self._value_key: str | None = None
        """The key whose value (at depth 2) is being written, between its ':' and the next ',' or '}'."""
        self._calls: list[_Call] = []

    def feed(self, text: str) -> Read:
        self._text += text
        self._scan()
        return Read(calls=self._sendable())

    def finish(self) -> Read:
        return Read()  # everything scanned has been sent (a cut-off element's arguments as far as they got)

    def _scan(self) -> None:
        text = self._text
        while self._at < len(text):
            ch, i = text[self._at], self._at
            self._at += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
                    self._string_done(text[self._string_start:i + 1])
                continue
            if ch == '"':
                self._in_string, self._string_start = True, i
            elif ch in "{[":
                self._depth += 1
                if self._depth == 2 and ch == "{":
                    self._calls.append(_Call())
                    self._expect_key = True
                elif self._depth == 3 and self._value_key == "arguments" and self._calls[-1].arguments_start is None:
                    self._calls[-1].arguments_start = i
            elif ch in "}]":
                if self._depth == 3 and self._value_key == "arguments":
                    self._calls[-1].arguments_end = i + 1
                    self._value_key = None
                self._depth -= 1
                if self._depth == 1:
                    self._value_key = None
            elif self._depth == 2:
                if ch == ":":
                    self._value_key, self._expect_key = self._key, False
                elif ch == ",":
                    self._value_key, self._expect_key = None, True

    def _string_done(self, raw: str) -> None:
        if self._depth != 2 or not self._calls:
            return
        if self._expect_key:
            self._key = json.loads(raw)
        elif self._value_key == "name":
            self._calls[-1].name = json.loads(raw)

    def _sendable(self) -> list[ToolCallDelta]:
        out = []
        for index, call in enumerate(self._calls):
            if call.name is None:
                continue
            if not call.announced:
                call.announced = True
                out.append(ToolCallDelta(index, new_call_id(), call.name, ""))
            if call.arguments_start is None:
                continue
            start = call.arguments_start if call.sent_to is None else call.sent_to
            end = call.arguments_end if call.arguments_end is not None else len(self._text)
            if end > start:
                out.append(ToolCallDelta(index, arguments=self._text[start:end]))
            call.sent_to = end
        return out


class TaggedCallReader:
    def __init__(self, function_names: set[str], parallel: bool = True):
        self._names = function_names
        self._parallel = parallel
        self._pending = ""
        self._in_call = False
        self._after_call = False
        """Whitespace right after a call belongs to the call syntax, not to the content."""
        self._count = 0

    def feed(self, text: str) -> Read:
        self._pending += text
        read = Read()
        while True:
            if self._in_call:
                end = self._pending.find(CALL_CLOSE)
                if end < 0:
                    return read
                body = self._pending[:end]
                self._pending = self._pending[end + len(CALL_CLOSE):]
                self._in_call = False
                read += self._call(body, CALL_OPEN + body + CALL_CLOSE)
                continue
            if self._after_call:
                stripped = self._pending.lstrip()
                if not stripped:
                    self._pending = ""
                    return read
                self._pending, self._after_call = stripped, False
            start = self._pending.find(CALL_OPEN)
            if start >= 0:
                read.content += self._pending[:start]
                self._pending = self._pending[start + len(CALL_OPEN):]
                self._in_call = True
                continue
            keep = _partial_tag_length(self._pending)
            read.content += self._pending[:len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep:]
            return read

    def finish(self) -> Read:
        read = self.feed("")
        if self._in_call:  # no closing tag: a call all the same when its body parses (the model ended there)
            read += self._call(self._pending, CALL_OPEN + self._pending)
        elif not self._after_call:
            read.content += self._pending
        self._pending = ""
        return read

    def _call(self, body: str, raw: str) -> Read:
        try:
            call = json.loads(body)
            name, arguments = call["name"], call.get("arguments", {})
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            valid = name in self._names and isinstance(arguments, dict)
        except (ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            return Read(content=raw)
        self._after_call = True
        if self._count and not self._parallel:  # parallel_tool_calls false: the first call only
            return Read()
        self._count += 1
        index = self._count - 1
        return Read(calls=[ToolCallDelta(index, new_call_id(), name, ""),
                           ToolCallDelta(index, arguments=json.dumps(arguments, ensure_ascii=False))])


def _partial_tag_length(text: str) -> int:
    """Length of the longest end of `text` that could be the start of CALL_OPEN."""
    for length in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-length:]):
            return length
    return 0
