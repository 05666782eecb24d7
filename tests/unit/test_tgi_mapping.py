"""TGI parameters <-> core SamplingParams, both ways, and the tgi backend's stop-string matching."""

import pytest

from backends.errors import InvalidRequest
from backends.stop_strings import StopMatcher
from backends.tgi.params import check_supported, tgi_parameters
from backends.types import SamplingParams
from server.tgi.convert import sampling_params
from server.tgi.schemas import GenerateParameters, GenerateRequest


def test_tgi_samples_only_when_asked_or_a_warper_is_set():
    assert sampling_params(GenerateParameters()).temperature == 0.0
    assert sampling_params(GenerateParameters(temperature=1.0)).temperature == 0.0  # neutral: still greedy
    assert sampling_params(GenerateParameters(top_k=5)).temperature == 1.0
    sampled = sampling_params(GenerateParameters(temperature=0.7, seed=9))
    assert (sampled.temperature, sampled.seed) == (0.7, 9)
    # TGI's quirk: no `parameters` object at all means do_sample = true
    assert GenerateRequest(inputs="x").parameters.do_sample
    assert not GenerateRequest(inputs="x", parameters={}).parameters.do_sample
    assert sampling_params(GenerateParameters(do_sample=True)).seed is not None  # reported, so reproducible


@pytest.mark.parametrize("fields, message", [
    ({"temperature": 0}, "`temperature` must be strictly positive"),
    ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"watermark": True}, "`watermark` is not supported"),
])
def test_tgi_rules_with_tgi_messages(fields, message):
    with pytest.raises(ValueError, match=message):
        GenerateParameters(**fields)


def test_core_params_to_tgi():
    greedy = tgi_parameters(SamplingParams(max_tokens=5, temperature=0, stop=["\n"]), 0)
    assert greedy["do_sample"] is False and "temperature" not in greedy and greedy["stop"] == ["\n"]
    assert greedy["details"] is True and greedy["return_full_text"] is False
    sampled = tgi_parameters(SamplingParams(temperature=0.8, top_p=1.0, top_k=0, seed=10, logprobs=2), 1)
    assert sampled["do_sample"] and sampled["temperature"] == 0.8 and sampled["seed"] == 11
    assert sampled["top_p"] is None and sampled["top_k"] is None and sampled["top_n_tokens"] == 2
    assert tgi_parameters(SamplingParams(json_schema={}), 0)["grammar"]["type"] == "json"


@pytest.mark.parametrize("params, name", [
    (SamplingParams(min_tokens=2), "min_tokens"),
    (SamplingParams(logit_bias={1: 2.0}), "logit_bias"),
    (SamplingParams(n=1, best_of=3), "best_of"),
    (SamplingParams(use_beam_search=True, beam_width=2), "use_beam_search"),
    (SamplingParams(prompt_logprobs=0), "prompt_logprobs"),
])
def test_what_tgi_cannot_honour_is_rejected_by_name(params, name):
    with pytest.raises(InvalidRequest) as err:
        check_supported(params)
    assert err.value.param == name and name in err.value.message


def test_stop_matcher_holds_back_and_cuts_like_the_hf_backend():
    m = StopMatcher(["END"])
    assert [m.add(p) for p in ["ab", "cE", "N", "x"]] == ["ab", "c", "", "ENx"]
    m = StopMatcher(["END"])
    assert m.add("abE") == "ab" and m.add("NDzz") == "" and m.matched == "END"  # a token overshooting the stop
    m = StopMatcher(["END"])
    assert m.add("xE") == "x" and m.flush() == "E" and m.matched is None
