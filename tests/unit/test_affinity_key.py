"""What prefix_affinity places a request by (server/affinity_key.py)."""

from __future__ import annotations

from backends.types import GenerateRequest, SamplingParams
from server.affinity_key import affinity_key


def text(prompt: str, **fields) -> GenerateRequest:
    return GenerateRequest("r", "m", SamplingParams(), prompt=prompt, **fields)


def test_text_prompts_are_keyed_by_their_first_n_times_four_characters():
    shared = "s" * 40
    assert affinity_key(text(shared + "one"), 10) == affinity_key(text(shared + "two"), 10)
    assert affinity_key(text(shared[:-1] + "x" + "one"), 10) != affinity_key(text(shared + "one"), 10)
    assert affinity_key(text("short a"), 10) != affinity_key(text("short b"), 10)  # the whole prompt, when short


def test_token_id_prompts_are_keyed_by_their_first_n_tokens():
    def ids(tokens):
        return GenerateRequest("r", "m", SamplingParams(), prompt_token_ids=tokens)

    assert affinity_key(ids([1, 2, 3, 4, 9]), 4) == affinity_key(ids([1, 2, 3, 4, 8]), 4)
    assert affinity_key(ids([1, 2, 3, 5, 9]), 4) != affinity_key(ids([1, 2, 3, 4, 9]), 4)
    assert affinity_key(ids([12, 3]), 4) != affinity_key(ids([1, 23]), 4)


def test_chat_messages_are_keyed_by_role_and_content_in_order():
    def chat(*messages):
        return GenerateRequest("r", "m", SamplingParams(),
                               messages=[{"role": role, "content": content} for role, content in messages])

    system = ("system", "You answer questions about the manual. " * 20)
    assert affinity_key(chat(system, ("user", "a?")), 64) == affinity_key(chat(system, ("user", "b?")), 64)
    assert affinity_key(chat(("user", "xy")), 64) != affinity_key(chat(("userx", "y")), 64)
    assert affinity_key(chat(("system", "a"), ("user", "b")), 64) != affinity_key(chat(("user", "ab")), 64)


def test_a_session_id_wins_over_the_prompt():
    assert affinity_key(text("one", session="s1"), 10) == affinity_key(text("two", session="s1"), 10)
    assert affinity_key(text("one", session="s1"), 10) != affinity_key(text("one", session="s2"), 10)
    assert affinity_key(text("one", session="s1"), 10) != affinity_key(text("one"), 10)


def test_the_adapter_is_part_of_the_key():
    assert affinity_key(text("same", adapter="a"), 10) != affinity_key(text("same", adapter="b"), 10)
    assert affinity_key(text("same", adapter="a", session="s"), 10) != affinity_key(text("same", session="s"), 10)


def test_a_lone_surrogate_in_a_prompt_still_has_a_key():
    assert affinity_key(text("\ud800 x"), 10)
