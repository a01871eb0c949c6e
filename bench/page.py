"""``python -m bench.page``: how light the chat page is (JavaScript shipped, server render time).

Two figures, measured, not asserted (see ``bench/README.md``):

1. **JavaScript**: the ``<script src>`` of the rendered chat page (htmx, its websocket
   extension and our own files, as collected by ``collectstatic``), raw and gzipped (level 9,
   what WhiteNoise serves), per file and in all. The budget is 40 KB gzipped.
2. **Server render time** of ``/c/<id>/`` for a conversation of 200 messages (100 questions
   and 100 answers in the simulator's markdown: headings, lists, code, tables), through the
   whole middleware stack with Django's test ``Client``, in this process, against a fresh
   SQLite database in a temp folder, with production settings (DEBUG off, hashed static
   files, sign-in required). Timed with ``perf_counter`` around each request after warm-up
   renders; p50/p95 over ``--renders`` runs. The budget is 50 ms. Finished messages are drawn
   once per process (``chat/article_cache.py``), so the same page is also timed with that
   store emptied before each render: the first visit after a restart, or a conversation no
   one opened since.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JS_BUDGET_GZIP = 40 * 1024
RENDER_BUDGET_MS = 50.0
SCRIPT_SRC = re.compile(r'<script\b[^>]*\bsrc="([^"]+)"', re.I)


@dataclass
class Script:
    src: str
    raw: int
    gzipped: int


@dataclass
class Results:
    messages: int
    renders: int
    scripts: list[Script] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)
    cold_ms: list[float] = field(default_factory=list)  # the article store emptied each time
    html_bytes: int = 0
    queries: int = 0
    markdown_ms: float = 0.0  # rendering the answers' markdown alone, once

    @property
    def js_raw(self) -> int:
        return sum(s.raw for s in self.scripts)

    @property
    def js_gzipped(self) -> int:
        return sum(s.gzipped for s in self.scripts)

    def percentile(self, q: float, cold: bool = False) -> float:
        ordered = sorted(self.cold_ms if cold else self.render_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.page", description=__doc__)
    parser.add_argument("--messages", type=int, default=200, help="messages in the conversation")
    parser.add_argument("--renders", type=int, default=50, help="timed renders (after warm-up)")
    parser.add_argument("--cold", type=int, default=10, help="timed renders, article store empty")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args(argv)


def configure(workdir: Path) -> None:
    """Production-like settings in a temp folder, then Django itself."""
    os.environ.update(
        {
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "testserver",
            "CHAT_HTTPS": "0",
            "CHAT_REQUIRE_LOGIN": "1",
            "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
            "STATIC_ROOT": str(workdir / "static"),
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        }
    )
    for name in ("REDIS_URL", "LLM_API_BASE", "LLM_API_KEY", "DASHSCOPE_API_KEY"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)


def make_conversation(messages: int) -> tuple[Any, int]:
    """A user and one conversation of ``messages`` messages, answers in realistic markdown."""
    from django.contrib.auth.models import User

    from chat.models import Conversation, Message
    from simulator.script import SimOptions, plan_answer

    user = User.objects.create_user("bench", password=secrets.token_urlsafe(16))
    conversation = Conversation.objects.create(user=user, model="qwen-plus", title="Benchmark")
    rows = []
    for turn in range(messages // 2):
        question = f"Question {turn}: tell me about rivers, lakes and the sea (part {turn})"
        tokens = 150 + (turn * 37) % 350  # 150-500 tokens: short and long answers
        answer = "".join(plan_answer("qwen-plus", [{"role": "user", "content": question}],
                                     SimOptions(seed=turn, tokens=tokens)))  # fmt: skip
        rows.append(Message(conversation=conversation, role=Message.Role.USER, content=question))
        rows.append(
            Message(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                content=answer,
                model="qwen-plus",
                ttft_ms=412.0,
                total_ms=5230.0 + turn,
                prompt_tokens=40 + turn,
                completion_tokens=tokens,
                total_tokens=40 + turn + tokens,
                finish_reason="stop",
            )
        )
    Message.objects.bulk_create(rows)
    return user, conversation.pk


def measure_scripts(html: str) -> list[Script]:
    """Each script the page loads, read from the collected static files."""
    from django.conf import settings

    scripts = []
    for src in SCRIPT_SRC.findall(html):
        path = Path(settings.STATIC_ROOT) / src.removeprefix("/" + settings.STATIC_URL.lstrip("/"))
        data = path.read_bytes()
        scripts.append(Script(src, len(data), len(gzip.compress(data, compresslevel=9))))
    return scripts


def run(args: argparse.Namespace) -> Results:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from chat.models import Message
    from chat.rendering.articles import articles
    from chat.rendering.markdown import render_markdown

    user, conversation_id = make_conversation(args.messages)
    client = Client()
    client.force_login(user)
    url = f"/c/{conversation_id}/"
    results = Results(messages=args.messages, renders=args.renders)
    for _ in range(args.cold):
        articles.clear()
        started = time.perf_counter()
        response = client.get(url)
        results.cold_ms.append((time.perf_counter() - started) * 1000)
    for _ in range(5):  # warm-up: template loading, connection, first imports
        response = client.get(url)
        assert response.status_code == 200, response.status_code
    html = response.content.decode()
    assert html.count("<article") == args.messages, "the page does not show every message"
    results.html_bytes = len(response.content)
    results.scripts = measure_scripts(html)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    results.queries = len(queries)
    for _ in range(args.renders):
        started = time.perf_counter()
        response = client.get(url)
        results.render_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    answers = Message.objects.filter(role=Message.Role.ASSISTANT).values_list("content", flat=True)
    started = time.perf_counter()
    for text in answers:
        render_markdown(text)
    results.markdown_ms = (time.perf_counter() - started) * 1000
    return results


def render(results: Results) -> str:
    kb = 1024
    lines = ["Chat page: JavaScript shipped (script srcs of the rendered page)", ""]
    lines.append(f"  {'file':<48} {'raw':>10} {'gzip -9':>10}")
    for s in results.scripts:
        lines.append(f"  {s.src:<48} {s.raw:>10,} {s.gzipped:>10,}")
    verdict = "PASS" if results.js_gzipped <= JS_BUDGET_GZIP else "FAIL"
    lines.append(f"  {'total':<48} {results.js_raw:>10,} {results.js_gzipped:>10,}")
    lines.append(
        f"  total gzipped {results.js_gzipped / kb:.1f} KB (raw {results.js_raw / kb:.1f} KB);"
        f" budget 40 KB: {verdict}"
    )
    lines += ["", f"Chat page: server render time, {results.messages} messages", ""]
    p50, p95 = results.percentile(0.5), results.percentile(0.95)
    verdict = "PASS" if p95 < RENDER_BUDGET_MS else "FAIL"
    lines.append(
        f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, min {min(results.render_ms):.1f} ms,"
        f" max {max(results.render_ms):.1f} ms over {results.renders} renders;"
        f" budget 50 ms (p95): {verdict}"
    )
    lines.append(
        f"  articles drawn afresh (store emptied before each of {len(results.cold_ms)} renders):"
        f" p50 {results.percentile(0.5, cold=True):.1f} ms,"
        f" p95 {results.percentile(0.95, cold=True):.1f} ms"
    )
    lines.append(
        f"  page {results.html_bytes / kb:.0f} KB of HTML, {results.queries} SQL queries;"
        f" the answers' markdown alone takes {results.markdown_ms:.1f} ms to render once"
    )
    lines.append(
        "  measured in-process: Django test Client, full middleware stack, signed-in user,"
        " DEBUG off, temp SQLite"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-page-") as workdir:
        configure(Path(workdir))
        results = run(args)
    print(render(results))
    if args.json:
        figures: dict[str, Any] = asdict(results)
        figures["render_p50_ms"] = results.percentile(0.5)
        figures["render_p95_ms"] = results.percentile(0.95)
        figures["cold_p50_ms"] = results.percentile(0.5, cold=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
