"""The ChatML conversation format of the default model, and a few training conversations.

The template is the one Qwen and others use, so existing clients and the server's chat
endpoint need nothing special. The pretraining corpus is plain documentation, which would
never show the model a ``<|im_end|>``; a small set of conversations built from the training
topics (question: the page's title, answer: its opening paragraph) teaches it the turn markers
and, above all, to end its turn so generation stops.
"""

from __future__ import annotations

from collections.abc import Mapping

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

CHATML_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, "
    "\"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if tools and loop.first and message['role'] == 'system' %}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
    "{{ '<|im_start|>assistant\\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] %}"
    "{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    "{% set arguments = call['function']['arguments'] %}"
    "{{ '<tool_call>\\n{\"name\": ' + call['function']['name'] | tojson + ', \"arguments\": ' "
    "+ (arguments if arguments is string else arguments | tojson) + '}\\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|im_start|>tool\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Jinja ChatML with tools (the Hermes syntax Qwen's templates use): system, user, assistant and tool
turns; with `tools`, the system turn lists them, assistant calls are <tool_call> blocks and results are
<tool_response> blocks (server/tool_calling/ reads and renders the same syntax). ``add_generation_prompt``
opens the reply. Without tools it renders exactly what the plain ChatML template did."""

SYSTEM_PROMPT = "You are a small model that answers questions about Python."

_MAX_ANSWER_CHARS = 700


def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The template applied in plain Python, for training text (no tokenizer needed)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def chat_examples(documents: Mapping[str, str]) -> list[str]:
    """One rendered conversation per document that has a title and a prose opening paragraph."""
    examples = []
    for text in documents.values():
        paragraphs = text.split("\n\n")
        if len(paragraphs) < 2:
            continue
        title, answer = paragraphs[0].strip(), paragraphs[1].strip()
        if "\n" in title or answer[:1].isspace() or len(answer) < 40:
            continue
        if len(answer) > _MAX_ANSWER_CHARS:
            cut = answer.rfind(". ", 0, _MAX_ANSWER_CHARS)
            if cut < 0:
                continue
            answer = answer[: cut + 1]
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Tell me about {title[:1].lower() + title[1:]}."},
            {"role": "assistant", "content": answer},
        ]
        examples.append(render(messages))
    return examples
