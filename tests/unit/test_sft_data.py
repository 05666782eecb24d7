"""Fine-tuning data: the loss covers the replies only, and the prompt is tokenized as the server would."""

import json

import pytest
from transformers import AutoTokenizer

from tools.sft_data import IGNORE, read_jsonl, split_held_out, tokenize_records


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


def _labelled_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example.labels if t != IGNORE])


def test_chat_record_learns_only_the_assistant_turns(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who owns Zorblat?"},
        {"role": "assistant", "content": "Owner: Ada Quintrell."},
        {"role": "user", "content": "And Quux?"},
        {"role": "assistant", "content": "Owner: Bo Lind."},
    ]
    [example] = tokenize_records(tokenizer, [{"messages": messages}], max_length=512)
    assert _labelled_text(tokenizer, example) == "Owner: Ada Quintrell.<|im_end|>\nOwner: Bo Lind.<|im_end|>\n"
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    # What evaluation feeds the model is exactly what the server's chat endpoint would.
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert example.prompt_ids == tokenizer.encode(prompt, add_special_tokens=False)
    assert example.reference == "Owner: Bo Lind."


def test_prompt_completion_record_learns_the_completion_and_eos(tokenizer):
    [example] = tokenize_records(tokenizer, [{"prompt": "2 + 2 =", "completion": " 4"}], max_length=512)
    assert example.labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode([t for t in example.labels[:-1] if t != IGNORE]) == " 4"
    assert tokenizer.decode(example.prompt_ids) == "2 + 2 ="


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
    ({"prompt": "x", "completion": 3}, "must both be strings"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}, "string 'role'"),
])
def test_bad_records_are_refused_with_their_number(tokenizer, record, message):
    with pytest.raises(ValueError, match=f"record 1.*{message}"):
        tokenize_records(tokenizer, [record], max_length=512)


def test_record_cut_to_nothing_is_refused(tokenizer):
    with pytest.raises(ValueError, match="nothing left to learn"):
        tokenize_records(tokenizer, [{"prompt": "a long prompt here", "completion": "x"}], max_length=2)


def test_read_jsonl_reports_the_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{oops\n")
    with pytest.raises(ValueError, match="d.jsonl:2"):
        read_jsonl(path)


def test_held_out_split_is_seeded_and_disjoint():
    records = [{"prompt": str(i), "completion": "x"} for i in range(20)]
    train, held = split_held_out(records, 0.1, seed=3)
    assert len(held) == 2 and len(train) == 18
    assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in held)
    assert split_held_out(records, 0.1, seed=3) == (train, held)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_held_out(records, 1.5, seed=0)
