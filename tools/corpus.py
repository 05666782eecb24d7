"""The offline training corpus: the English Python documentation that ships with CPython.

No data set may be downloaded, so the bundled default model learns from
``pydoc_data.topics.topics`` (~465k characters, one entry per documentation topic such as
``for`` or ``string-methods``). Topics are split whole into train and held-out parts, so that
held-out perplexity measures generalisation to unseen pages rather than to unseen lines of a
page the model already read.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

# A heading underline in reStructuredText-like pydoc output: a line of one repeated marker.
_UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")
_SPACE_RUN = re.compile(r"[ \t\f\v]+")
# Paragraphs at least this long count as "the same text" when found in two topics.
_MIN_SHARED_PARAGRAPH = 40


@dataclass(frozen=True)
class CorpusSplit:
    """Cleaned documents, keyed by topic name, in a stable (sorted) order."""

    train: dict[str, str]
    held_out: dict[str, str]
    seed: int
    held_out_fraction: float

    def digest(self) -> str:
        """sha256 over both parts, so a manifest can say exactly which text a model saw."""
        h = hashlib.sha256()
        for part in (self.train, self.held_out):
            for name, text in part.items():
                h.update(name.encode() + b"\0" + text.encode() + b"\0")
        return h.hexdigest()


def load_topics() -> dict[str, str]:
    """The raw documentation topics of the running Python (they differ between versions)."""
    from pydoc_data.topics import topics

    return dict(topics)


def clean_text(text: str) -> str:
    """Normalise whitespace but keep the paragraph structure and code blocks.

    Prose paragraphs (unindented lines) are unwrapped into one line with single spaces, so the
    model learns running English instead of pydoc's hard line breaks. Indented blocks (code
    examples, grammar rules) keep their lines and indentation. Heading underlines are dropped.
    Paragraphs are separated by exactly one blank line.
    """
    paragraphs: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        lines = [line.rstrip() for line in block.split("\n")]
        lines = [line for line in lines if line and not _UNDERLINE.match(line.strip())]
        if not lines:
            continue
        if _is_prose(lines):
            indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
            paragraphs.append(indent + _SPACE_RUN.sub(" ", " ".join(lines)).strip())
        else:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _is_prose(lines: list[str]) -> bool:
    """Unindented text is prose; an indented block is prose only if it reads like a sentence.

    Indented prose (method descriptions) shares one indentation, starts with a capital letter
    and ends like a sentence; code examples and grammar rules fail one of those tests.
    """
    indents = {len(line) - len(line.lstrip()) for line in lines}
    if indents == {0}:
        return True
    first, last = lines[0].lstrip(), lines[-1].rstrip()
    return (
        len(indents) == 1
        and first[:1].isupper()
        and last.endswith((".", ":", ".)"))
        and not any(line.lstrip().startswith((">>>", "...")) for line in lines)
    )


def _paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if len(p) >= _MIN_SHARED_PARAGRAPH]


def _self_contained(cleaned: Mapping[str, str]) -> list[str]:
    """Topics none of whose paragraphs appear in another topic.

    pydoc repeats whole sections (``for`` is also a section of ``compound``), so only such
    pages can be held out without the model having read them under another name.
    """
    owners: dict[str, set[str]] = {}
    for name, text in cleaned.items():
        for paragraph in _paragraphs(text):
            owners.setdefault(paragraph, set()).add(name)
    shared = {name for names in owners.values() if len(names) > 1 for name in names}
    return [name for name in cleaned if name not in shared]


def split_corpus(
    topics: Mapping[str, str] | None = None, *, seed: int = 0, held_out_fraction: float = 0.05
) -> CorpusSplit:
    """Split whole topics into train and held-out, deterministically for a given seed.

    Only self-contained topics may be held out. They are visited in a seeded shuffle; each one
    joins the held-out part while that part is below ``held_out_fraction`` of all characters
    and the topic would not overshoot the target by more than half of it (so one huge page
    cannot become the whole held-out set). As a last guard, any training paragraph that also
    occurs in a held-out topic is removed from training.
    """
    if not 0.0 < held_out_fraction < 0.5:
        raise ValueError(f"held_out_fraction must be in (0, 0.5), got {held_out_fraction!r}")
    raw = load_topics() if topics is None else topics
    cleaned = {name: clean_text(raw[name]) for name in sorted(raw)}
    cleaned = {name: text for name, text in cleaned.items() if text}
    if len(cleaned) < 2:
        raise ValueError(f"need at least 2 non-empty topics to split, got {len(cleaned)}")
    candidates = _self_contained(cleaned) or sorted(cleaned)
    target = held_out_fraction * sum(len(text) for text in cleaned.values())
    random.Random(seed).shuffle(candidates)
    held: set[str] = set()
    size = 0
    for name in candidates:
        if size >= target or len(held) == len(cleaned) - 1:
            break
        if size + len(cleaned[name]) <= 1.5 * target:
            held.add(name)
            size += len(cleaned[name])
    if not held:  # every candidate is larger than the target: hold out the smallest one
        held.add(min(candidates, key=lambda name: len(cleaned[name])))
    held_paragraphs = {p for name in held for p in _paragraphs(cleaned[name])}
    train = {}
    for name, text in cleaned.items():
        if name not in held:
            kept = [p for p in text.split("\n\n") if p not in held_paragraphs]
            if kept:
                train[name] = "\n\n".join(kept)
    return CorpusSplit(
        train=train,
        held_out={name: cleaned[name] for name in sorted(held)},
        seed=seed,
        held_out_fraction=held_out_fraction,
    )
