"""A grammar compiler in a process of its own, so a compile can be stopped: a thread cannot be.

`CompileWorker` is the parent's handle on one such process (grammar_process.py is what runs inside it). The
process gets the tokenizer's xgrammar `TokenizerInfo` once, then compiles one schema at a time and sends back
the serialized grammar, which the parent loads next to its own copy of the tokenizer info. A compile that
runs past its time or memory limit, or whose request is abandoned, is stopped by killing the process; a
fresh one starts at once, so the next schema does not wait for it.

Processes come from a forkserver (the parent runs torch and the engine's threads, so it must never fork)
that has imported xgrammar once: a replacement is ready in ~10 ms instead of the ~2 s a fresh interpreter
spends importing torch. The worker runs at a lower CPU priority, so on a busy machine decoding wins the CPU,
and exits by itself, even mid-compile, when the server is gone.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from backends.errors import InvalidRequest, Unavailable
from backends.hf.grammar_process import GRAMMAR, READY, REJECTED, TOO_LARGE, serve
from backends.hf.schema_check import PARAM

_BOOT_TIMEOUT_S = 120.0
_MEMORY_POLL_S = 0.05


@dataclass(frozen=True)
class CompileLimits:
    timeout_s: float
    memory_bytes: int
    max_compiled_bytes: int
    threads: int


def _forkserver():
    context = multiprocessing.get_context("forkserver")
    # Takes effect if the forkserver is not running yet (the first worker starts it): it then imports xgrammar
    # once for every worker it forks. Like any multiprocessing child, each worker still runs the main script's
    # imports again (CPython 3.11 never preloads __main__ into a forkserver); turnout's is two lines.
    context.set_forkserver_preload(["xgrammar"])
    return context


class CompileWorker:
    """One compiler process, one compile at a time (the pool in grammar.py hands workers out). Its blocking
    pipe reads run on its own thread; the event loop only waits on them."""

    def __init__(self, tokenizer_info, tokenizer_info_json: str, limits: CompileLimits):
        self._info = tokenizer_info
        self._info_json = tokenizer_info_json.encode()
        self._limits = limits
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="grammar-worker")
        self._process = None
        self._conn = None
        self._booted: Future | None = None
        self.num_started = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process in the background, if it is not started or starting."""
        if self._booted is None:
            self._booted = self._thread.submit(self._boot)

    async def compile(self, schema: str):
        """The xgrammar CompiledGrammar of a schema text; InvalidRequest for a schema it rejects or one past
        a limit (the process is then replaced), Unavailable if the process cannot start."""
        self.start()
        try:  # shielded: cancelling a request must not cancel a start queued behind a killed compile
            await asyncio.shield(asyncio.wrap_future(self._booted))
        except Unavailable:
            self._booted = None  # the next compile tries again
            raise
        loop = asyncio.get_running_loop()
        reply = loop.run_in_executor(self._thread, self._exchange, schema)
        deadline = loop.time() + self._limits.timeout_s
        try:
            while not reply.done():
                await asyncio.wait([reply], timeout=max(0.0, min(_MEMORY_POLL_S, deadline - loop.time())))
                if reply.done():
                    break
                if loop.time() >= deadline:
                    raise InvalidRequest(f"the JSON schema took longer than {self._limits.timeout_s:g} s to "
                                         "compile (grammar_compile_timeout_s)", param=PARAM)
                if self._resident_bytes() > self._limits.memory_bytes:
                    raise InvalidRequest(f"compiling the JSON schema took more than "
                                         f"{self._limits.memory_bytes >> 20} MiB (grammar_compile_memory_mb)",
                                         param=PARAM)
            return reply.result()
        except _WorkerDied as exc:
            self._replace()
            raise InvalidRequest(f"the grammar compiler died compiling this JSON schema ({exc})",
                                 param=PARAM) from None
        except BaseException:  # a limit, or the request was abandoned (cancelled): stop the compile now
            if not reply.done():
                reply.cancel()  # its thread returns once the process is gone; nobody wants the answer
                self._replace()
            raise

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _replace(self) -> None:
        """Kill the process (its pipe then ends, which frees this worker's thread) and start another."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
        self._booted = self._thread.submit(self._restart, process)

    def _restart(self, old) -> None:
        if old is not None:
            old.join(5)
        self._boot()

    def _boot(self) -> None:
        """Start a process and hand it the tokenizer info (on this worker's thread: both can block)."""
        if self._conn is not None:
            self._conn.close()
        context = _forkserver()
        self._conn, child_conn = context.Pipe()
        process = context.Process(target=serve, args=(child_conn, self._limits.threads,
                                                      self._limits.max_compiled_bytes),
                                  name="turnout-grammar-compiler", daemon=True)
        try:
            process.start()
        except Exception as exc:
            raise Unavailable(f"could not start a grammar compiler process: {exc}") from exc
        finally:
            child_conn.close()
        self._process = process
        self.num_started += 1
        try:
            self._conn.send_bytes(self._info_json)
            if self._conn.poll(_BOOT_TIMEOUT_S) and self._conn.recv_bytes() == READY:
                return
        except (EOFError, OSError):
            pass
        process.kill()
        raise Unavailable(f"the grammar compiler process did not start (exit code {process.exitcode})")

    def _exchange(self, schema: str):
        """Send one schema and load the grammar that comes back (on this worker's thread)."""
        import xgrammar

        try:
            self._conn.send_bytes(schema.encode())
            reply = self._conn.recv_bytes(maxlength=self._limits.max_compiled_bytes + 1)
        except (EOFError, OSError) as exc:
            process = self._process
            code = process.exitcode if process is not None else None
            if process is not None and code is None:
                process.join(1)
                code = process.exitcode
            raise _WorkerDied(f"exit code {code}" if code is not None else type(exc).__name__) from None
        tag, body = reply[:1], reply[1:]
        if tag == REJECTED:
            raise InvalidRequest(f"unsupported or invalid JSON schema: {body.decode()}", param=PARAM)
        if tag == TOO_LARGE:
            raise InvalidRequest(f"the JSON schema compiles to a {int(body) >> 20} MiB grammar, over the "
                                 f"{self._limits.max_compiled_bytes >> 20} MiB limit (grammar_max_compiled_mb)",
                                 param=PARAM)
        if tag != GRAMMAR:
            raise _WorkerDied(f"it answered {reply[:40]!r}")
        return xgrammar.CompiledGrammar.deserialize_json(body.decode(), self._info)

    def _resident_bytes(self) -> int:
        """The process's resident memory (Linux's /proc; 0 where there is none, which disables the limit)."""
        process = self._process
        try:
            with open(f"/proc/{process.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, AttributeError, ValueError, IndexError):
            return 0


class _WorkerDied(Exception):
    pass
