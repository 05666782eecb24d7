"""schemathesis hooks for tests/integration/schemathesis.toml (loaded by name, from the repository root).

No failure is filtered: the request models validate strictly (server/http/requests.py `validated`), as the
published schema says, and the server errors schemathesis found (an overflowing beam `length_penalty`, a
grammar with no instance) are fixed and kept as tests in tests/integration/test_openapi_schemathesis.py.
What is left here only makes the schemathesis process itself safe to run.
"""

from __future__ import annotations

import ast
import threading

# CPython 3.11's ast.parse is not thread-safe (python/cpython#106905: "SystemError: AST constructor recursion
# depth mismatch"), and hypothesis parses lambdas' sources while schemathesis's workers generate. Only this
# process, the schemathesis CLI, is patched.
_ast_parse, _ast_lock = ast.parse, threading.Lock()


def _serialized_parse(*args, **kwargs):
    with _ast_lock:
        return _ast_parse(*args, **kwargs)


ast.parse = _serialized_parse
