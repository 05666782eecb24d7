"""The readers that turn generated text into tool calls: whatever pieces the text streams in, they yield the
same content and the same calls as the whole text read at once, in OpenAI's delta shape."""

import json

import pytest

from server.openai.tool_calls import message_calls, stream_entries
from server.tool_calling.readers import ArrayCallReader, NamedCallReader, TaggedCallReader


def read_in_pieces(reader, text: str, size: int):
    content, pieces = "", []
    for start in range(0, len(text), size):
        read = reader.feed(text[start:start + size])
        content, pieces = content + read.content, pieces + read.calls
    read = reader.finish()
    return content + read.content, pieces + read.calls


def calls_of(pieces):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message_calls(pieces)]


ARRAY = ('[{"name": "get_weather", "arguments": {"city": "Pa\\"ris}", "days": [1, {"x": "]"}]}}, '
         '{"name": "add", "arguments": {"a": 1, "b": 2}}]')


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(ARRAY)])
def test_array_reader_streams_name_first_then_the_arguments_text(size):
    content, pieces = read_in_pieces(ArrayCallReader(), ARRAY, size)
    assert content == ""
    assert calls_of(pieces) == [("get_weather", '{"city": "Pa\\"ris}", "days": [1, {"x": "]"}]}'),
                                ("add", '{"a": 1, "b": 2}')]
    firsts = [p for p in pieces if p.id is not None]
    assert [p.index for p in firsts] == [0, 1] and all(p.id.startswith("call_") for p in firsts)
    # every call's first piece comes before any of its arguments
    for index in (0, 1):
        mine = [p for p in pieces if p.index == index]
        assert mine[0].id is not None and all(p.id is None for p in mine[1:])


def test_array_reader_cut_off_keeps_the_arguments_written_so_far():
    text = '[{"name": "add", "arguments": {"a": 12'
    _, pieces = read_in_pieces(ArrayCallReader(), text, 4)
    assert calls_of(pieces) == [("add", '{"a": 12')]


def test_named_reader_makes_the_whole_text_the_arguments():
    _, pieces = read_in_pieces(NamedCallReader("add"), '{"a": 1, "b": 2}', 3)
    assert calls_of(pieces) == [("add", '{"a": 1, "b": 2}')]
    _, empty = read_in_pieces(NamedCallReader("add"), "", 1)
    assert calls_of(empty) == [("add", "")]


TAGGED = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
          '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>')


@pytest.mark.parametrize("size", [1, 2, 5, 11, len(TAGGED)])
def test_tagged_reader_separates_content_from_calls_at_any_split(size):
    content, pieces = read_in_pieces(TaggedCallReader({"get_weather", "add"}), TAGGED, size)
    assert content == "Let me look.\n"
    assert calls_of(pieces) == [("get_weather", '{"city": "Paris"}'), ("add", '{"a": 1}')]


def test_tagged_reader_text_without_calls_is_all_content_even_a_tag_lookalike():
    text = "x < y and <tool is not a tag; <tool_call"
    content, pieces = read_in_pieces(TaggedCallReader({"f"}), text, 3)
    assert content == text and pieces == []


@pytest.mark.parametrize("body", ['{"name": "unknown", "arguments": {}}', "not json", '{"arguments": {}}',
                                  '{"name": "f", "arguments": [1]}'])
def test_tagged_reader_invalid_call_stays_content(body):
    text = f"<tool_call>{body}</tool_call>"
    content, pieces = read_in_pieces(TaggedCallReader({"f"}), text, 4)
    assert content == text and pieces == []


def test_tagged_reader_unclosed_call_that_parses_is_a_call():
    _, pieces = read_in_pieces(TaggedCallReader({"f"}), '<tool_call>\n{"name": "f", "arguments": {"k": 1}}\n', 5)
    assert calls_of(pieces) == [("f", '{"k": 1}')]


def test_tagged_reader_without_parallel_calls_keeps_the_first():
    content, pieces = read_in_pieces(TaggedCallReader({"get_weather", "add"}, parallel=False), TAGGED, 6)
    assert content == "Let me look.\n" and calls_of(pieces) == [("get_weather", '{"city": "Paris"}')]


def test_tagged_reader_arguments_given_as_a_string_are_decoded():
    text = '<tool_call>{"name": "f", "arguments": "{\\"k\\": 2}"}</tool_call>'
    _, pieces = read_in_pieces(TaggedCallReader({"f"}), text, 100)
    assert json.loads(calls_of(pieces)[0][1]) == {"k": 2}


def test_stream_entries_follow_openais_delta_shape():
    _, pieces = read_in_pieces(ArrayCallReader(), '[{"name": "add", "arguments": {"a": 1}}]', 1)
    entries = [e for p in pieces for e in stream_entries([p])]
    assert entries[0] == {"index": 0, "id": pieces[0].id, "type": "function",
                          "function": {"name": "add", "arguments": ""}}
    assert all(set(e) == {"index", "function"} and set(e["function"]) == {"arguments"} for e in entries[1:])
    assert "".join(e["function"]["arguments"] for e in entries) == '{"a": 1}'
    joined = stream_entries(pieces)  # all in one chunk: the call's head, then its arguments joined
    assert joined == [entries[0], {"index": 0, "function": {"arguments": '{"a": 1}'}}]
