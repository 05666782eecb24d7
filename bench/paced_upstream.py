"""A stand-in for an OpenAI-compatible engine server whose timing is fixed: each stream gets its next token
every `--step-ms` after its request arrived, on a fixed schedule (a late wake-up does not push the later
tokens back). It computes nothing, so it takes almost no CPU and adds no noise of its own.

    python -m bench.paced_upstream --port 8001 --model turnout-tiny --step-ms 10

It is what `bench.gateway_overhead --upstream paced` puts behind the gateway to isolate the gateway's own
cost (latency added, CPU per token) from the run-to-run noise of a real engine on a small machine. Because
token i leaves at arrival + i x step, whatever the gateway adds (to the request on its way in, and to the
last token on its way out) shows up whole in the end-to-end latency. It is not evidence that any real
backend works. It streams `/v1/completions` and `/v1/chat/completions` the way vLLM does (one chunk per
token with `token_ids`, a usage chunk when asked, `[DONE]`), answers `GET /v1/models`, and refuses
non-streamed requests with 400, because the gateway always streams upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time

from bench.server_process import ChildServer, free_port


class PacedServer:
    def __init__(self, model: str, step_s: float):
        self.model, self.step_s = model, step_s

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self._connection, host, port, backlog=1024)
        print(f"paced upstream on http://{host}:{port}/v1, one token per {self.step_s * 1000:g} ms", flush=True)
        await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(":", 1) for line in header_lines if ":" in line)
                headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                method, path = request_line.split(" ")[:2]
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    models = {"object": "list", "data": [{"id": self.model, "object": "model",
                                                          "owned_by": "paced", "max_model_len": 1 << 20}]}
                    _write_json(writer, 200, models)
                elif method == "POST" and path.endswith(("/completions", "/chat/completions")):
                    await self._stream(writer, json.loads(body), chat=path.endswith("/chat/completions"))
                else:
                    _write_json(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "NotFound",
                                                        "param": None, "code": 404}})
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, request: dict, chat: bool) -> None:
        if not request.get("stream"):
            _write_json(writer, 400, {"error": {"message": "the paced upstream only streams", "type":
                                                "BadRequestError", "param": "stream", "code": 400}})
            return
        tokens = int(request.get("max_tokens") or 16)
        prompt = request.get("prompt") or ""
        prompt_tokens = len(prompt) if isinstance(prompt, list) else max(1, len(str(prompt).split()))
        base = {"id": f"cmpl-paced-{id(writer)}", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": request.get("model", self.model)}
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        for i in range(tokens):
            await asyncio.sleep(max(0.0, arrived + (i + 1) * self.step_s - loop.time()))
            if writer.is_closing():
                return
            finish = "length" if i == tokens - 1 else None
            if chat:
                choice = {"index": 0, "delta": {"content": " word"}, "logprobs": None, "finish_reason": finish,
                          "token_ids": [100 + i % 50]}
            else:
                choice = {"index": 0, "text": " word", "logprobs": None, "finish_reason": finish,
                          "stop_reason": None, "token_ids": [100 + i % 50]}
            _write_chunk(writer, b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n")
        tail = b""
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                     "total_tokens": prompt_tokens + tokens}
            tail = b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
        _write_chunk(writer, tail + b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _write_json(writer: asyncio.StreamWriter, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body)


class PacedUpstreamProcess(ChildServer):
    """`with PacedUpstreamProcess(model) as upstream:` runs the paced upstream as a child process."""

    def __init__(self, model: str, *, step_ms: float = 10.0):
        self.port = free_port()
        args = [sys.executable, "-m", "bench.paced_upstream", "--port", str(self.port), "--model", model,
                "--step-ms", str(step_ms)]
        super().__init__("paced-upstream", args, self.base_url + "/models", own_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paced_upstream", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default="turnout-tiny", help="the model name it answers to")
    parser.add_argument("--step-ms", type=float, default=10.0, help="time between a stream's tokens")
    args = parser.parse_args(argv)
    if args.step_ms <= 0:
        parser.error(f"--step-ms must be > 0, got {args.step_ms}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(PacedServer(args.model, args.step_ms / 1000).serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
