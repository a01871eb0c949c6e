"""Time to first token and tokens/s of the local model server (``make local-model`` first).

Standard library only. Streams a few chat completions one after another and prints, for each,
the time to the first text token and the decode rate. llama.cpp streams one token per chunk
and sends no usage in streams, so tokens are counted as content chunks; the server's own
tokenizer (``/extras/tokenize/count``) recounts the whole answer as a check.

    python -m localmodel.bench [--base-url http://127.0.0.1:8002/v1] [--requests 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about a cat sleeping in the sun.",
    "What are three tips for learning a new language?",
    "Describe how a bicycle works.",
    "Give me a simple recipe for pancakes.",
    "Why do leaves change colour in autumn?",
    "What is the difference between weather and climate?",
    "Tell me a short story about a lighthouse keeper.",
]


@dataclass
class Run:
    ttft: float  # seconds from sending the request to the first non-empty content
    chunks: int  # non-empty content chunks, one token each on llama.cpp
    decode: float  # seconds from the first to the last content chunk
    total: float
    finish: str | None
    text: str

    @property
    def tokens_per_s(self) -> float:
        return (self.chunks - 1) / self.decode if self.chunks > 1 and self.decode > 0 else 0.0


def _connection(url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=120)


def stream_once(base_url: str, model: str, prompt: str, max_tokens: int) -> Run:
    url = urllib.parse.urlsplit(base_url)
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": max_tokens,
        }
    )
    conn = _connection(url)
    started = time.perf_counter()
    conn.request(
        "POST",
        f"{url.path.rstrip('/')}/chat/completions",
        body=body,
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read(300)!r}")
    first = last = None
    chunks = 0
    finish = None
    parts: list[str] = []
    for raw in response:  # lines; SSE frames here end in CRLF
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        choice = (json.loads(data).get("choices") or [{}])[0]
        text = (choice.get("delta") or {}).get("content")
        if text:
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
            parts.append(text)
        finish = choice.get("finish_reason") or finish
    total = time.perf_counter() - started
    conn.close()
    if first is None or last is None:
        return Run(total, 0, 0.0, total, finish, "")
    return Run(first - started, chunks, last - first, total, finish, "".join(parts))


def count_tokens(base_url: str, text: str) -> int | None:
    """The server tokenizer's count of ``text``, or None where the endpoint is missing."""
    url = urllib.parse.urlsplit(base_url)
    conn = _connection(url)
    try:
        conn.request(
            "POST",
            "/extras/tokenize/count",
            body=json.dumps({"input": text}),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            return None
        # The count includes the BOS token the tokenizer adds, where the model has one.
        return int(json.loads(payload)["count"])
    except (OSError, ValueError, KeyError):
        return None
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    port = os.environ.get("LOCAL_MODEL_PORT") or "8002"
    parser = argparse.ArgumentParser(prog="python -m localmodel.bench", description=__doc__)
    parser.add_argument("--base-url", default=f"http://127.0.0.1:{port}/v1")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args(argv)

    print(f"{args.base_url}, model {args.model}, max_tokens {args.max_tokens}")
    try:
        stream_once(args.base_url, args.model, "Hi", 4)  # warm-up: page in the weights
    except OSError as exc:
        print(f"cannot reach {args.base_url}: {exc}; is `make local-model` running?")
        return 1
    runs: list[Run] = []
    for i in range(args.requests):
        run = stream_once(args.base_url, args.model, PROMPTS[i % len(PROMPTS)], args.max_tokens)
        counted = count_tokens(args.base_url, run.text)
        check = f", tokenizer counts {counted}" if counted is not None else ""
        print(
            f"  #{i + 1}: first token {run.ttft * 1000:6.0f} ms, {run.chunks:4d} tokens"
            f"{check}, {run.tokens_per_s:6.1f} tokens/s, {run.total:5.2f} s total, "
            f"finish {run.finish}"
        )
        runs.append(run)
    ttfts = [r.ttft * 1000 for r in runs if r.chunks]
    rates = [r.tokens_per_s for r in runs if r.chunks > 1]
    if not ttfts or not rates:
        print("no tokens came back")
        return 1
    print(
        f"median first token {statistics.median(ttfts):.0f} ms "
        f"(min {min(ttfts):.0f}, max {max(ttfts):.0f}); "
        f"median {statistics.median(rates):.1f} tokens/s "
        f"(min {min(rates):.1f}, max {max(rates):.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
