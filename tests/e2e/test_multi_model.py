"""`turnout serve --config`: two models on one port, each on its own backend (our hf engine and vLLM), picked
by the `model` field of an ordinary `openai` client."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.models import make_random_model, make_tokenizer
from tests.server_thread import free_port, wait_ready

PROMPT = "The for statement"


def make_lora(base_dir, out):
    """A LoRA adapter with random, non-zero B (a fresh adapter is a no-op), so it visibly changes answers."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


def greedy_reference(model_dir, max_tokens: int, adapter_dir=None) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def two_model_server(tmp_path_factory, bundled_model_dir):
    root = tmp_path_factory.mktemp("multi")
    make_tokenizer(root / "tok")
    # head_dim 64: a size vLLM's CPU attention kernels take.
    other = make_random_model("llama", root / "other", root / "tok", hidden_size=128, intermediate_size=256,
                              num_attention_heads=2, num_key_value_heads=2, head_dim=64,
                              max_position_embeddings=512)
    lora = make_lora(other, root / "other-lora")
    config = {
        "models": [
            {"name": "turnout-tiny", "backend": "hf", "options": {"model": str(bundled_model_dir)}},
            {"name": "other-tiny", "backend": "vllm", "aliases": ["other"],
             "options": {"model": str(other), "dtype": "float32", "max_model_len": 512, "max_num_seqs": 8,
                         "adapters": {"other-lora": str(lora)}}},
        ]
    }
    (root / "models.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    turnout = os.path.join(os.path.dirname(sys.executable), "turnout")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([turnout, "serve", "--config", str(root / "models.yaml"), "--port", str(port),
                             "--log-level", "warning"], cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "VLLM_CACHE_ROOT": str(root / "vllm-cache")})
    try:
        wait_ready(port, proc, timeout=300, log_path=root / "server.log")
        yield f"http://127.0.0.1:{port}/v1", other, lora
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_both_models_are_listed_and_served_by_their_own_backend(two_model_server, bundled_model_dir):
    base_url, other_dir, _ = two_model_server
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    ids = [m.id for m in client.models.list().data]
    assert ids == ["turnout-tiny", "other-tiny", "other", "other-lora"]
    for name, model_dir in (("turnout-tiny", bundled_model_dir), ("other-tiny", other_dir), ("other", other_dir)):
        out = client.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0.0,
                                        extra_body={"ignore_eos": True, "return_token_ids": True})
        assert out.model == name
        assert out.choices[0].model_extra["token_ids"] == greedy_reference(model_dir, 8), name
    chat = client.chat.completions.create(model="turnout-tiny", max_tokens=8,
                                          messages=[{"role": "user", "content": "What is a tuple?"}])
    assert chat.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="missing", prompt=PROMPT, max_tokens=2)


def test_vllm_serves_a_lora_adapter_as_a_model_of_its_own(two_model_server):
    base_url, other_dir, lora_dir = two_model_server
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    listed = {m.id: m.model_extra.get("parent") for m in client.models.list().data}
    assert listed["other-lora"] == "other-tiny"
    expected = greedy_reference(other_dir, 8, adapter_dir=lora_dir)
    assert expected != greedy_reference(other_dir, 8), "the test adapter does not change the model's answer"
    out = client.completions.create(model="other-lora", prompt=PROMPT, max_tokens=8, temperature=0.0,
                                    extra_body={"ignore_eos": True, "return_token_ids": True})
    assert out.choices[0].model_extra["token_ids"] == expected
