"""The TensorRT-LLM backend's pure parts, which run without a GPU: sampling-parameter mapping, LLM
arguments, and the conversion of TensorRT-LLM's growing outputs into our deltas."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from backends.errors import InvalidRequest
from backends.registry import create_backend
from backends.trtllm import TensorRTLLMNotInstalled, TRTLLMBackend, TRTLLMConfig, tensorrt_llm_available
from backends.trtllm.config import (
    is_engine_dir,
    llm_kwargs,
    model_max_len,
    model_vocab_size,
    resolved_runtime,
)
from backends.trtllm.outputs import ChoiceStream, TokenTexts, token_logprob
from backends.trtllm.params import trtllm_sampling_kwargs
from backends.types import FinishReason, SamplingParams
from server.errors import http_status

# The keyword arguments of tensorrt_llm.SamplingParams (TensorRT-LLM 1.3.0rc7 API reference).
TRTLLM_SAMPLING_FIELDS = {
    "end_id", "pad_id", "max_tokens", "bad", "bad_token_ids", "stop", "stop_token_ids",
    "include_stop_str_in_output", "embedding_bias", "logits_processor", "apply_batched_logits_processor", "n",
    "best_of", "use_beam_search", "logprobs_mode", "top_k", "top_p", "top_p_min", "top_p_reset_ids",
    "top_p_decay", "seed", "temperature", "min_tokens", "beam_search_diversity_rate", "repetition_penalty",
    "presence_penalty", "frequency_penalty", "prompt_ignore_length", "length_penalty", "early_stopping",
    "no_repeat_ngram_size", "min_p", "beam_width_array", "logprobs", "prompt_logprobs", "return_context_logits",
    "return_generation_logits", "exclude_input_from_output", "return_encoder_output", "return_perf_metrics",
    "additional_model_outputs", "lookahead_config", "guided_decoding", "ignore_eos", "detokenize",
    "add_special_tokens", "truncate_prompt_tokens", "skip_special_tokens", "spaces_between_special_tokens",
}


def mapped(max_tokens: int = 16, prompt_len: int = 5, vocab_size: int | None = 8, guided_decoding: bool = False,
           **fields) -> dict:
    return trtllm_sampling_kwargs(SamplingParams(**fields), max_tokens=max_tokens, prompt_len=prompt_len,
                                  vocab_size=vocab_size, guided_decoding=guided_decoding)


def test_greedy_is_top_k_1_with_our_max_tokens_and_no_trtllm_detokenization():
    kwargs = mapped(temperature=0.0, max_tokens=7)
    assert kwargs == {"max_tokens": 7, "n": 1, "detokenize": False, "skip_special_tokens": True, "top_k": 1}


def test_sampling_sets_temperature_top_p_and_top_k_explicitly():
    kwargs = mapped(temperature=0.7, top_p=0.9, top_k=0, min_p=0.05, seed=3, n=2)
    assert kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9 and kwargs["top_k"] == 0
    assert kwargs["min_p"] == 0.05 and kwargs["seed"] == 3 and kwargs["n"] == 2
    assert "best_of" not in kwargs and "min_p" not in mapped(temperature=0.7)


def test_penalties_ignore_the_prompt_for_openai_penalties_only():
    kwargs = mapped(temperature=1.0, presence_penalty=0.5, frequency_penalty=-0.25, repetition_penalty=1.2,
                    prompt_len=11)
    assert kwargs["presence_penalty"] == 0.5 and kwargs["frequency_penalty"] == -0.25
    assert kwargs["prompt_ignore_length"] == 11
    assert kwargs["repetition_penalty"] == 1.2
    assert "prompt_ignore_length" not in mapped(repetition_penalty=1.2)


def test_stop_strings_stay_with_us_and_stop_token_ids_go_to_trtllm():
    kwargs = mapped(stop=["\n\n"], stop_token_ids=[2, 3], ignore_eos=True, min_tokens=4)
    assert "stop" not in kwargs
    assert kwargs["stop_token_ids"] == [2, 3] and kwargs["ignore_eos"] is True and kwargs["min_tokens"] == 4


def test_logit_bias_becomes_a_dense_embedding_bias():
    assert mapped(logit_bias={1: 5.0, 7: -100})["embedding_bias"] == [0, 5.0, 0, 0, 0, 0, 0, -100.0]
    with pytest.raises(InvalidRequest) as err:
        mapped(logit_bias={8: 1.0})
    assert err.value.param == "logit_bias" and "8" in err.value.message


def test_beam_search_and_best_of():
    beams = mapped(use_beam_search=True, beam_width=4, n=2, length_penalty=0.5, early_stopping=True,
                   temperature=0.0)
    assert beams["use_beam_search"] is True and beams["best_of"] == 4 and beams["n"] == 2
    assert beams["length_penalty"] == 0.5 and beams["early_stopping"] == 1 and "top_k" not in beams
    assert mapped(temperature=1.0, n=2, best_of=5)["best_of"] == 5


def test_logprobs_and_json_schema():
    assert mapped(logprobs=3)["logprobs"] == 3
    assert mapped(logprobs=0)["logprobs"] == 0
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert mapped(json_schema=schema, guided_decoding=True)["guided_decoding"] == {"json": schema}
    assert mapped(json_schema={}, guided_decoding=True)["guided_decoding"] == {"json_object": True}


@pytest.mark.parametrize("fields, param", [
    ({"typical_p": 0.5}, "typical_p"),
    ({"temperature": 0.0, "n": 2}, "n"),
    ({"top_k": 1, "temperature": 1.0, "best_of": 3}, "best_of"),
    ({"use_beam_search": True, "beam_width": 2, "best_of": 3}, "best_of"),
    ({"prompt_logprobs": 1}, "prompt_logprobs"),
    ({"json_schema": {}}, "response_format"),
])
def test_what_trtllm_cannot_honour_is_refused_by_name(fields, param):
    with pytest.raises(InvalidRequest) as err:
        mapped(**fields)
    assert err.value.param == param and http_status(err.value) == 400


@pytest.mark.parametrize("fields", [
    {}, {"temperature": 0.0}, {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "min_p": 0.1, "seed": 1, "n": 3,
                               "best_of": 4},
    {"presence_penalty": 1.0, "frequency_penalty": 1.0, "repetition_penalty": 1.1, "logit_bias": {0: 1.0}},
    {"use_beam_search": True, "beam_width": 3, "n": 2}, {"logprobs": 2, "stop_token_ids": [1], "ignore_eos": True,
                                                         "min_tokens": 1, "json_schema": {"type": "object"}},
])
def test_every_produced_keyword_is_a_trtllm_sampling_params_field(fields):
    assert set(mapped(guided_decoding=True, **fields)) <= TRTLLM_SAMPLING_FIELDS


def test_config_becomes_llm_arguments(tmp_path):
    config = TRTLLMConfig(model=str(tmp_path), max_model_len=512, max_num_seqs=8, max_num_tokens=1024,
                          guided_decoding_backend="xgrammar", llm_kwargs={"trust_remote_code": True})
    assert llm_kwargs(config) == {
        "model": str(tmp_path), "dtype": "auto", "tensor_parallel_size": 1, "max_seq_len": 512,
        "max_batch_size": 8, "max_num_tokens": 1024, "guided_decoding_backend": "xgrammar",
        "trust_remote_code": True,
    }
    assert llm_kwargs(TRTLLMConfig(model="m")) == {"model": "m", "dtype": "auto", "tensor_parallel_size": 1}
    assert config.name == tmp_path.name


@pytest.mark.parametrize("fields, bad", [
    ({"runtime": "onnx"}, "'onnx'"), ({"max_num_seqs": 0}, "0"), ({"kv_cache_free_gpu_memory_fraction": 1.5}, "1.5"),
    ({"guided_decoding_backend": "outlines"}, "'outlines'"), ({"max_model_len": 1}, "1"),
])
def test_config_bounds_quote_the_bad_value(fields, bad):
    with pytest.raises(ValueError, match=bad):
        TRTLLMConfig(model="m", **fields)


def test_engine_directories_are_told_from_checkpoints(tmp_path, bundled_model_dir):
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"build_config": {"max_seq_len": 300},
                                                    "pretrained_config": {"vocab_size": 4100}}))
    assert is_engine_dir(str(engine)) and model_max_len(str(engine)) == 300 and model_vocab_size(str(engine)) == 4100
    assert resolved_runtime(TRTLLMConfig(model=str(engine))) == "tensorrt"
    assert not is_engine_dir(str(bundled_model_dir))
    assert resolved_runtime(TRTLLMConfig(model=str(bundled_model_dir))) == "pytorch"
    assert model_max_len(str(bundled_model_dir)) == 1024 and model_vocab_size(str(bundled_model_dir)) == 4096


@pytest.mark.skipif(tensorrt_llm_available(), reason="tensorrt_llm is installed here")
def test_start_without_tensorrt_llm_says_how_to_install(bundled_model_dir):
    backend = create_backend("trtllm", {"model": str(bundled_model_dir), "served_model_name": "tiny"})
    assert isinstance(backend, TRTLLMBackend) and backend.info.name == "tiny" and backend.info.max_model_len == 1024
    with pytest.raises(TensorRTLLMNotInstalled, match=r'pip install "turnout\[trtllm\]"'):
        asyncio.run(backend.start())
    assert asyncio.run(backend.health()) is False


# --- TensorRT-LLM outputs -> our deltas, fed with snapshots shaped like its CompletionOutput ---

@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


def snapshot(token_ids, finish_reason=None, logprobs=None, cumulative_logprob=None):
    return SimpleNamespace(token_ids=list(token_ids), finish_reason=finish_reason, logprobs=logprobs or [],
                           cumulative_logprob=cumulative_logprob)


def run_choice(tokenizer, snapshots, **fields):
    params = SamplingParams(**fields)
    choice = ChoiceStream(0, tokenizer, tokenizer.encode("Hello"), params, TokenTexts(tokenizer))
    return [d for d in (choice.update(s) for s in snapshots) if d is not None], choice


def test_growing_outputs_become_deltas_whose_text_adds_up(tokenizer):
    ids = tokenizer.encode(" the quick brown fox jumps over the lazy dog")
    snapshots = [snapshot(ids[:2]), snapshot(ids[:2]), snapshot(ids[:5]), snapshot(ids, "length")]
    deltas, choice = run_choice(tokenizer, snapshots)
    assert [t for d in deltas for t in d.token_ids] == ids
    assert "".join(d.text for d in deltas) == tokenizer.decode(ids)
    assert [d.finish_reason for d in deltas] == [None, None, FinishReason.LENGTH]
    assert choice.num_tokens == len(ids) and choice.update(snapshot(ids, "length")) is None


def test_a_stop_string_ends_the_choice_and_never_reaches_the_stream(tokenizer):
    text = " one two. three four"
    ids = tokenizer.encode(text)
    deltas, choice = run_choice(tokenizer, [snapshot(ids[:i]) for i in range(1, len(ids) + 1)], stop=[". th"])
    assert "".join(d.text for d in deltas) == " one two"
    assert deltas[-1].finish_reason == FinishReason.STOP and choice.finished
    assert choice.num_tokens < len(ids)


@pytest.mark.parametrize("trt_reason, ours", [("stop", FinishReason.STOP), ("cancelled", FinishReason.ABORT),
                                              ("timeout", FinishReason.ABORT)])
def test_finish_reasons_map(tokenizer, trt_reason, ours):
    deltas, _ = run_choice(tokenizer, [snapshot([5, 6], trt_reason)])
    assert deltas[-1].finish_reason == ours


def test_logprobs_from_trtllm_top_k_dicts_and_bare_floats(tokenizer):
    top = {7: SimpleNamespace(logprob=-0.1, rank=1), 9: SimpleNamespace(logprob=-2.5, rank=2),
           5: SimpleNamespace(logprob=-3.0, rank=4)}
    entry = token_logprob(5, top, 2, TokenTexts(tokenizer))
    assert entry.logprob == -3.0 and [t.token_id for t in entry.top] == [7, 9]
    assert entry.token == tokenizer.decode([5])
    assert token_logprob(5, top, 0, TokenTexts(tokenizer)).top == []
    deltas, _ = run_choice(tokenizer, [snapshot([5, 6], "length", logprobs=[-1.0, -2.0])], logprobs=0)
    assert [e.logprob for e in deltas[0].logprobs] == [-1.0, -2.0]
    assert deltas[0].cumulative_logprob == -3.0
