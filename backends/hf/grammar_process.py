"""What runs inside a grammar compiler process (see grammar_worker.py for the parent's side).

The protocol, one message each way at a time over a multiprocessing Pipe: the parent first sends the
tokenizer's serialized xgrammar `TokenizerInfo` and gets READY; then each message is a schema's JSON text,
answered by COMPILED, REJECTED + xgrammar's complaint, or TOO_LARGE + the compiled grammar's size in bytes.
The grammar itself stays here: see grammar_worker.py for why the parent compiles it again.

The parent sends nothing while a compile runs, so anything readable then is the pipe's end: the server is
gone, and this process exits at once instead of finishing a compile nobody will read.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from multiprocessing.connection import wait

READY = b"ready"
COMPILED, REJECTED, TOO_LARGE = b"C", b"E", b"L"
NICENESS = 10
"""Compilers run at this lower CPU priority, so on a busy machine decoding wins the CPU."""
_XGRAMMAR_LOCATION = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")  # "[09:52:31] /project/cpp/x.cc:4950: "


def serve(conn, threads: int, max_compiled_bytes: int) -> None:
    """The process's main: compile each schema text it is sent, until the parent goes away."""
    os.nice(NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which then ends this process
    import xgrammar

    info = xgrammar.TokenizerInfo.deserialize_json(conn.recv_bytes().decode())
    # No cache here: the parent caches grammars by schema, and this process only tries them.
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
        reply.append(_outcome(compiler, schema, max_compiled_bytes))
    finally:
        os.close(done_w)  # wakes serve()


def _outcome(compiler, schema: str, max_compiled_bytes: int) -> bytes:
    try:
        compiled = compiler.compile_json_schema(schema, any_whitespace=False)
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError variants for schema problems
        return REJECTED + _XGRAMMAR_LOCATION.sub("", str(exc)).encode()
    if compiled.memory_size_bytes > max_compiled_bytes:
        return TOO_LARGE + str(compiled.memory_size_bytes).encode()
    return COMPILED
