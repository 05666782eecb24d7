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
