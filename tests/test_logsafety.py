"""Secrets from the environment never reach a log line, whoever logs them."""

from __future__ import annotations

import logging

import pytest

from chat.ops.logsafety import RedactSecrets, secret_values

KEY = "sk-live-0123456789abcdef"


def test_secret_values_are_the_environments_keys_tokens_and_passwords() -> None:
    environ = {
        "DASHSCOPE_API_KEY": KEY,
        "OTHER_TOKEN": "tok-abcdefgh",
        "DB_PASSWORD": "hunter2hunter2",
        "CHAT_HTTPS": "1",  # not a secret by name
        "SHORT_KEY": "on",  # too short to blank out safely
        "LLM_MODELS": "qwen-plus,qwen-max",
    }
    assert secret_values(environ) == [KEY, "hunter2hunter2", "tok-abcdefgh"]


def test_a_key_in_a_message_its_arguments_or_a_traceback_is_redacted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SOME_PROVIDER_KEY", KEY)
    logger = logging.getLogger("test.logsafety")
    logger.addFilter(RedactSecrets())
    with caplog.at_level(logging.DEBUG, logger="test.logsafety"):
        logger.debug("headers: Authorization: Bearer %s", KEY)
        logger.info(f"inline {KEY} too")
        try:
            raise RuntimeError(f"upstream said: bad key {KEY}")
        except RuntimeError:
            logger.exception("request failed")
    text = caplog.text
    assert KEY not in text
    assert text.count("[redacted]") == 3
    assert "Authorization: Bearer [redacted]" in text
