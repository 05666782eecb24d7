"""GrammarCompiler on the bundled model's tokenizer, with real xgrammar and real compiler processes: limits,
the cache, shared compiles, and killing a compile nobody waits for."""

import asyncio
import os
import signal
import time

import psutil
import pytest
from transformers import AutoTokenizer

from backends.errors import InvalidRequest, Overloaded
from backends.hf.config import HFEngineConfig
from backends.hf.grammar import GrammarCompiler

pytestmark = pytest.mark.timeout(60)

SMALL = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
TREE = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}


def optional_strings(count: int, prefix: str = "f") -> dict:
    """Optional properties make xgrammar's work grow ~quadratically: 600 (15 KB) take seconds of CPU time
    to compile, far past the short limits these tests set; 60 take ~10 ms."""
    return {"type": "object", "properties": {f"{prefix}{i}": {"type": "string"} for i in range(count)}}


SLOW = optional_strings(600)


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


@pytest.fixture
def make_compiler(tokenizer):
    made = []

    def make(**options) -> GrammarCompiler:
        config = HFEngineConfig(model="unused", **options)
        compiler = GrammarCompiler(tokenizer, 4096, [tokenizer.eos_token_id], config)
        made.append(compiler)
        return compiler

    yield make
    for compiler in made:
        compiler.close()


def accepts(constraint, tokenizer, text: str) -> bool:
    return all(constraint.accept_token(t) for t in tokenizer.encode(text, add_special_tokens=False))


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_json_object_is_compiled_here_and_never_waits_for_a_worker(make_compiler, tokenizer):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=30)
    await compiler.constraints(SMALL, 1)  # the one worker is busy with SLOW below
    busy = asyncio.ensure_future(compiler.constraints(SLOW, 1))
    await wait_until(lambda: compiler.num_compiles == 2)
    started = time.monotonic()
    first, second = await compiler.constraints({}, 2)
    assert time.monotonic() - started < 1.0
    assert not busy.done()
    assert accepts(first, tokenizer, '{"a": [1, true, null]}') and first.matcher.accept_token(tokenizer.eos_token_id)
    assert not accepts(second, tokenizer, "[1]")  # json_object means an object
    assert compiler.num_compiles == 2
    busy.cancel()


async def test_identical_concurrent_schemas_share_one_compile_then_the_cache(make_compiler, tokenizer):
    compiler = make_compiler()
    results = await asyncio.gather(*(compiler.constraints(SMALL, 2) for _ in range(3)))
    assert compiler.num_compiles == 1
    assert all(len(r) == 2 for r in results)
    assert accepts(results[2][1], tokenizer, '{"name": "x", "age": 3}')
    again = await compiler.constraints(dict(SMALL), 1)
    assert compiler.num_compiles == 1
    assert accepts(again[0], tokenizer, '{"age": 3}')


async def test_a_schema_over_the_size_limit_is_a_400_before_any_compile(make_compiler):
    compiler = make_compiler()
    huge = optional_strings(14_000)  # ~470 KB, the hostile-input pass's kind of schema
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="at most 32768 bytes") as caught:
        await compiler.constraints(huge, 1)
    assert time.monotonic() - started < 1.0
    assert caught.value.param == "response_format"
    assert compiler.num_compiles == 0


async def test_a_schema_past_the_time_limit_is_a_400_and_the_next_compile_works(make_compiler, tokenizer):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=0.3)
    await compiler.constraints(SMALL, 1)
    [old_pid] = compiler.worker_pids
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="more than 0.3 s of CPU time to compile "
                                             "\\(grammar_compile_timeout_s\\)"):
        await compiler.constraints(SLOW, 1)
    assert time.monotonic() - started < 2.0
    await wait_until(lambda: gone(old_pid))
    [constraint] = await compiler.constraints(TREE, 1)
    assert compiler.worker_pids != [old_pid]
    assert accepts(constraint, tokenizer, '{"children": [{}]}')
    assert compiler.num_in_flight == 0


async def test_a_trial_the_machine_gives_no_cpu_is_overloaded_after_3x_the_limit_in_wall_time(make_compiler):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=0.2)
    await compiler.constraints(SMALL, 1)
    [pid] = compiler.worker_pids
    request = asyncio.ensure_future(compiler.constraints(SLOW, 1))
    await wait_until(lambda: compiler.num_compiles == 2)
    os.kill(pid, signal.SIGSTOP)  # as starved as a process gets: its CPU time stops, the wall clock does not
    started = time.monotonic()
    with pytest.raises(Overloaded, match="did not compile within 0.6 s: the server is too busy"):
        await request
    assert time.monotonic() - started < 2.0
    await wait_until(lambda: gone(pid))
    await compiler.constraints(TREE, 1)


async def test_cancelling_the_only_waiter_kills_the_compile(make_compiler, tokenizer):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=30)
    await compiler.constraints(SMALL, 1)
    [old_pid] = compiler.worker_pids
    request = asyncio.ensure_future(compiler.constraints(SLOW, 1))
    await wait_until(lambda: compiler.num_compiles == 2)
    await asyncio.sleep(0.2)  # well into the compile
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert compiler.num_in_flight == 0
    await wait_until(lambda: gone(old_pid), timeout=2.0)
    started = time.monotonic()
    [constraint] = await compiler.constraints(TREE, 1)
    assert time.monotonic() - started < 5.0
    assert accepts(constraint, tokenizer, '{"children": []}')


async def test_requests_that_leave_while_the_replacement_starts_do_not_break_it(make_compiler, tokenizer):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=30)
    await compiler.constraints(SMALL, 1)
    for attempt in range(3):
        killed = asyncio.ensure_future(compiler.constraints(optional_strings(600, f"killed{attempt}"), 1))
        await wait_until(lambda: compiler.num_in_flight == 1)
        queued = asyncio.ensure_future(compiler.constraints(optional_strings(3, f"queued{attempt}"), 1))
        await wait_until(lambda: compiler.num_in_flight == 2)
        compiles = compiler.num_compiles
        killed.cancel()  # kills the process; `queued` then gets the worker while its replacement starts
        while compiler.num_compiles == compiles:
            await asyncio.sleep(0)
        queued.cancel()
        await asyncio.gather(killed, queued, return_exceptions=True)
    [constraint] = await compiler.constraints(TREE, 1)
    assert accepts(constraint, tokenizer, '{"children": []}')


async def test_one_of_two_waiters_leaving_keeps_the_compile_for_the_other(make_compiler):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_timeout_s=30)
    await compiler.constraints(SMALL, 1)
    [pid] = compiler.worker_pids
    medium = optional_strings(60)
    leaving = asyncio.ensure_future(compiler.constraints(medium, 1))
    staying = asyncio.ensure_future(compiler.constraints(medium, 1))
    await wait_until(lambda: compiler.num_compiles == 2)
    leaving.cancel()
    assert len(await staying) == 1
    assert compiler.worker_pids == [pid]
    assert compiler.num_compiles == 2


async def test_more_distinct_compiles_than_workers_and_queue_is_overloaded(make_compiler):
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_queue=1, grammar_compile_timeout_s=30)
    running = asyncio.ensure_future(compiler.constraints(SLOW, 1))
    queued = asyncio.ensure_future(compiler.constraints(optional_strings(600, "other"), 1))
    await wait_until(lambda: compiler.num_in_flight == 2)
    with pytest.raises(Overloaded, match="grammar_compile_queue=1"):
        await compiler.constraints(SMALL, 1)
    joined = asyncio.ensure_future(compiler.constraints(SLOW, 1))  # joining a compile under way is free
    await asyncio.sleep(0.05)
    assert not joined.done()
    for task in (running, queued, joined):
        task.cancel()
    await asyncio.gather(running, queued, joined, return_exceptions=True)
    assert compiler.num_in_flight == 0
    await compiler.constraints({}, 1)


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]},
])
async def test_recursion_without_a_base_case_is_a_400_before_any_compile(make_compiler, schema):
    compiler = make_compiler()
    with pytest.raises(InvalidRequest, match="no finite instance"):
        await compiler.constraints(schema, 1)
    assert compiler.num_compiles == 0


async def test_a_tree_schema_compiles_and_takes_a_tree(make_compiler, tokenizer):
    compiler = make_compiler()
    [constraint] = await compiler.constraints(TREE, 1)
    assert accepts(constraint, tokenizer, '{"children": [{}, {"children": [{"children": []}]}]}')
    assert constraint.matcher.accept_token(tokenizer.eos_token_id)
    assert constraint.is_terminated()


async def test_a_schema_xgrammar_rejects_is_a_400_without_its_source_location(make_compiler):
    compiler = make_compiler()
    with pytest.raises(InvalidRequest, match="^unsupported or invalid JSON schema: [^\\[]"):
        await compiler.constraints({"type": "string", "pattern": "(unclosed"}, 1)
    await compiler.constraints(SMALL, 1)  # the worker survives a rejected schema
    assert compiler.num_compiles == 2


async def test_a_grammar_over_the_compiled_size_limit_is_a_400(make_compiler):
    compiler = make_compiler(grammar_max_compiled_mb=1)
    with pytest.raises(InvalidRequest, match="over the 1 MiB limit \\(grammar_max_compiled_mb\\)"):
        await compiler.constraints(optional_strings(300), 1)  # ~1.4 MB
    await compiler.constraints(SMALL, 1)


async def test_a_compile_past_the_memory_limit_is_killed_and_a_400(make_compiler):
    # Below what the worker's interpreter alone holds, so the first look at it is over the limit.
    compiler = make_compiler(grammar_compile_workers=1, grammar_compile_memory_mb=1, grammar_compile_timeout_s=30)
    await compiler.constraints({}, 1)
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="more than 1 MiB \\(grammar_compile_memory_mb\\)"):
        await compiler.constraints(SLOW, 1)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("option, value", [
    ("grammar_max_schema_bytes", 0), ("grammar_max_schema_depth", 0), ("grammar_compile_workers", 0),
    ("grammar_compile_threads", 0), ("grammar_compile_queue", -1), ("grammar_compile_memory_mb", 0),
    ("grammar_max_compiled_mb", 0), ("grammar_cache_mb", -1), ("grammar_compile_workers", 1.5),
    ("grammar_compile_timeout_s", 0), ("grammar_compile_timeout_s", float("nan")), ("grammar_compile_timeout_s", "5"),
])
def test_config_bounds_quote_the_bad_value(option, value):
    with pytest.raises(ValueError, match=f"{option} must be .*got {value!r}"):
        HFEngineConfig(model="unused", **{option: value})
