"""Load-test an OpenAI-compatible server (turnout, vLLM, TGI's OpenAI route, ...) with a stock `locust`.

    locust -f bench/locustfile.py --host http://127.0.0.1:8000                      # web UI on :8089
    locust -f bench/locustfile.py --host http://127.0.0.1:8000 --headless -u 20 -r 10 -t 60s --csv out

Four user classes, one request kind each, picked in proportion to their weights:

    StreamingCompletionUser  3   POST /v1/completions, stream      (tags: completions, stream)
    StreamingChatUser        3   POST /v1/chat/completions, stream (tags: chat, stream)
    CompletionUser           1   POST /v1/completions              (tags: completions, whole)
    ChatUser                 1   POST /v1/chat/completions         (tags: chat, whole)

Pick some by name (`locust -f bench/locustfile.py StreamingChatUser`, or `--class-picker` in the web UI) or
by tag (`--tags stream`, `--exclude-tags chat`). Options of this file (also in the web UI): `--model`,
`--prompt-tokens`, `--max-tokens`, `--api-key` (default $OPENAI_API_KEY), `--temperature`, `--ignore-eos`,
`--think-time`. Each user sends its next request as soon as its last one ends (plus `--think-time`).

Rows in the statistics (web UI and `--csv`), next to each request row such as `completions stream`:
    TTFT    `<row>`  time to first token, ms: request sent -> first chunk carrying a token
    ITL     `<row>`  inter-token latency, ms: every gap between two successive token chunks
    TOKENS  `<row>`  output tokens per request (from `usage`): the "response time" columns are token counts
The request row itself times the whole request (to the last byte of a stream), not only its headers. The
metric rows are kept out of the Aggregated row, so its request count and rate are requests only.

A request fails, and never counts as a success, when the server answers anything but 200, when a stream
sends an error event, is cut (connection lost), or ends without `data: [DONE]`, or when an answer carries
no token. 429s are failures of their own (`HTTP 429 queue_full`, `HTTP 429 rate_limit_exceeded`), so the
failures table tells overload apart from errors.

This file needs only locust and the standard library, so it can be copied to a load-generator machine.
Prompts are cut from the Python documentation that ships with Python (`pydoc_data`); their length in tokens
is set through the server's `/tokenize` when it has one (turnout and vLLM do), else at ~4 characters a
token; the real prompt size of each request is in the server's `usage`.
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import HttpUser, events, tag, task

_CORPUS: str | None = None
_CHARS_PER_TOKEN: float | None = None
_FALLBACK_CHARS_PER_TOKEN = 4.0


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--model", default="turnout-tiny", include_in_web_ui=True,
                        help="model name in every request (turnout's bundled model: turnout-tiny)")
    parser.add_argument("--prompt-tokens", type=int, default=64, include_in_web_ui=True,
                        help="prompt length in tokens (exact ratio through the server's /tokenize, else ~4 chars/token)")
    parser.add_argument("--max-tokens", type=int, default=32, include_in_web_ui=True, help="max_tokens per request")
    parser.add_argument("--temperature", type=float, default=0.0, include_in_web_ui=True,
                        help="sampling temperature (0: greedy)")
    parser.add_argument("--ignore-eos", choices=["true", "false"], default="true", include_in_web_ui=True,
                        help="send ignore_eos (vLLM's and turnout's extension) so every answer has max_tokens tokens")
    parser.add_argument("--think-time", type=float, default=0.0, include_in_web_ui=True,
                        help="seconds a user waits between its requests")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""), is_secret=True,
                        include_in_web_ui=True, help="sent as Authorization: Bearer KEY (default: $OPENAI_API_KEY)")


@events.init.add_listener
def _keep_users_with_tasks(environment, **_) -> None:
    """`--tags`/`--exclude-tags` can leave a user class with no task, which locust would still start (and
    each such user would fail); drop those classes before any runner dispatches users."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or []) or None
    excluded = set(getattr(options, "exclude_tags", None) or [])
    if tags is None and not excluded:
        return

    def runs(user_class) -> bool:
        task_tags = set().union(*(getattr(t, "locust_tag_set", set()) for t in user_class.tasks))
        return (tags is None or bool(task_tags & tags)) and not task_tags & excluded

    environment.user_classes[:] = [u for u in environment.user_classes if runs(u)]


def _corpus() -> str:
    global _CORPUS
    if _CORPUS is None:
        from pydoc_data.topics import topics

        _CORPUS = " ".join(" ".join(topics[key].split()) for key in sorted(topics))
    return _CORPUS


def _chars_per_token(user) -> float:
    """Characters per token of this server's tokenizer on the corpus, measured once per process."""
    global _CHARS_PER_TOKEN
    if _CHARS_PER_TOKEN is None:
        sample = _corpus()[:3000]  # ~650 tokens: under any context length, so /tokenize takes it
        _CHARS_PER_TOKEN = _FALLBACK_CHARS_PER_TOKEN
        try:
            # Outside the statistics: this is set-up, not load.
            import requests

            response = requests.post(f"{user.root}/tokenize", json={"model": user.options.model, "prompt": sample},
                                     headers=user.headers, timeout=30)
            if response.status_code == 200 and response.json().get("count"):
                _CHARS_PER_TOKEN = len(sample) / response.json()["count"]
        except (OSError, ValueError):
            pass
    return _CHARS_PER_TOKEN


def _prompt(user) -> str:
    """A random window of the corpus of about --prompt-tokens tokens, starting at a word."""
    corpus = _corpus()
    size = max(1, int(user.options.prompt_tokens * _chars_per_token(user)))
    start = random.randrange(0, max(1, len(corpus) - size))
    start = corpus.find(" ", start) + 1
    return corpus[start : start + size]


class _Outcome:
    def __init__(self, start: float):
        self.start = start
        self.token_times: list[float] = []
        self.output_tokens: int | None = None
        self.error: str | None = None
        self.bytes = 0


def _error_code(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "")
    return str(error or "")[:40]


def _carries_token(chat: bool, choice: dict) -> bool:
    if not chat:
        return True
    delta = choice.get("delta") or {}
    return not ("role" in delta and not delta.get("content"))


def _read_stream(response, chat: bool, outcome: _Outcome) -> None:
    """SSE events as they arrive (`iter_content(None)` yields each HTTP chunk when it comes, where
    `iter_lines` would wait for 512 bytes)."""
    import requests

    pending, done = b"", False
    try:
        for piece in response.iter_content(chunk_size=None):
            now = time.perf_counter()
            outcome.bytes += len(piece)
            pending += piece.replace(b"\r\n", b"\n")
            *events_, pending = pending.split(b"\n\n")
            for event in events_:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        error = chunk["error"]
                        code = (error.get("code") or error.get("type")) if isinstance(error, dict) else ""
                        outcome.error = f"error event in stream {code or ''}".strip()
                        return
                    if any(_carries_token(chat, c) for c in chunk.get("choices") or ()):
                        outcome.token_times.append(now)
                    if chunk.get("usage"):
                        outcome.output_tokens = chunk["usage"].get("completion_tokens")
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        outcome.error = "stream cut (connection lost)"
        return
    except ValueError:
        outcome.error = "invalid JSON in stream"
        return
    if not done:
        outcome.error = "stream ended without [DONE]"
    elif not outcome.token_times:
        outcome.error = "stream carried no token"


def _read_whole(response, outcome: _Outcome) -> None:
    try:
        body = response.json()
    except ValueError:
        outcome.error = "invalid JSON answer"
        return
    outcome.bytes = len(response.content or b"")
    if not body.get("choices"):
        outcome.error = "answer carried no choice"
        return
    outcome.output_tokens = (body.get("usage") or {}).get("completion_tokens")


class _OpenAIUser(HttpUser):
    abstract = True
    chat = False
    stream = False

    def wait_time(self) -> float:
        return self.environment.parsed_options.think_time

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        host = (self.host or "").rstrip("/")
        self.root = host.removesuffix("/v1")
        self.api = "" if host.endswith("/v1") else "/v1"  # --host may be the server root or its /v1 base
        self.headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}

    @property
    def row(self) -> str:
        return f"{'chat' if self.chat else 'completions'} {'stream' if self.stream else 'whole'}"

    def body(self) -> dict:
        prompt = _prompt(self)
        body = {"model": self.options.model, "max_tokens": self.options.max_tokens, "stream": self.stream,
                "temperature": self.options.temperature}
        if self.options.ignore_eos == "true":
            body["ignore_eos"] = True
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def send(self) -> None:
        path = f"{self.api}/{'chat/completions' if self.chat else 'completions'}"
        outcome = _Outcome(time.perf_counter())
        with self.client.post(path, json=self.body(), headers=self.headers, stream=self.stream,
                              catch_response=True, name=self.row) as response:
            if response.status_code == 0:
                outcome.error = f"connection failed ({type(response.error).__name__})"
            elif response.status_code != 200:
                outcome.error = f"HTTP {response.status_code} {_error_code(response.content)}".strip()
            elif self.stream:
                _read_stream(response, self.chat, outcome)
            else:
                _read_whole(response, outcome)
            # The whole request, not only until its headers (all locust measures for stream=True).
            response.request_meta["response_time"] = (time.perf_counter() - outcome.start) * 1000
            response.request_meta["response_length"] = outcome.bytes
            if outcome.error:
                response.failure(outcome.error)
                return
            response.success()
        self.record(outcome)

    def record(self, outcome: _Outcome) -> None:
        """The custom metric rows, logged on their own entries so the Aggregated row counts requests only."""
        stats = self.environment.stats
        times = outcome.token_times
        if times:
            stats.get(self.row, "TTFT").log((times[0] - outcome.start) * 1000, 0)
            itl = stats.get(self.row, "ITL")
            for earlier, later in zip(times, times[1:], strict=False):
                itl.log((later - earlier) * 1000, 0)
        if outcome.output_tokens is not None:
            stats.get(self.row, "TOKENS").log(outcome.output_tokens, outcome.output_tokens)


class StreamingCompletionUser(_OpenAIUser):
    weight = 3
    stream = True

    @tag("completions", "stream")
    @task
    def stream_completion(self) -> None:
        self.send()


class StreamingChatUser(_OpenAIUser):
    weight = 3
    chat = True
    stream = True

    @tag("chat", "stream")
    @task
    def stream_chat(self) -> None:
        self.send()


class CompletionUser(_OpenAIUser):
    weight = 1

    @tag("completions", "whole")
    @task
    def completion(self) -> None:
        self.send()


class ChatUser(_OpenAIUser):
    weight = 1
    chat = True

    @tag("chat", "whole")
    @task
    def chat_completion(self) -> None:
        self.send()
