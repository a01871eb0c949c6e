"""What a page shows of an answer, read in the browser, and a comparison with the model's text
that ignores only what markdown rendering changes (its markup and whitespace)."""

from __future__ import annotations

import re

# What markdown rendering adds or removes, and whitespace: the rest must match exactly.
MARKUP = re.compile(r"```\w*|[\s#*`|:>\-]")

SAMPLE = """(id) => {
  const part = (name) => (document.getElementById(`answer-${id}-${name}`) || {}).textContent || "";
  const article = document.getElementById(`message-${id}`);
  return {
    status: article ? article.dataset.status : "",
    connected: document.querySelector("[data-connected]").dataset.connected,
    shown: part("md") + part("text"),
    final: article && article.dataset.status !== "streaming"
      ? article.querySelector(".markdown").textContent : "",
  };
}"""


def normalized(text: str) -> str:
    return MARKUP.sub("", text)
