"""A grammar compiler in a process of its own, so a compile can be stopped: a thread cannot be.

`CompileWorker` is the parent's handle on one such process (grammar_process.py is what runs inside it). The
process gets the tokenizer's xgrammar `TokenizerInfo` once, then tries one schema at a time: a trial that
runs past its CPU time, wall time or memory limit, or whose request is abandoned, is stopped by killing the
process, and a fresh one starts at once so the next schema does not wait for it.

Only the verdict comes back, not the grammar: the parent compiles a schema that passed once more itself,
which costs a second compile but is far cheaper than moving the grammar. xgrammar 0.2.8's serialized form
holds a copy of the whole grammar's automaton in every rule's, so it grows with rules x automaton: 300
required string properties compile in ~33 ms and serialize to 29 MB in ~2.2 s (and ~0.75 s to load); at
1,000 properties, 0.17 s against 336 MB, 27 s and 5.8 s. A schema that passed its trial is known to compile
within the limits, so the parent's compile is bounded even though it cannot be stopped.

Processes come from a forkserver (the parent runs torch and the engine's threads, so it must never fork)
that has imported xgrammar once: a replacement is ready in ~10 ms instead of the ~2 s a fresh interpreter
spends importing torch.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from backends.errors import InvalidRequest, Overloaded, Unavailable
from backends.hf.grammar_process import COMPILED, READY, REJECTED, TOO_LARGE, serve
from backends.hf.schema_check import PARAM

_BOOT_TIMEOUT_S = 120.0
_POLL_S = 0.05
WALL_CLOCK_FACTOR = 3
"""A trial may take this many times its CPU-time limit in wall time (a busy machine starves a niced worker)."""


@dataclass(frozen=True)
class CompileLimits:
    cpu_seconds: float
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
    """One compiler process, one trial at a time (the pool in grammar.py hands workers out). Its blocking
    pipe reads run on its own thread; the event loop only waits on them."""

    def __init__(self, tokenizer_info_json: str, limits: CompileLimits):
        self._info_json = tokenizer_info_json.encode()
        self._limits = limits
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="grammar-worker")
        self._process = None
        self._conn = None
        self._booted: Future | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process in the background, if it is not started or starting."""
        if self._booted is None:
            self._booted = self._thread.submit(self._boot)

    async def trial(self, schema: str) -> None:
        """Compile a schema text in the process, within the limits. InvalidRequest for a schema xgrammar
        rejects or one past a limit, Overloaded when the machine is too busy to finish it in time (the
        process is then replaced), Unavailable if the process cannot start."""
        self.start()
        try:  # shielded: cancelling a request must not cancel a start queued behind a killed trial
            await asyncio.shield(asyncio.wrap_future(self._booted))
        except Unavailable:
            self._booted = None  # the next trial tries again
            raise
        loop = asyncio.get_running_loop()
        usage = _Usage(self._process.pid)
        cpu_at_start, wall_limit = usage.cpu_seconds(), self._limits.cpu_seconds * WALL_CLOCK_FACTOR
        reply = loop.run_in_executor(self._thread, self._exchange, schema)
        started = loop.time()
        try:
            while not reply.done():
                await asyncio.wait([reply], timeout=_POLL_S)
                if not reply.done():
                    self._check(usage, cpu_at_start, loop.time() - started, wall_limit)
            return reply.result()
        except _WorkerDied as exc:
            self._replace()
            raise InvalidRequest(f"the grammar compiler died compiling this JSON schema ({exc})",
                                 param=PARAM) from None
        except BaseException:  # a limit, or the request was abandoned (cancelled): stop the trial now
            if not reply.done():
                reply.cancel()  # its thread returns once the process is gone; nobody wants the answer
                self._replace()
            raise

    def _check(self, usage: _Usage, cpu_at_start: float | None, wall_s: float, wall_limit: float) -> None:
        limit = self._limits.cpu_seconds
        cpu = usage.cpu_seconds()
        if cpu is None or cpu_at_start is None:  # no /proc: wall time is all there is
            if wall_s > limit:
                raise InvalidRequest(f"the JSON schema took longer than {limit:g} s to compile "
                                     "(grammar_compile_timeout_s)", param=PARAM)
        elif cpu - cpu_at_start > limit:
            raise InvalidRequest(f"the JSON schema took more than {limit:g} s of CPU time to compile "
                                 "(grammar_compile_timeout_s)", param=PARAM)
        elif wall_s > wall_limit:
            raise Overloaded(f"the JSON schema did not compile within {wall_limit:g} s: the server is too busy "
                             f"(it had used {cpu - cpu_at_start:.1f} s of CPU time of the {limit:g} s allowed); "
                             "retry later", param=PARAM)
        if usage.resident_bytes() > self._limits.memory_bytes:
            raise InvalidRequest(f"compiling the JSON schema took more than {self._limits.memory_bytes >> 20} MiB "
                                 "(grammar_compile_memory_mb)", param=PARAM)

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
        try:
            self._conn.send_bytes(self._info_json)
            if self._conn.poll(_BOOT_TIMEOUT_S) and self._conn.recv_bytes() == READY:
                return
        except (EOFError, OSError):
            pass
        process.kill()
        raise Unavailable(f"the grammar compiler process did not start (exit code {process.exitcode})")

    def _exchange(self, schema: str) -> None:
        """Send one schema and read the verdict (on this worker's thread)."""
        try:
            self._conn.send_bytes(schema.encode())
            reply = self._conn.recv_bytes(maxlength=1 << 20)
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
            raise InvalidRequest(f"the JSON schema compiles to a {int(body) / 2**20:.0f} MiB grammar, over the "
                                 f"{self._limits.max_compiled_bytes >> 20} MiB limit (grammar_max_compiled_mb)",
                                 param=PARAM)
        if tag != COMPILED:
            raise _WorkerDied(f"it answered {reply[:40]!r}")


class _Usage:
    """A process's CPU time and resident memory from Linux's /proc (None and 0 elsewhere: no such limits)."""

    _TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    _PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: int):
        self.pid = pid

    def cpu_seconds(self) -> float | None:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()  # after "pid (name)"
            return (int(fields[11]) + int(fields[12])) / self._TICKS  # utime, stime
        except (OSError, ValueError, IndexError):
            return None

    def resident_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm") as f:
                return int(f.read().split()[1]) * self._PAGE
        except (OSError, ValueError, IndexError):
            return 0


class _WorkerDied(Exception):
    pass
