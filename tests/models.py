"""Tiny local models for tests: random weights from a config, a tokenizer trained on the spot.
Nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tokenizer(out: Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a slice of Python's own docs (seconds)."""
    import pydoc_data.topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(pydoc_data.topics.topics.values())[:40], trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out)
    return hf


def _configs(vocab: int):
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return {
        "llama": (LlamaForCausalLM, LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=256, **common)),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=256, **common)),
        "gpt2": (GPT2LMHeadModel, GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)),
    }


KINDS = ("llama", "qwen2", "gpt2")


def make_random_model(kind: str, out: Path, tokenizer_dir: Path, seed: int = 0, **config_overrides) -> Path:
    """A random-weight model of the given architecture, sharing the test tokenizer."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    model_cls, config = _configs(len(tokenizer))[kind]
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    # Larger-than-default init spreads the logits, so greedy decoding has no near-ties to flip.
    config.initializer_range = 0.2
    model_cls(config).save_pretrained(out)
    for f in Path(tokenizer_dir).iterdir():
        shutil.copy(f, out / f.name)
    return out
