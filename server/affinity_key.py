"""What part of a request prefix_affinity places it by (server/bounded_hashing.py ranks the replicas on it).

- The client's session id when it sent one (router.affinity_session_header): a conversation grows turn by
  turn, and each turn's prompt begins with the previous one, so the replica holding it is the one to go to
  even when the first N tokens would not say so (a long system prompt shared by every session).
- Else the first `prefix_tokens` tokens of the prompt: token ids when the request carries them (token-id
  prompts, and chat on local backends, rendered to ids before the router), else the first
  prefix_tokens x 4 characters of the text (text prompts, and chat on remote backends as their messages).
  Characters, because a remote backend's pool has no tokenizer (its server applies its own), and the
  gateway tokenizing only to pick a replica would cost it what the upstream then does again. Equal text
  prefixes tokenize alike but for the last token or so, so the same prefix still finds the same replica.

A LoRA adapter is part of the key: the same prompt under two adapters shares no cached prefix.
"""

from __future__ import annotations

from backends.types import GenerateRequest
from server.rate_limits import CHARS_PER_TOKEN

_SEPARATOR = "\x00"  # cannot occur in a role name, so "user" + "xy" and "userx" + "y" stay apart


def affinity_key(request: GenerateRequest, prefix_tokens: int) -> bytes:
    adapter = request.adapter or ""
    if request.session:
        return f"session{_SEPARATOR}{adapter}{_SEPARATOR}{request.session}".encode()
    if request.prompt_token_ids is not None:
        ids = ",".join(map(str, request.prompt_token_ids[:prefix_tokens]))
        return f"tokens{_SEPARATOR}{adapter}{_SEPARATOR}{ids}".encode()
    text = request.prompt if request.prompt is not None else _messages_text(request.messages or [])
    prefix = text[:prefix_tokens * CHARS_PER_TOKEN]
    return f"text{_SEPARATOR}{adapter}{_SEPARATOR}{prefix}".encode("utf-8", "surrogatepass")


def _messages_text(messages: list[dict[str, str]]) -> str:
    """The messages in order, each as its role and content, as a prefix of the rendered chat would be."""
    return "".join(f"{m.get('role', '')}{_SEPARATOR}{m.get('content') or ''}{_SEPARATOR}" for m in messages)
