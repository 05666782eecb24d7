"""The embedding index and how rankings are judged: turnout's POST /v1/embeddings into a FAISS inner-product
index (the vectors are L2-normalised, so inner product is cosine), reciprocal rank fusion of two rankings,
and recall@k by topic."""

from __future__ import annotations

import faiss
import numpy as np


def embed(client, model: str, texts: list[str], batch: int = 64) -> np.ndarray:
    """[len(texts), dim] float32, through the OpenAI client (which fetches base64 and decodes it)."""
    rows = []
    for start in range(0, len(texts), batch):
        response = client.embeddings.create(model=model, input=texts[start:start + batch])
        rows.extend(item.embedding for item in sorted(response.data, key=lambda item: item.index))
    return np.asarray(rows, dtype=np.float32)


def flat_index(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def rankings(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    """For each query, every indexed passage, best first."""
    _, order = index.search(queries, index.ntotal)
    return order


def fused(first: np.ndarray, second: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal rank fusion (Cormack et al. 2009): each passage scores sum(1 / (k + rank)) over the two
    rankings (ranks from 1); best first."""
    scores = np.zeros(len(first))
    for ranking in (first, second):
        scores[ranking] += 1.0 / (k + np.arange(1, len(ranking) + 1))
    return np.argsort(-scores, kind="stable")


def hit(ranking, passage_topics: list[str], topic: str, k: int) -> bool:
    return topic in {passage_topics[i] for i in ranking[:k]}


def recall_at(all_rankings, passage_topics: list[str], topics: list[str], k: int) -> float:
    """The fraction of questions with a passage of their topic in their top k."""
    return sum(hit(r, passage_topics, t, k) for r, t in zip(all_rankings, topics, strict=True)) / len(topics)


def chance_recall_at(passage_topics: list[str], topics: list[str], k: int) -> float:
    """recall@k of a ranking drawn at random: 1 - C(n - m, k) / C(n, k) for a topic with m of n passages."""
    from math import comb

    n = len(passage_topics)
    return sum(1 - comb(n - passage_topics.count(t), k) / comb(n, k) for t in topics) / len(topics)
