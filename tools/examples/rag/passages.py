"""The corpus: Python's documentation topics (`pydoc_data.topics.topics`, shipped with CPython), cut into
passages, and a held-out set of questions about them.

Each topic's prose is cut into passages of about `words` words, at sentence ends. One passage of each topic
that has several is held out: it is never indexed, and its first sentence becomes a question whose answer
is that topic. So a question is text the index has never seen, from the part of the docs it belongs to,
and recall@k asks: is one of the topic's indexed passages among the k retrieved? Stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNDERLINE = re.compile(r"^\s*([*=\-~^])\1{2,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


@dataclass(frozen=True)
class Passage:
    topic: str
    text: str


@dataclass(frozen=True)
class Question:
    text: str
    topic: str
    """The topic whose passages answer it."""


def sentences(text: str) -> list[str]:
    """The topic's prose as sentences: heading underlines and indented blocks (grammar, code) dropped,
    lines unwrapped."""
    prose = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip() and not _UNDERLINE.match(line)]
        if lines and not lines[0].startswith(" "):  # indented: a code example or a grammar rule
            prose.append(" ".join(line.strip() for line in lines))
    return [s.strip() for paragraph in prose for s in _SENTENCE_END.split(paragraph) if len(s.split()) >= 4]


def cut(sentences_of_topic: list[str], words: int) -> list[str]:
    """Consecutive sentences joined into passages of about `words` words."""
    passages, current = [], []
    for sentence in sentences_of_topic:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= words:
            passages.append(" ".join(current))
            current = []
    if current:
        passages.append(" ".join(current))
    return passages


def build(topics: dict[str, str], words: int = 60, per_topic: int = 4,
          question_words: int = 30) -> tuple[list[Passage], list[Question]]:
    """Indexed passages (at most `per_topic` of each topic, so the index stays small) and the held-out
    questions (one per topic with at least two passages: its middle passage's first sentence, cut to
    `question_words` words)."""
    passages, questions = [], []
    for topic in sorted(topics):
        cuts = cut(sentences(topics[topic]), words)
        if len(cuts) >= 2:
            held = len(cuts) // 2
            first = sentences(cuts[held])[0] if sentences(cuts[held]) else cuts[held]
            questions.append(Question(" ".join(first.split()[:question_words]), topic))
            cuts = cuts[:held] + cuts[held + 1:]
        passages.extend(Passage(topic, text) for text in cuts[:per_topic])
    return passages, questions
