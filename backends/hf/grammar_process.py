"""What runs inside a grammar compiler process (see grammar_worker.py for the parent's side).

The protocol, one message each way at a time over a multiprocessing Pipe: the parent first sends the
tokenizer's serialized xgrammar `TokenizerInfo` and gets READY; then each message is a schema's JSON text,
answered by GRAMMAR + the serialized CompiledGrammar, REJECTED + xgrammar's complaint, or TOO_LARGE + the
serialized size. The parent sends nothing while a compile runs, so anything readable then is the pipe's end:
the server is gone, and this process exits at once instead of finishing a compile nobody will read.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from multiprocessing.connection import wait

READY = b"ready"
GRAMMAR, REJECTED, TOO_LARGE = b"G", b"E", b"L"
NICENESS = 10
_XGRAMMAR_LOCATION = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")  # "[09:52:31] /project/cpp/x.cc:4950: "


def serve(conn, threads: int, max_compiled_bytes: int) -> None:
    """The process's main: compile each schema text it is sent, until the parent goes away."""
    os.nice(NICENESS)  # on a busy machine, decoding wins the CPU
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which then ends this process
    import xgrammar

    info = xgrammar.TokenizerInfo.deserialize_json(conn.recv_bytes().decode())
    # No cache here: the parent caches grammars by schema, and a second copy would only hold memory.
    compiler = xgrammar.GrammarCompiler(info, max_threads=threads, cache_enabled=False)
    conn.send_bytes(READY)
    while True:
        try:
            schema = conn.recv_bytes().decode()
        except EOFError:
            return
        reply = []
        done_r, done_w = os.pipe()
        worker = threading.Thread(target=_compile, args=(compiler, schema, max_compiled_bytes, reply, done_w),
                                  daemon=True)
        worker.start()
        if conn in wait([conn, done_r]):
            os._exit(0)  # the parent is gone (see the module docstring)
        os.close(done_r)
        conn.send_bytes(reply[0])


def _compile(compiler, schema: str, max_compiled_bytes: int, reply: list, done_w: int) -> None:
    try:
        reply.append(_reply(compiler, schema, max_compiled_bytes))
    finally:
        os.close(done_w)  # wakes serve()


def _reply(compiler, schema: str, max_compiled_bytes: int) -> bytes:
    try:
        compiled = compiler.compile_json_schema(schema, any_whitespace=False)
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError variants for schema problems
        return REJECTED + _XGRAMMAR_LOCATION.sub("", str(exc)).encode()
    grammar = compiled.serialize_json().encode()
    if len(grammar) > max_compiled_bytes:
        return TOO_LARGE + str(len(grammar)).encode()
    return GRAMMAR + grammar
