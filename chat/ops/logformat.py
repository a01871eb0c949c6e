"""Log records as one JSON object per line (``LOG_FORMAT=json``), for a team's log pipeline.

Every record gets ``time``, ``level``, ``logger`` and ``message``; records about an answer also
carry its fields (``answer_id``, ``request_id`` — ours, sent upstream as ``X-Request-Id`` —,
``upstream_request_id``, ``outcome``, timings and tokens), passed as ``extra`` by
``log_answer``. The secrets filter runs before this, on the same record.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

ANSWER_FIELDS = (
    "event", "answer_id", "conversation_id", "user_id", "model", "provider", "request_id",
    "upstream_request_id", "outcome", "error_kind", "ttft_ms", "total_ms", "prompt_tokens",
    "completion_tokens", "chars",
)  # fmt: skip

logger = logging.getLogger("chat.answers")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ANSWER_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_answer(event: str, **fields: Any) -> None:
    """One line per answer event ("answer.started", "answer.finished"): readable as text,
    and the same fields as JSON keys with ``LOG_FORMAT=json``."""
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v != "")
    logger.info("%s %s", event, shown, extra={"event": event, **fields})
