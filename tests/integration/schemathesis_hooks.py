"""schemathesis hooks for tests/integration/schemathesis.toml (loaded by name, from the repository root).

Failures of these kinds are dropped, and only these; schemathesis counts them in its summary ("Filtered: N
(dropped by `filter_failure`)").

- Lax coercion: a body that breaks the published schema yet is accepted, when all that is wrong with it is a
  value pydantic's lax mode converts: `0`/`1` or `"yes"` for a boolean, `false` or `"2"` for a number,
  `[true]` for token ids. The request models validate in lax mode (the handlers' behaviour, which this test
  does not own); the schema shows the types clients should send. A body the request model accepts even in
  strict mode, yet the schema refuses, is a schema that says less than the server accepts: still a failure.
- KNOWN_BUGS below: server errors schemathesis found in code this test does not own. Each is reproduced in
  tests/integration/test_openapi_schemathesis.py as a strict xfail: when one is fixed, its xfail fails until
  its entry here is removed.
"""

from __future__ import annotations

import ast
import threading

import schemathesis
from pydantic import ValidationError
from schemathesis.core.failures import AcceptedNegativeData

from server.openapi import OPERATIONS

REQUEST_MODELS = {(op.method, op.path): op.body for op in OPERATIONS}
BEAM_SCORE_OVERFLOW = 100.0
"""|length_penalty| past which (2 to 64 generated tokens) ** length_penalty leaves a float's range."""


def _beam_score_overflow(body: dict, error: str) -> bool:
    """backends/hf/beam_search.py scores `generated ** length_penalty`, which overflows (OverflowError) or
    reaches 0 (ZeroDivisionError) for an extreme penalty: 500 `request_failed`."""
    penalty = body.get("length_penalty")
    return (body.get("use_beam_search") is True and isinstance(penalty, int | float)
            and abs(penalty) > BEAM_SCORE_OVERFLOW and ("OverflowError" in error or "ZeroDivisionError" in error))


def _grammar_without_instance(body: dict, error: str) -> bool:
    """A response_format / grammar schema with no instance that backends/hf/schema_check.py does not catch
    (an unsatisfiable `pattern`: `{"type": "string", "pattern": "[^\\\\s\\\\S]"}`) fails in the engine when
    the grammar allows no next token: RequestFailed, a 500 on OpenAI's routes (424 on TGI's), for what is
    the request's own fault."""
    return "grammar allows no next token" in error


KNOWN_BUGS = (_beam_score_overflow, _grammar_without_instance)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return True
    if isinstance(failure, AcceptedNegativeData):
        models = REQUEST_MODELS.get((case.operation.method.lower(), case.operation.path), ())
        return any(_strictly_valid(model, body) for model in models)
    error = _failed_request_message(response)
    return error is None or not any(known(body, error) for known in KNOWN_BUGS)


def _strictly_valid(model, body: dict) -> bool:
    try:
        model.model_validate(body, strict=True)
    except ValidationError:
        return False
    return True


def _failed_request_message(response) -> str | None:
    """The message of a request that failed in the engine: 500 `request_failed` (OpenAI) or 424 `generation`
    (TGI); None for any other answer."""
    try:
        data = response.json()
    except ValueError:
        return None
    if response.status_code == 500 and isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        return str(error.get("message")) if error.get("code") == "request_failed" else None
    if response.status_code == 424 and isinstance(data, dict) and data.get("error_type") == "generation":
        return str(data.get("error"))
    return None


# CPython 3.11's ast.parse is not thread-safe (python/cpython#106905: "SystemError: AST constructor recursion
# depth mismatch"), and hypothesis parses lambdas' sources while schemathesis's workers generate. Only this
# process, the schemathesis CLI, is patched.
_ast_parse, _ast_lock = ast.parse, threading.Lock()


def _serialized_parse(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _serialized_parse
