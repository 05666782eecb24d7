"""Tool-call pieces (backends.types.ToolCallDelta) in OpenAI's two shapes: `delta.tool_calls` entries of a
streamed chunk, and the `message.tool_calls` of a whole response."""

from __future__ import annotations

from backends.types import ToolCallDelta


def stream_entries(pieces: list[ToolCallDelta]) -> list[dict]:
    """A call's first entry carries its id, type and name with arguments "", later ones only arguments text,
    as OpenAI streams them; a chunk's consecutive argument pieces of one call are joined."""
    entries: list[dict] = []
    for piece in pieces:
        if piece.id is not None:
            entries.append({"index": piece.index, "id": piece.id, "type": "function",
                            "function": {"name": piece.name or "", "arguments": ""}})
            if not piece.arguments:
                continue
        last = entries[-1] if entries else None
        if last is not None and last["index"] == piece.index and "id" not in last:
            last["function"]["arguments"] += piece.arguments
        else:
            entries.append({"index": piece.index, "function": {"arguments": piece.arguments}})
    return entries


def message_calls(pieces: list[ToolCallDelta]) -> list[dict]:
    """The calls the pieces make up, in index order."""
    calls: dict[int, dict] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, {"id": "", "type": "function",
                                              "function": {"name": "", "arguments": ""}})
        if piece.id is not None:
            call["id"] = piece.id
        if piece.name is not None:
            call["function"]["name"] = piece.name
        call["function"]["arguments"] += piece.arguments
    return [calls[i] for i in sorted(calls)]
