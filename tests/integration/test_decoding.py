"""Every decoding parameter through the official openai client, streaming and not."""

import asyncio
import json

import jsonschema
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.integration.conftest import BUNDLED

PROMPT = "The for statement is used"


@pytest.fixture(scope="module")
def reference(bundled_model_dir):
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(bundled_model_dir)


def completion(client, stream: bool, **kwargs):
    """(text, finish_reason, usage) of choice 0, by a streaming or a plain request."""
    args = {"model": BUNDLED, "prompt": PROMPT, "max_tokens": 16, **kwargs}
    if not stream:
        out = client.completions.create(**args)
        return out.choices[0].text, out.choices[0].finish_reason, out.usage
    chunks = list(client.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    return text, [c.choices[0].finish_reason for c in chunks if c.choices][-1], chunks[-1].usage


@pytest.mark.parametrize("stream", [False, True])
def test_logit_bias_forces_a_token(client, reference, stream):
    _, tokenizer = reference
    token = tokenizer.encode(" list")[0]
    text, _, usage = completion(client, stream, logit_bias={str(token): 100}, temperature=1.0, max_tokens=5)
    assert text == tokenizer.decode([token]) * 5 and usage.completion_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
def test_stop_token_ids_and_min_tokens(client, reference, stream):
    _, tokenizer = reference
    free, _, _ = completion(client, stream, temperature=0, max_tokens=20)
    free_ids = tokenizer.encode(free)
    stop_id = free_ids[3]
    text, reason, usage = completion(client, stream, temperature=0, max_tokens=20,
                                     extra_body={"stop_token_ids": [stop_id]})
    first = free_ids.index(stop_id)
    assert reason == "stop" and usage.completion_tokens == first + 1  # the stop token is counted...
    assert text == tokenizer.decode(free_ids[:first])  # ...but not returned as text
    _, _, usage = completion(client, stream, temperature=0, max_tokens=20,
                             extra_body={"stop_token_ids": [stop_id], "min_tokens": first + 3})
    assert usage.completion_tokens >= first + 3


@pytest.mark.parametrize("stream", [False, True])
def test_ignore_eos_runs_to_max_tokens(client, stream):
    _, reason, usage = completion(client, stream, temperature=0, max_tokens=60, extra_body={"ignore_eos": True})
    assert reason == "length" and usage.completion_tokens == 60


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra", [
    {"top_k": 5}, {"min_p": 0.2}, {"typical_p": 0.5}, {"repetition_penalty": 1.3},
])
def test_filters_and_penalties_are_applied_and_seeded(client, stream, extra):
    args = dict(temperature=1.0, seed=11, max_tokens=24)
    base, _, _ = completion(client, stream, **args)
    a, _, _ = completion(client, stream, **args, extra_body=extra)
    b, _, _ = completion(client, stream, **args, extra_body=extra)
    assert a == b  # seeded: reproducible
    assert a != base  # and the parameter changed the outcome


def test_presence_and_frequency_penalties_reduce_repetition(client):
    def repeats(text):
        words = text.split()
        return len(words) - len(set(words))
    plain = [completion(client, False, temperature=0, max_tokens=80, extra_body={"ignore_eos": True})[0]]
    penalised = [completion(client, False, temperature=0, max_tokens=80, frequency_penalty=2.0,
                            presence_penalty=2.0, extra_body={"ignore_eos": True})[0]]
    assert repeats(penalised[0]) < repeats(plain[0])


async def test_seed_is_reproducible_inside_a_batch_of_16_others(server):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    args = dict(model=BUNDLED, prompt=PROMPT, max_tokens=32, temperature=1.0, top_p=0.9, seed=777)
    alone = (await client.completions.create(**args)).choices[0].text
    noise = [client.completions.create(model=BUNDLED, prompt=f"Other prompt {i}", max_tokens=40,
                                       temperature=1.0) for i in range(16)]
    crowd = await asyncio.gather(client.completions.create(**args), *noise)
    assert crowd[0].choices[0].text == alone
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_chat_n_choices_with_index(client, stream):
    args = dict(model=BUNDLED, messages=[{"role": "user", "content": "What is a dict?"}], n=3, max_tokens=8,
                temperature=1.0, seed=3, extra_body={"ignore_eos": True})
    if stream:
        chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
        texts = {}
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
        usage = chunks[-1].usage
    else:
        out = client.chat.completions.create(**args)
        texts = {c.index: c.message.content for c in out.choices}
        usage = out.usage
    assert sorted(texts) == [0, 1, 2] and len(set(texts.values())) > 1
    assert usage.completion_tokens == 24


def test_best_of_returns_the_most_likely_candidates(client):
    out = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=8, n=2, best_of=5, temperature=1.0,
                                    seed=5, logprobs=0, extra_body={"ignore_eos": True})
    sums = [sum(c.logprobs.token_logprobs) for c in out.choices]
    assert len(out.choices) == 2 and sums[0] >= sums[1]
    assert out.usage.completion_tokens == 5 * 8  # every candidate was generated
    singles = [client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=5 + i,
                                         logprobs=0, extra_body={"ignore_eos": True}) for i in range(5)]
    best_single = max(sum(s.choices[0].logprobs.token_logprobs) for s in singles)
    assert sums[0] == pytest.approx(best_single, abs=1e-4)


@pytest.mark.parametrize(("width", "length_penalty", "early_stopping"), [(2, 1.0, False), (4, 1.0, False),
                                                                          (3, 0.5, True)])
def test_beam_search_equals_transformers_generate(client, reference, width, length_penalty, early_stopping):
    model, tokenizer = reference
    for prompt in ("The for statement", "A class definition"):
        ids = tokenizer.encode(prompt)
        ref = model.generate(torch.tensor([ids]), num_beams=width, num_return_sequences=width, do_sample=False,
                             max_new_tokens=16, length_penalty=length_penalty, early_stopping=early_stopping,
                             pad_token_id=tokenizer.pad_token_id)
        expected = [tokenizer.decode(r[len(ids):], skip_special_tokens=True) for r in ref]
        eos = set(model.generation_config.eos_token_id)
        lengths = []
        for r in ref:
            generated = r[len(ids):].tolist()
            ends = [i for i, t in enumerate(generated) if t in eos]
            lengths.append(ends[0] + 1 if ends else len(generated))
        out = client.completions.create(model=BUNDLED, prompt=prompt, max_tokens=16, n=width, extra_body={
            "use_beam_search": True, "length_penalty": length_penalty, "early_stopping": early_stopping})
        assert [c.text for c in sorted(out.choices, key=lambda c: c.index)] == expected
        assert out.usage.completion_tokens == sum(lengths)


def reference_logprobs(model, ids: list[int], output_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids + output_ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return logprobs[len(ids) - 1 : len(ids) - 1 + len(output_ids)]


@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs_equal_a_reference_forward_pass(server, client, reference, stream):
    model, tokenizer = reference
    ids = tokenizer.encode(PROMPT)
    args = dict(model=BUNDLED, prompt=PROMPT, max_tokens=10, temperature=0.8, seed=1, logprobs=3,
                presence_penalty=1.0, extra_body={"ignore_eos": True})
    if stream:
        chunks = [c for c in client.completions.create(**args, stream=True)]
        tokens = [t for c in chunks for t in c.choices[0].logprobs.tokens]
        values = [v for c in chunks for v in c.choices[0].logprobs.token_logprobs]
        tops = [t for c in chunks for t in c.choices[0].logprobs.top_logprobs]
        text = "".join(c.choices[0].text for c in chunks)
    else:
        choice = client.completions.create(**args).choices[0]
        tokens, values, tops, text = (choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                      choice.logprobs.top_logprobs, choice.text)
        assert choice.logprobs.text_offset[0] == 0
    assert "".join(tokens) == text
    output_ids = tokenizer.encode(text)
    ref = reference_logprobs(model, ids, output_ids)
    chosen = ref.gather(1, torch.tensor(output_ids).unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.tensor(values), chosen, atol=1e-4)
    for row, top in zip(ref, tops, strict=True):
        best = row.topk(3)
        assert len(top) == 3
        assert sorted(top.values(), reverse=True) == pytest.approx(best.values.tolist(), abs=1e-4)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_and_top_logprobs(client, reference, stream):
    model, tokenizer = reference
    messages = [{"role": "user", "content": "Explain generators."}]
    args = dict(model=BUNDLED, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2,
                extra_body={"ignore_eos": True})
    if stream:
        content = [e for c in client.chat.completions.create(**args, stream=True)
                   if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    else:
        content = client.chat.completions.create(**args).choices[0].logprobs.content
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    output_ids = [tokenizer.encode(e.token)[0] for e in content]
    ref = reference_logprobs(model, list(prompt_ids), output_ids)
    assert len(content) == 6
    for entry, row in zip(content, ref, strict=True):
        assert entry.logprob == pytest.approx(row.max().item(), abs=1e-4)  # greedy: the top token
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(row.topk(2).values.tolist(), abs=1e-4)
        assert entry.bytes == list(entry.token.encode())


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 150}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"kind": {"enum": ["list", "dict", "tuple"]},
                                      "mutable": {"type": "boolean"}}, "required": ["kind", "mutable"]},
    {"type": "object", "properties": {
        "module": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                                    "tags": {"type": "array", "items": {"enum": ["io", "os"]},
                                                             "maxItems": 3}},
                   "required": ["name", "tags"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 1000}}, "required": ["module", "count"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_always_parses_and_validates(client, schema, stream):
    for seed in range(3):
        args = dict(model=BUNDLED, messages=[{"role": "user", "content": "Describe a Python object as JSON."}],
                    max_tokens=200, temperature=1.0, seed=seed,
                    response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(**args, stream=True) if c.choices)
        else:
            out = client.chat.completions.create(**args)
            assert out.choices[0].finish_reason == "stop"
            text = out.choices[0].message.content
        jsonschema.validate(json.loads(text), schema)


def test_json_object_response_format(client):
    """Any JSON object: nothing bounds its strings, so a tiny model may run out of max_tokens mid-string
    (finish_reason "length"); every response that finished by itself must be a JSON object."""
    finished = 0
    for seed in range(6):
        out = client.chat.completions.create(model=BUNDLED, messages=[{"role": "user", "content": "JSON please"}],
                                             max_tokens=200, temperature=0.7, seed=seed,
                                             response_format={"type": "json_object"})
        choice = out.choices[0]
        assert choice.message.content.startswith("{")
        if choice.finish_reason == "stop":
            finished += 1
            assert isinstance(json.loads(choice.message.content), dict)
    assert finished >= 1


def test_echo_with_logprobs_scores_the_prompt_too(client, reference):
    model, tokenizer = reference
    ids = tokenizer.encode(PROMPT)
    choice = client.completions.create(model=BUNDLED, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=2,
                                       echo=True, extra_body={"ignore_eos": True}).choices[0]
    lp = choice.logprobs
    assert lp.tokens[: len(ids)] == [tokenizer.decode([t]) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    expected = [ref[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected, abs=1e-4)
    assert choice.text.startswith(PROMPT) and lp.text_offset[: 2] == [0, len(lp.tokens[0])]
