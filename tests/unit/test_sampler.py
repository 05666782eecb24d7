"""Sampler rules on synthetic logits."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.hf.sampler import Sampler
from backends.hf.sequence import Sequence
from backends.types import SamplingParams

VOCAB = 12


def seqs_for(*params: SamplingParams, prompt=(1, 2, 3)) -> list[Sequence]:
    return [Sequence(f"r{i}", list(prompt), p) for i, p in enumerate(params)]


def filtered(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """The sampler's filtered logits over the whole vocabulary (dropped tokens at -inf)."""
    candidates, ids = Sampler._candidates(logits, params)
    if ids is None:
        return candidates
    return torch.full_like(logits, float("-inf")).scatter_(1, ids, candidates)


logit_rows = st.lists(st.floats(-10, 10, allow_nan=False), min_size=VOCAB, max_size=VOCAB)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(logit_rows, min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_temperature_zero_and_top_k_one_equal_greedy(rows, seed):
    logits = torch.tensor(rows)
    greedy = logits.argmax(dim=-1).tolist()
    sampler = Sampler(eos_token_ids=[0])
    assert sampler(logits, seqs_for(*[SamplingParams(temperature=0.0)] * len(rows))) == greedy
    top1 = [SamplingParams(temperature=1.5, top_k=1, seed=seed)] * len(rows)
    assert sampler(logits, seqs_for(*top1)) == greedy


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(logit_rows, min_size=1, max_size=4), temperature=st.sampled_from([5e-324, 1e-300, 1e-8, 9e-6]),
       seed=st.integers(0, 2**31))
def test_a_vanishing_temperature_is_greedy_not_an_overflow(rows, temperature, seed):
    """Logits divided by 1e-300 overflow to infinities, whose softmax is NaN: such a draw picked any token
    at all, one a grammar had masked included (the fuzz test found it through response_format)."""
    logits = torch.tensor(rows) - 20.0  # every logit negative: divided, all would become -inf
    params = [SamplingParams(temperature=temperature, seed=seed)] * len(rows)
    assert Sampler(eos_token_ids=[0])(logits, seqs_for(*params)) == logits.argmax(dim=-1).tolist()


def test_filtered_tokens_are_never_sampled():
    torch.manual_seed(0)
    logits = torch.randn(4, VOCAB)
    probs = torch.softmax(logits, -1)
    params = [
        SamplingParams(top_k=3),
        SamplingParams(top_p=0.5),
        SamplingParams(min_p=0.3),
        SamplingParams(top_k=5, top_p=0.7, min_p=0.05),
    ]
    top3 = set(logits[0].topk(3).indices.tolist())
    order = probs[1].argsort(descending=True).tolist()
    nucleus, mass = set(), 0.0
    for t in order:
        nucleus.add(t)
        mass += probs[1, t].item()
        if mass >= 0.5:
            break
    min_p_keep = {t for t in range(VOCAB) if probs[2, t] >= 0.3 * probs[2].max()}
    sampler = Sampler(eos_token_ids=[0])
    seen = [set() for _ in params]
    for _ in range(400):
        for row, token in enumerate(sampler(logits, seqs_for(*params))):
            seen[row].add(token)
    assert seen[0] <= top3 and len(seen[0]) > 1
    assert seen[1] <= nucleus
    assert seen[2] <= min_p_keep
    assert seen[3] <= set(logits[3].topk(5).indices.tolist())


def test_empirical_frequencies_match_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    params = SamplingParams(temperature=0.7, top_k=4, seed=1234)
    target = torch.softmax(logits[0, :4] / 0.7, -1)
    sampler = Sampler(eos_token_ids=[])
    seq = seqs_for(params)[0]
    draws = torch.tensor([sampler(logits, [seq])[0] for _ in range(6000)])
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert freq[4:].sum() == 0
    assert torch.allclose(freq[:4], target, atol=0.02), (freq, target)


def test_seeded_row_ignores_its_batch_neighbours():
    torch.manual_seed(1)
    logits = torch.randn(5, VOCAB)
    seeded = SamplingParams(temperature=1.0, seed=42)
    alone = seqs_for(seeded)
    crowd = seqs_for(SamplingParams(temperature=1.0), seeded, SamplingParams(temperature=0.5, seed=7),
                     SamplingParams(temperature=0.0), SamplingParams(top_p=0.9))
    sampler = Sampler(eos_token_ids=[])
    alone_tokens = [sampler(logits[1:2], alone)[0] for _ in range(30)]
    crowd_tokens = [sampler(logits, crowd)[1] for _ in range(30)]
    assert alone_tokens == crowd_tokens
    assert len(set(alone_tokens)) > 1  # it really samples


def test_penalties_change_the_right_logits_by_the_right_amounts():
    sampler = Sampler(eos_token_ids=[0])
    logits = torch.tensor([[1.0, 2.0, -2.0, 4.0, 0.5, 3.0]])
    seq = Sequence("r", [1, 2], SamplingParams(repetition_penalty=2.0, presence_penalty=0.5,
                                               frequency_penalty=0.25, logit_bias={5: -10.0}))
    seq.append_token(3)
    seq.append_token(3)
    out = sampler._apply_penalties(logits, [seq])[0]
    # token 1 (prompt, positive): /2; token 2 (prompt, negative): *2; token 3 (output twice, positive): /2 then
    # minus presence 0.5 and 2 * frequency 0.25; token 5: bias -10; tokens 0 and 4 unchanged.
    expected = torch.tensor([1.0, 1.0, -4.0, 4.0 / 2 - 0.5 - 0.5, 0.5, 3.0 - 10.0])
    assert torch.allclose(out, expected)


def test_min_tokens_suppresses_eos_and_stop_ids_until_reached():
    sampler = Sampler(eos_token_ids=[0])
    logits = torch.tensor([[10.0, 0.0, 0.0, 9.0, 1.0]])
    seq = Sequence("r", [1], SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[3]))
    assert sampler(logits, [seq]) == [4]
    seq.append_token(4)
    seq.append_token(4)
    assert sampler(logits, [seq]) == [0]


def test_typical_p_matches_transformers_typical_warper():
    from transformers.generation.logits_process import TypicalLogitsWarper

    torch.manual_seed(3)
    logits = torch.randn(6, 50) * 3
    for mass in (0.2, 0.5, 0.9):
        ours = filtered(logits, [SamplingParams(typical_p=mass)] * 6)
        theirs = TypicalLogitsWarper(mass=mass)(None, logits.clone())
        assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs)), mass


def test_filters_chain_like_transformers_warpers():
    from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(4)
    logits = torch.randn(8, 300) * 2
    for top_k, top_p, min_p in [(20, 0.8, 0.0), (0, 0.7, 0.1), (50, 1.0, 0.2), (5, 0.5, 0.05)]:
        ours = filtered(logits, [SamplingParams(top_k=top_k, top_p=top_p, min_p=min_p)] * 8)
        theirs = logits.clone()
        if top_k:
            theirs = TopKLogitsWarper(top_k)(None, theirs)
        if top_p < 1.0:
            theirs = TopPLogitsWarper(top_p)(None, theirs)
        if min_p:
            theirs = MinPLogitsWarper(min_p)(None, theirs)
        assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs)), (top_k, top_p, min_p)
        assert torch.equal(ours[torch.isfinite(ours)], logits[torch.isfinite(ours)])  # kept logits unchanged


def test_seeded_top_k_row_draws_the_same_whichever_path_its_batch_takes():
    torch.manual_seed(2)
    logits = torch.randn(3, 64)
    seeded = SamplingParams(temperature=1.0, top_k=8, top_p=0.95, seed=9)
    sampler = Sampler(eos_token_ids=[])
    one = seqs_for(seeded)
    alone = [sampler(logits[:1], one)[0] for _ in range(40)]  # top-k candidates only
    batch = seqs_for(seeded, SamplingParams(top_p=0.5), SamplingParams())
    # A row without top_k makes the batch sort the whole vocabulary.
    with_full_sort = [sampler(logits, batch)[0] for _ in range(40)]
    assert alone == with_full_sort and len(set(alone)) > 1


def test_token_history_rows_are_incremental_reset_on_reuse_and_grow():
    from backends.hf.sampler import TokenHistory

    pad = 10
    history = TokenHistory(pad_id=pad, rows=2, width=2)
    a, b = Sequence("a", [1, 2], SamplingParams()), Sequence("b", [3], SamplingParams())
    a.append_token(4)
    a.append_token(4)
    rows, all_width, output_width = history.rows([a, b])
    assert (all_width, output_width) == (4, 2)  # the tables widened to hold a's four tokens
    assert history.all_ids[rows, :4].tolist() == [[1, 2, 4, 4], [3, pad, pad, pad]]
    assert history.output_ids[rows, :2].tolist() == [[4, 4], [pad, pad]]
    history.all_ids[rows[0], 0] = 7  # a marker: tokens already written are not written again
    a.append_token(5)
    rows, all_width, output_width = history.rows([a, b])
    assert (all_width, output_width) == (5, 3)
    assert history.all_ids[rows[0], :5].tolist() == [7, 2, 4, 4, 5]
    assert history.output_ids[rows[0], :3].tolist() == [4, 4, 5]
    history.release(a)
    c = Sequence("c", [9], SamplingParams())
    extra = [Sequence(str(i), [0], SamplingParams()) for i in range(3)]
    rows, _, _ = history.rows([c, *extra])  # c reuses a's row, clean; then the tables grow
    width = history.all_ids.shape[1]
    assert history.all_ids[rows[0]].tolist() == [9] + [pad] * (width - 1)
    assert history.output_ids[rows[0]].tolist() == [pad] * width
    assert history.all_ids.shape[0] >= 5 and len(set(rows.tolist())) == 4


def test_penalties_count_repeats_and_leave_other_rows_alone():
    """Frequency counts every occurrence, presence and repetition apply once per token, and a row without
    penalties in the same batch keeps its logits exactly."""
    sampler = Sampler(eos_token_ids=[])
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5], [2.0, 1.0, -1.0, 0.5]])
    penalised = Sequence("p", [0], SamplingParams(repetition_penalty=2.0, presence_penalty=0.25,
                                                  frequency_penalty=0.5))
    plain = Sequence("q", [0], SamplingParams())
    for token in (2, 2, 2, 1):
        penalised.append_token(token)
        plain.append_token(token)
    out = sampler._apply_penalties(logits, [penalised, plain])
    expected = torch.tensor([2.0 / 2, 1.0 / 2 - 0.5 - 0.25, -1.0 * 2 - 3 * 0.5 - 0.25, 0.5])
    assert torch.allclose(out[0], expected)
    assert torch.equal(out[1], logits[1])
