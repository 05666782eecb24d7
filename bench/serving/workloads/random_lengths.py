"""Prompts of `--input-len` tokens and outputs of `--output-len`, each drawn uniformly from
[len x (1 - r), len x (1 + r)] with r = `--range-ratio` (0: fixed lengths), as `vllm bench serve
--dataset-name random --random-range-ratio r` draws them. The text is consecutive corpus windows."""

from __future__ import annotations

import math
import random

from bench.serving.workloads import Sample
from bench.serving.workloads.corpus import CorpusWindows


def length_range(mean: int, ratio: float) -> tuple[int, int]:
    if not 0 <= ratio < 1:
        raise ValueError(f"--range-ratio must be in [0, 1), got {ratio}")
    return max(1, math.floor(mean * (1 - ratio))), max(1, math.ceil(mean * (1 + ratio)))


async def build_sets(options, tokenizer, num_sets: int, per_set: int) -> list[list[Sample]]:
    rng = random.Random(options.seed)
    low_in, high_in = length_range(options.input_len, options.range_ratio)
    low_out, high_out = length_range(options.output_len, options.range_ratio)
    lengths = [[(rng.randint(low_in, high_in), rng.randint(low_out, high_out)) for _ in range(per_set)]
               for _ in range(num_sets)]
    corpus = await CorpusWindows.tokenized_by(tokenizer, sum(i for s in lengths for i, _ in s))
    sets = []
    for set_lengths in lengths:
        samples = []
        for input_len, output_len in set_lengths:
            ids = corpus.take(input_len)
            samples.append(Sample(await tokenizer.decode(ids), ids, input_len, output_len))
        sets.append(samples)
    return sets
