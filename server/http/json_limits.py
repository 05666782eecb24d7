"""What a JSON request body may hold beyond being JSON: bounded nesting, and text that is text.

Python's `json` accepts both things that later break a request in ways that look like server faults:
bodies nested so deep that walking them overflows the stack (100,000 levels got a 500 RecursionError), and
`\\ud800`-style escapes of lone UTF-16 surrogates, which become `str`s no encoder takes (a prompt with one
reached the tokenizer and failed there, counted against the replica; in a model name, the error message
that quoted it could not be written). Both are refused here, with a 400 that names the field.

The checks walk the parsed body only when its raw bytes say they could fail (enough brackets for the depth,
a surrogate escape at all), so an ordinary body pays two byte counts and one regex scan.
"""

from __future__ import annotations

import re

from backends.errors import InvalidRequest

MAX_DEPTH = 64
"""Most levels of arrays and objects a body may nest (request schemas need a handful; JSON schemas in
`response_format` rarely a dozen)."""

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_body(data, raw: bytes) -> None:
    """InvalidRequest naming the first field nested past MAX_DEPTH or holding a lone surrogate."""
    deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    if deep or surrogates:
        _walk(data)


def _walk(data) -> None:
    stack = [(data, (), 0)]  # iterative: the body may be nested deeper than Python's stack allows
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(f"{_name(path) or 'request body'}: JSON nested more than {MAX_DEPTH} levels deep",
                                     param=_name(path))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, path)
                stack.append((item, (*path, key), depth + 1))


def _check_text(text: str, path: tuple) -> None:
    # json.loads joins valid surrogate pairs into one character, so any surrogate left is a lone one.
    found = _SURROGATE.search(text)
    if found is not None:
        where = _name(path) or "request body"
        raise InvalidRequest(f"{where}: contains a lone UTF-16 surrogate (\\u{ord(found.group()):04x}), which is "
                             "not valid Unicode text", param=_name(path))


def _name(path: tuple) -> str | None:
    return ".".join(str(part) for part in path) or None
