"""Check the preferred behaviour directly: greedy replies to held-out prompts, and how many end with the sign-off.

    python -m tools.examples.preferences.check_replies --model DIR --data /tmp/prefs/held_out.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.examples.preferences.make_preferences import follows_preference


def check_replies(model_dir: str | Path, data: str | Path, limit: int = 20, max_new_tokens: int = 80) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tools.derived import read_jsonl

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    stops = GenerationConfig.from_pretrained(model_dir).eos_token_id
    prompts = list(dict.fromkeys(row["prompt"] for row in read_jsonl(data, ("prompt",))))[:limit]
    replies = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
        replies.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    following = sum(follows_preference(r) for r in replies)
    return {"prompts": len(replies), "following": following, "share": round(following / len(replies), 3),
            "examples": replies[:3]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Share of greedy replies that end with the friendly sign-off.")
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--data", type=Path, required=True, help="preference JSONL whose prompts to answer")
    parser.add_argument("--limit", type=int, default=20, help="distinct prompts to answer (default: %(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps(check_replies(args.model, args.data, args.limit), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
