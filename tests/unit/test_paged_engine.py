"""The whole engine on the paged KV cache: 32 concurrent greedy requests give token for token what greedy
decoding with transformers' forward gives each alone, with prefix caching on and off, and under forced preemption (a cache that holds
a third of the work); a beam search preempted mid-way ends as it does unpreempted."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.hf.core import EngineCore
from backends.hf.scheduler import SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import SamplingParams

MAX_TOKENS = 10
BLOCK = 16


def prompts(vocab: int) -> list[list[int]]:
    """32 prompts: four system prompts of 48 tokens shared by seven requests each, and four on their own."""
    g = torch.Generator().manual_seed(11)
    systems = [torch.randint(3, vocab, (48,), generator=g).tolist() for _ in range(4)]
    out = []
    for i in range(32):
        suffix = torch.randint(3, vocab, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
        out.append((systems[i % 4] if i < 28 else []) + suffix)
    return out


@pytest.fixture(scope="module")
def workload(random_models):
    path = random_models["llama"]
    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    work = prompts(reference.config.vocab_size)
    expected = []
    with torch.no_grad():  # greedy with ignore_eos, as the engine runs it: argmax of a full forward each step
        for p in work:
            ids = list(p)
            for _ in range(MAX_TOKENS):
                ids.append(int(reference(torch.tensor([ids])).logits[0, -1].argmax()))
            expected.append(ids[len(p):])
    return path, work, expected


def make_core(path, num_blocks: int, prefix_caching: bool) -> EngineCore:
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    config = SchedulerConfig(max_num_seqs=32, max_num_batched_tokens=256, num_blocks=num_blocks, block_size=BLOCK,
                             enable_prefix_caching=prefix_caching)
    return EngineCore(model, AutoTokenizer.from_pretrained(path), config, max_model_len=256, eos_token_ids=[0],
                      pad_token_id=0)


def run(core: EngineCore, requests: list[list[Sequence]]) -> dict[str, list[int]]:
    for seqs in requests:
        core.add(seqs)
    tokens: dict[str, list[int]] = {}
    for _ in range(2000):
        if not core.has_work():
            break
        for out in core.step():
            tokens.setdefault(f"{out.seq.request_id}/{out.delta.index}", []).extend(out.delta.token_ids)
        assert not core.take_failures()
    assert not core.has_work()
    assert core.scheduler.blocks.num_used_blocks == 0
    return tokens


def greedy(work) -> list[list[Sequence]]:
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, temperature=0)
    return [[Sequence(str(i), p, params)] for i, p in enumerate(work)]


def blocks_of_a_third(work) -> int:
    total = sum(math.ceil((len(p) + MAX_TOKENS) / BLOCK) for p in work)
    return total // 3


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("cache", ["ample", "a third of the work"])
def test_32_concurrent_greedy_requests_match_generate(workload, prefix_caching, cache):
    path, work, expected = workload
    num_blocks = 512 if cache == "ample" else blocks_of_a_third(work)
    core = make_core(path, num_blocks, prefix_caching)
    tokens = run(core, greedy(work))
    assert [tokens[f"{i}/0"] for i in range(len(work))] == expected
    stats = core.scheduler.blocks.stats
    if prefix_caching:
        # Requests admitted in the step that first computes their system prompt cannot hit it yet.
        assert stats.hits >= 12 * 48
    else:
        assert stats.hits == 0
    assert (core.scheduler.num_preemptions > 0) == (cache != "ample")


def test_usage_reports_the_cached_prompt_tokens(workload):
    path, work, _ = workload
    core = make_core(path, 512, True)
    params = SamplingParams(max_tokens=2, ignore_eos=True, temperature=0)
    first = run(core, [[Sequence("first", work[0], params)]])
    assert first
    core.add([Sequence("again", work[4], params)])  # the same 48-token system prompt
    usages = []
    while core.has_work():
        usages += [o.delta.usage for o in core.step() if o.delta.usage is not None]
    assert usages[0].cached_tokens == 48  # three full blocks


def test_a_beam_search_preempted_midway_ends_as_it_does_unpreempted(workload):
    path, work, _ = workload
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, use_beam_search=True, beam_width=3, n=2,
                            ignore_eos=True)

    def beams_and_crowd():
        beams = [Sequence("beam", work[0], params, index=i) for i in range(3)]  # 56 tokens: 4 blocks a beam
        return [beams] + greedy(work[:12])

    unpreempted = run(make_core(path, 512, False), beams_and_crowd())
    tight = make_core(path, 12, False)  # the three beams' prompts fill it: the crowd and the beams preempt
    preempted = run(tight, beams_and_crowd())
    assert tight.scheduler.num_preemptions > 0
    assert preempted == unpreempted
