"""A logging filter that blanks out secrets: the API keys and passwords in the environment.

Nothing in Streamside logs a key on purpose; this guards against what others log (an HTTP
library at DEBUG, an exception message quoting a header) on every record, whoever wrote it.
"""

from __future__ import annotations

import logging
import os
import re

# Environment variables whose values are secrets, by name.
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
MIN_SECRET_LENGTH = 8  # shorter values ("1", "on") would blank out ordinary words
REDACTED = "[redacted]"


def secret_values(environ: os._Environ[str] | dict[str, str] = os.environ) -> list[str]:
    """The environment's secret values, longest first (a key containing another is whole)."""
    values = {
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


class RedactSecrets(logging.Filter):
    """Replaces every secret value in a record's message and traceback with ``[redacted]``.

    Read once at start: the environment is the only place secrets come from, and providers
    added in the admin name a variable of it.
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = self._redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
