"""Retrieval-augmented answers over Python's docs through turnout, and how well the retrieval works.

    turnout serve &                                   # the bundled model, on 127.0.0.1:8000
    python -m tools.examples.rag.run --out rag_report.json

1. Cut the documentation topics into passages and held-out questions (passages.py).
2. Embed the passages through POST /v1/embeddings into a FAISS index (retrieval.py).
3. Rank the passages for every question three ways: the embedding index, TF-IDF (bag_of_words.py), and the
   two fused (reciprocal rank fusion); report recall@k of each, and what a random ranking would get.
4. Answer a few questions through POST /v1/chat/completions with the top passages in the prompt.

The report (JSON, printed and written to --out) has every number the README quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import openai

from tools.examples.rag import bag_of_words, passages, retrieval

PROMPT = ("Answer the question using the documentation excerpts below.\n\n{excerpts}\n\n"
          "Question: {question}")


def excerpts(texts: list[str], words: int = 80) -> str:
    """The retrieved passages for the prompt, each cut to `words` words (the bundled model has 1,024 tokens)."""
    return "\n\n".join(f"[{i + 1}] " + " ".join(t.split()[:words]) for i, t in enumerate(texts))


def answer(client, model: str, question: str, context: list[str], max_tokens: int) -> str:
    reply = client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0.0,
        messages=[{"role": "user", "content": PROMPT.format(excerpts=excerpts(context), question=question)}])
    return reply.choices[0].message.content


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--model", default="turnout-tiny")
    parser.add_argument("--words", type=int, default=60, help="about this many words a passage")
    parser.add_argument("--per-topic", type=int, default=6, help="most passages indexed per topic")
    parser.add_argument("--k", type=int, default=5, help="recall@k")
    parser.add_argument("--answers", type=int, default=3, help="questions answered through the chat API")
    parser.add_argument("--max-tokens", type=int, default=48, help="of each answer")
    parser.add_argument("--out", default=None, help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=300)

    import pydoc_data.topics

    corpus, questions = passages.build(pydoc_data.topics.topics, args.words, args.per_topic)
    texts, topics = [p.text for p in corpus], [p.topic for p in corpus]
    wanted = [q.topic for q in questions]
    started = time.monotonic()
    index = retrieval.flat_index(retrieval.embed(client, args.model, texts))
    query_vectors = retrieval.embed(client, args.model, [q.text for q in questions])
    embedded_s = time.monotonic() - started
    by_embedding = retrieval.rankings(index, query_vectors)
    tfidf = bag_of_words.TfIdf(texts)
    by_words = np.stack([tfidf.ranking(q.text) for q in questions])
    by_both = np.stack([retrieval.fused(e, w) for e, w in zip(by_embedding, by_words, strict=True)])

    answered = []
    for question, ranking in list(zip(questions, by_both, strict=True))[: args.answers]:
        top = [int(i) for i in ranking[: args.k]]
        answered.append({"question": question.text, "topic": question.topic,
                         "retrieved_topics": [topics[i] for i in top],
                         "answer": answer(client, args.model, question.text, [texts[i] for i in top],
                                          args.max_tokens)})
    k = args.k
    report = {
        "model": args.model,
        "passages": len(corpus),
        "topics": len(set(topics)),
        "questions": len(questions),
        "k": k,
        f"recall_at_{k}": {
            "embedding": retrieval.recall_at(by_embedding, topics, wanted, k),
            "bag_of_words": retrieval.recall_at(by_words, topics, wanted, k),
            "combined": retrieval.recall_at(by_both, topics, wanted, k),
            "chance": retrieval.chance_recall_at(topics, wanted, k),
        },
        "embedding_dimensions": int(query_vectors.shape[1]),
        "embedding_seconds": round(embedded_s, 2),
        "answers": answered,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
