"""The baseline: TF-IDF cosine over words (numpy only). Sublinear term frequency, smoothed idf, rows
L2-normalised, so a query's scores are one matrix-vector product."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

_WORD = re.compile(r"[a-z0-9_]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class TfIdf:
    def __init__(self, documents: list[str]):
        counts = [Counter(words(d)) for d in documents]
        vocabulary = sorted({w for c in counts for w in c})
        self.column = {w: i for i, w in enumerate(vocabulary)}
        document_frequency = Counter(w for c in counts for w in c)
        n = len(documents)
        self.idf = np.array([math.log((1 + n) / (1 + document_frequency[w])) + 1 for w in vocabulary])
        self.matrix = np.stack([self._vector(c) for c in counts])

    def _vector(self, counts: Counter) -> np.ndarray:
        vector = np.zeros(len(self.column))
        for word, count in counts.items():
            if word in self.column:
                vector[self.column[word]] = (1 + math.log(count)) * self.idf[self.column[word]]
        norm = np.linalg.norm(vector)
        return vector / norm if norm else vector

    def ranking(self, query: str) -> np.ndarray:
        """Document indices, best first."""
        scores = self.matrix @ self._vector(Counter(words(query)))
        return np.argsort(-scores, kind="stable")
