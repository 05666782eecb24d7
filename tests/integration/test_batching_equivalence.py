"""Batching changes nothing: concurrent greedy requests through HTTP equal sequential `generate`."""

import asyncio

import openai
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.integration.conftest import BUNDLED

TOPICS = ["The for statement", "A list comprehension", "Exceptions are raised", "The import system",
          "Class definitions", "The with statement", "Lambda expressions", "Dictionaries map keys"]


def workload(n: int = 32) -> list[tuple[str, int]]:
    """Distinct prompts of different lengths, each with its own max_tokens."""
    items = []
    for i in range(n):
        words = " ".join(TOPICS[(i + j) % len(TOPICS)] for j in range(1 + i % 5))
        items.append((f"{words} {i}", 8 + (i * 7) % 41))
    return items


def reference(model_dir, items) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = []
    for prompt, max_tokens in items:
        ids = torch.tensor([tokenizer.encode(prompt)])
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


async def test_32_concurrent_greedy_requests_equal_sequential_generate(server, bundled_model_dir):
    items = workload(32)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    outs = await asyncio.gather(*[
        client.completions.create(model=BUNDLED, prompt=p, max_tokens=m, temperature=0) for p, m in items
    ])
    await client.close()
    expected = await asyncio.to_thread(reference, bundled_model_dir, items)
    got = [o.choices[0].text for o in outs]
    mismatches = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not mismatches, [(items[i], got[i], expected[i]) for i in mismatches[:3]]
    assert len({o.usage.completion_tokens for o in outs}) > 3  # really different lengths
