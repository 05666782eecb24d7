"""The paged KV cache: sequences joining and leaving the batch, prompts chunked across steps, prefixes
served from the cache and sequences preempted and recomputed all produce exactly the tokens of a plain
`generate` per sequence, on several architectures (the lean forward and transformers' own)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from backends.hf.runner import ModelRunner
from backends.hf.scheduler import Scheduler, SchedulerConfig
from backends.hf.sequence import Sequence
from backends.types import FinishReason, SamplingParams
from tests.models import KINDS

NEW_TOKENS = 12
BLOCK = 8


def prompts_with_shared_prefixes(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(5)
    prefix = torch.randint(3, vocab, (40,), generator=g).tolist()
    shapes = ((0, 3), (40, 17), (33, 9), (40, 30), (0, 1), (20, 12), (40, 25), (16, 8))
    return [prefix[:k] + torch.randint(3, vocab, (n,), generator=g).tolist() for k, n in shapes]


def generated(model, prompts):
    out = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0)
        out.append(ids[0, len(p):].tolist())
    return out


def serve(path, prompts, *, num_blocks: int, prefix_caching: bool, budget: int, admit_every: int = 2):
    """Greedy decoding of `prompts` through the scheduler and the runner; one new sequence joins every
    `admit_every` steps, so joins happen mid-decode."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()  # the lean forward takes a model's weights over
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=budget, num_blocks=num_blocks,
                                      block_size=BLOCK, enable_prefix_caching=prefix_caching))
    runner = ModelRunner(model, sched.blocks, pad_token_id=0)
    seqs = [Sequence(str(i), p, SamplingParams(temperature=0, max_tokens=NEW_TOKENS)) for i, p in enumerate(prompts)]
    pending, step = list(seqs), 0
    while pending or sched.has_work():
        if pending and step % admit_every == 0:
            sched.add(pending.pop(0))
        batch = sched.schedule()
        runner.copy_blocks(batch.block_copies)
        ran = runner.execute(batch.num_scheduled_tokens)
        sched.computed(batch.sequences)
        for s, row in zip(ran.due, ran.logits if ran.logits is not None else [], strict=True):
            s.append_token(int(row.argmax()))
            if s.num_output_tokens == NEW_TOKENS:
                s.finish(FinishReason.LENGTH)
                sched.remove(s)
        step += 1
    assert sched.blocks.num_used_blocks == 0 and sched.blocks.num_holders == 0
    return [s.output_token_ids for s in seqs], sched


@pytest.fixture(scope="module", params=KINDS)
def model_and_expected(request, random_models):
    path = random_models[request.param]
    reference = AutoModelForCausalLM.from_pretrained(path).eval()
    prompts = prompts_with_shared_prefixes(reference.config.vocab_size)
    return path, prompts, generated(reference, prompts)


@pytest.mark.parametrize("budget", [4, 64])
@pytest.mark.parametrize("prefix_caching", [False, True])
def test_join_leave_chunked_prefill_and_prefix_hits_match_generate(model_and_expected, budget, prefix_caching):
    model, prompts, expected = model_and_expected
    outputs, sched = serve(model, prompts, num_blocks=64, prefix_caching=prefix_caching, budget=budget)
    assert outputs == expected
    assert sched.num_preemptions == 0
    assert (sched.blocks.stats.hits > 0) == prefix_caching


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_preempted_sequences_finish_with_the_tokens_of_an_unpreempted_run(model_and_expected, prefix_caching):
    model, prompts, expected = model_and_expected
    # 9 blocks of 8: the longest sequence (40 + 30 + 12 tokens) fits alone, four at once do not.
    outputs, sched = serve(model, prompts, num_blocks=11, prefix_caching=prefix_caching, budget=64, admit_every=1)
    assert outputs == expected
    assert sched.num_preemptions > 0


def test_a_forward_can_run_with_nothing_due(random_models):
    """A chunk that does not finish a prompt yields no logits and no due sequence."""
    model = AutoModelForCausalLM.from_pretrained(random_models["llama"]).eval()
    sched = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=4, num_blocks=8, block_size=BLOCK))
    runner = ModelRunner(model, sched.blocks, pad_token_id=0)
    seq = Sequence("a", list(range(3, 13)), SamplingParams())
    sched.add(seq)
    ran = runner.execute(sched.schedule().num_scheduled_tokens)
    assert ran.due == [] and ran.logits is None and seq.num_computed_tokens == 4
