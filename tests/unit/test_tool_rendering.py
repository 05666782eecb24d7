"""Tools and calls as a chat template gets them: the bundled template renders them itself (and renders a
conversation without tools exactly as plain ChatML did); a template that knows no tools gets the fallback."""

import json

import pytest
from transformers import AutoTokenizer

from server.tool_calling.rendering import call_text, for_template, instructions
from tools.chat import CHATML_TEMPLATE

PLAIN_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                "{% endif %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
HISTORY = [{"role": "system", "content": "Be brief."},
           {"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


def render(tokenizer, template, messages, tools):
    conversation, template_tools = for_template(messages, tools, template)
    return tokenizer.apply_chat_template(conversation, tools=template_tools, tokenize=False,
                                         add_generation_prompt=True, chat_template=template)


def test_without_tools_the_bundled_template_is_plain_chatml(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}, {"role": "user", "content": "x"}]
    assert render(tokenizer, CHATML_TEMPLATE, messages, None) == render(tokenizer, PLAIN_CHATML, messages, None)


def test_bundled_template_and_fallback_render_the_same_listing_call_and_result(tokenizer):
    bundled = render(tokenizer, CHATML_TEMPLATE, HISTORY, TOOLS)
    fallback = render(tokenizer, PLAIN_CHATML, HISTORY, TOOLS)
    listing = "Be brief.\n\n" + instructions(TOOLS)
    call = call_text("get_weather", json.dumps({"city": "Paris"}))
    for text in (bundled, fallback):
        assert text.startswith(f"<|im_start|>system\n{listing}<|im_end|>\n<|im_start|>user\nWeather in Paris?")
        assert f"<|im_start|>assistant\n{call}<|im_end|>\n" in text
        assert "<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
    assert "<|im_start|>tool\n" in bundled and "<|im_start|>user\n<tool_response>" in fallback
