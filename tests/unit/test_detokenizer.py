"""Incremental detokenization: multi-byte UTF-8, BPE merges, stop strings across token boundaries."""

import pytest
from transformers import AutoTokenizer

from backends.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer

TEXTS = [
    "The for statement is used to iterate over the elements of a sequence.",
    "héllo wörld — 日本語 🙂 naïve café ∑x²",
    "  leading spaces,\n\nnewlines\tand tabs  ",
    "🙂🙂🙂 emoji only 🎉",
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def stream(tokenizer, ids, stop=(), prompt=(1, 2)):
    detok = IncrementalDetokenizer(tokenizer, list(prompt), list(stop))
    deltas = []
    for token in ids:
        deltas.append(detok.add_token(token))
        if detok.stopped:
            break
    deltas.append(detok.flush())
    return deltas, detok


@pytest.mark.parametrize("text", TEXTS)
def test_stream_concatenation_equals_full_decode_and_has_no_replacement_chars(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) > len(text) // 8  # multi-byte characters really span several tokens here
    deltas, detok = stream(tokenizer, ids)
    assert "".join(deltas) == text == detok.text
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_stop_string_across_token_boundaries_is_cut_and_never_streamed(tokenizer):
    text = "alpha beta STOPHERE gamma delta"
    ids = tokenizer.encode(text)
    deltas, detok = stream(tokenizer, ids, stop=["STOPHERE"])
    assert "".join(deltas) == "alpha beta "
    assert detok.stopped
    assert not any("S" in d for d in deltas)  # not even the first letter of the stop string leaked


def test_only_a_possible_stop_prefix_is_held_back(tokenizer):
    ids = tokenizer.encode("one two three")
    detok = IncrementalDetokenizer(tokenizer, [], ["XYZ", "thr"])
    out = ""
    for token in ids:
        out += detok.add_token(token)
    # " th" could still become "thr"... then "three" contains "thr": stopped before it.
    assert detok.stopped and out + detok.flush() == "one two "


def test_text_that_cannot_start_a_stop_string_is_released_immediately(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, [], ["\n\n"])
    released = "".join(detok.add_token(t) for t in tokenizer.encode("abc def"))
    assert released == "abc def"
    detok2 = IncrementalDetokenizer(tokenizer, [], ["\n\n"])
    released2 = "".join(detok2.add_token(t) for t in tokenizer.encode("abc def\n"))
    assert released2 == "abc def" and detok2.flush() == "\n"


def test_earliest_of_several_stop_strings_wins(tokenizer):
    deltas, detok = stream(tokenizer, tokenizer.encode("x = 1; y = 2. z"), stop=[".", ";"])
    assert "".join(deltas) == "x = 1"
    assert detok.matched_stop == ";"  # reported as the delta's stop_reason
