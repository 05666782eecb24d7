"""The slot KV cache: sequences joining and leaving the batch (and prompts chunked across steps) produce
exactly the tokens of a plain `generate` per sequence, on several architectures."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from backends.hf.runner import ModelRunner
from backends.hf.sequence import Sequence
from backends.types import SamplingParams
from tests.models import KINDS

NEW_TOKENS = 12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [4, 64])
def test_join_leave_and_chunked_prefill_match_generate(random_models, kind, chunk):
    model = AutoModelForCausalLM.from_pretrained(random_models[kind]).eval()
    g = torch.Generator().manual_seed(5)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (3, 17, 9, 30, 1, 12, 25)]
    expected = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0)
        expected.append(out[0, len(p):].tolist())

    runner = ModelRunner(model, num_slots=4, max_len=128, pad_token_id=0)
    seqs = [Sequence(str(i), p, SamplingParams(temperature=0)) for i, p in enumerate(prompts)]
    pending, active, step = list(seqs), [], 0
    while pending or active:
        # Admit one new sequence every other step while slots are free: joins happen mid-decode.
        if pending and len(active) < 4 and step % 2 == 0:
            active.append(pending.pop(0))
        ran = runner.execute({s: min(s.num_uncomputed_tokens, chunk) for s in active})
        due, logits = ran.due, ran.logits
        for s, row in zip(due, logits if logits is not None else [], strict=True):
            s.append_token(int(row.argmax()))
            if s.num_output_tokens == NEW_TOKENS:
                active.remove(s)
                runner.release(s)  # leaves; the last slot's owner moves into its place
        step += 1
    assert runner.num_slots_used == 0
    assert [s.output_token_ids for s in seqs] == expected


def test_released_slots_are_filled_from_the_top_before_the_next_forward(random_models):
    """Sequences leaving from the top of the slots move nobody; a hole below is filled by the highest
    sequence, copying only the positions it has computed, and its tokens stay those of `generate`."""
    model = AutoModelForCausalLM.from_pretrained(random_models["llama"]).eval()
    runner = ModelRunner(model, num_slots=4, max_len=128, pad_token_id=0)
    copies = []
    copy_slots = runner.cache.copy_slots
    runner.cache.copy_slots = lambda dst, src, length=None: (copies.append((dst, src, length)),
                                                             copy_slots(dst, src, length))
    prompts = [[5, 6, 7], [8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18]]
    seqs = [Sequence(str(i), p, SamplingParams(temperature=0)) for i, p in enumerate(prompts)]

    def step(active):
        ran = runner.execute({s: s.num_uncomputed_tokens for s in active})
        for s, row in zip(ran.due, ran.logits, strict=True):
            s.append_token(int(row.argmax()))

    step(seqs)
    assert [runner._slot(s) for s in seqs] == [0, 1, 2, 3]
    runner.release(seqs[3])
    runner.release(seqs[2])
    step(seqs[:2])
    assert copies == [] and runner.num_slots_used == 2
    # seqs[0] leaves from slot 0: seqs[1] (slot 1) moves down, copying its computed positions only.
    runner.release(seqs[0])
    assert runner.num_slots_used == 1
    step(seqs[1:2])
    assert copies == [([0], [1], len(prompts[1]) + 1)] and runner._slot(seqs[1]) == 0
    for _ in range(3):
        step(seqs[1:2])
    reference = AutoModelForCausalLM.from_pretrained(random_models["llama"]).eval()  # `model` is packed now
    expected = reference.generate(torch.tensor([prompts[1]]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                              pad_token_id=0)[0, len(prompts[1]):].tolist()
    assert seqs[1].output_token_ids == expected
