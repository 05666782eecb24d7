"""LoRA adapters served next to their base model without merging: each request picks an adapter by
`model`; adapter and base requests share the engine's batches, and each gets exactly what its own
(merged) model would produce."""

import asyncio

import httpx
import openai
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from tests.server_thread import ServerThread

BASE = "tiny-base"
ADAPTERS = ("alpha", "beta")
PROMPTS = ["The for statement", "Class definitions are", "A list comprehension", "Exceptions"]
MAX_TOKENS = 8


def make_adapter(base_dir, out, seed: int):
    """A LoRA adapter whose B matrices are random (not the usual zeros), so it really changes outputs."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


def greedy_text(model, tokenizer, prompt: str) -> str:
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        for _ in range(MAX_TOKENS):
            next_id = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
    return tokenizer.decode(ids[0, -MAX_TOKENS:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def lora_setup(random_models, tmp_path_factory):
    base_dir = random_models["llama"]
    root = tmp_path_factory.mktemp("adapters")
    dirs = {name: make_adapter(base_dir, root / name, seed) for seed, name in enumerate(ADAPTERS, 1)}
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    expected = {BASE: [greedy_text(AutoModelForCausalLM.from_pretrained(base_dir).eval(), tokenizer, p)
                       for p in PROMPTS]}
    for name, directory in dirs.items():
        merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), directory)
        merged = merged.merge_and_unload().eval()
        expected[name] = [greedy_text(merged, tokenizer, p) for p in PROMPTS]
    config = HFEngineConfig(model=str(base_dir), served_model_name=BASE, max_num_seqs=16, num_threads=2,
                            adapters=tuple((name, str(d)) for name, d in dirs.items()))
    server = ServerThread({BASE: HFBackend(config)}).start()
    yield server, expected
    server.stop()


async def test_adapter_and_base_requests_share_batches_and_match_merged_models(lora_setup):
    server, expected = lora_setup
    runner = server.engine(BASE).core.runner
    mixed_before = runner.num_mixed_adapter_forwards
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    jobs = [(model, i) for i in range(len(PROMPTS)) for model in (BASE, *ADAPTERS)]
    outs = await asyncio.gather(*[
        client.completions.create(model=model, prompt=PROMPTS[i], max_tokens=MAX_TOKENS, temperature=0,
                                  extra_body={"ignore_eos": True})
        for model, i in jobs
    ])
    await client.close()
    got = {(model, i): out.choices[0].text for (model, i), out in zip(jobs, outs, strict=True)}
    mismatches = [(m, i, got[m, i], expected[m][i]) for m, i in jobs if got[m, i] != expected[m][i]]
    assert not mismatches
    assert runner.num_mixed_adapter_forwards > mixed_before  # adapters and base really ran in one forward


def test_adapters_change_the_output(lora_setup):
    _, expected = lora_setup
    assert expected["alpha"] != expected[BASE] and expected["beta"] != expected[BASE]


def test_models_lists_adapters_with_their_parent(lora_setup):
    server, _ = lora_setup
    data = httpx.get(f"{server.base_url}/models", timeout=10).json()["data"]
    by_id = {m["id"]: m for m in data}
    assert set(by_id) == {BASE, *ADAPTERS}
    assert by_id[BASE]["parent"] is None
    assert all(by_id[name]["parent"] == BASE for name in ADAPTERS)


def test_chat_request_for_an_adapter_runs_it(lora_setup):
    server, _ = lora_setup
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "Exceptions"}]
    texts = {model: client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS,
                                                   temperature=0, extra_body={"ignore_eos": True})
             .choices[0].message.content for model in (BASE, *ADAPTERS)}
    assert len(set(texts.values())) == 3


def test_unknown_adapter_is_404_model_not_found(lora_setup):
    server, _ = lora_setup
    r = httpx.post(f"{server.base_url}/completions", json={"model": "gamma", "prompt": "x", "max_tokens": 2},
                   timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found" and "gamma" in r.json()["error"]["message"]
