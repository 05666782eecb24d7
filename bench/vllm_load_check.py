"""Load an artifact in vLLM (offline `vllm.LLM`) and generate a few greedy tokens: does vLLM serve it?

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 python -m bench.vllm_load_check DIR
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.vllm_load_check MODEL_DIR")
    from vllm import LLM, SamplingParams

    llm = LLM(model=sys.argv[1], max_model_len=512, enforce_eager=True)
    out = llm.generate(["The for statement"], SamplingParams(max_tokens=12, temperature=0))
    print(json.dumps({"model": sys.argv[1], "text": out[0].outputs[0].text,
                      "quantization": llm.llm_engine.model_config.quantization}))
    return 0


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which re-imports __main__
    raise SystemExit(main())
