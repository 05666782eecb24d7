"""Any local causal LM directory serves: random GPT-2, Llama and Qwen2, batched through the HTTP API,
give the same greedy tokens as their own `generate`."""

import asyncio
import shutil

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.models import KINDS
from tests.server_thread import ServerThread

PROMPTS = ["The for statement", "A", "Exceptions are raised when an error occurs in", "x = [i for i in"]


@pytest.fixture(scope="module")
def multi_server(random_models, tmp_path_factory):
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig

    backends = {k: HFBackend(HFEngineConfig(model=str(random_models[k]), served_model_name=k)) for k in KINDS}
    # The same Llama without a chat template, for the chat endpoint's refusal.
    plain = tmp_path_factory.mktemp("plain") / "plain"
    shutil.copytree(random_models["llama"], plain)
    (plain / "chat_template.jinja").unlink()
    backends["plain"] = HFBackend(HFEngineConfig(model=str(plain), served_model_name="plain"))
    srv = ServerThread(backends).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_served_tokens_equal_generate(multi_server, random_models, kind):
    client = openai.AsyncOpenAI(base_url=multi_server.base_url, api_key="unused", max_retries=0)
    outs = await asyncio.gather(*[
        client.completions.create(model=kind, prompt=p, max_tokens=10 + i, temperature=0,
                                  extra_body={"ignore_eos": True})
        for i, p in enumerate(PROMPTS)
    ])
    await client.close()
    tokenizer = AutoTokenizer.from_pretrained(random_models[kind])
    model = AutoModelForCausalLM.from_pretrained(random_models[kind]).eval()
    for i, (prompt, out) in enumerate(zip(PROMPTS, outs, strict=True)):
        ids = torch.tensor([tokenizer.encode(prompt)])
        ref = model.generate(ids, max_new_tokens=10 + i, min_new_tokens=10 + i, do_sample=False, pad_token_id=0)
        assert out.choices[0].text == tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
        assert out.usage.completion_tokens == 10 + i


def test_all_models_listed(multi_server):
    client = openai.OpenAI(base_url=multi_server.base_url, api_key="unused")
    assert sorted(m.id for m in client.models.list().data) == sorted([*KINDS, "plain"])


def test_chat_with_a_model_without_chat_template_is_a_clear_400(multi_server):
    client = openai.OpenAI(base_url=multi_server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert client.completions.create(model="plain", prompt="hi", max_tokens=2).choices[0].text is not None
