"""Answers of a chosen length for the bytes phase (bytes per answer byte, 1,000 and 10,000
characters): the simulator is asked for the number of tokens that makes that length.
"""

from __future__ import annotations

from simulator.script import SimOptions, plan_answer

MODEL = "qwen-plus"  # settings.LLM_MODELS[0], what a new conversation uses


def tokens_for_chars(prompt_text: str, target_chars: int, seed: int = 0) -> int:
    """How many tokens make the simulator's answer to this prompt about ``target_chars`` long.

    The simulator's text is a pure function of the prompt and options (``plan_answer``), so
    the length can be computed here instead of guessed from an average token size.
    """
    messages = [{"role": "user", "content": prompt_text}]

    def length(tokens: int) -> int:
        return len("".join(plan_answer(MODEL, messages, SimOptions(tokens=tokens, seed=seed))))

    low, high = 1, 20_000
    while low < high:
        mid = (low + high) // 2
        if length(mid) < target_chars:
            low = mid + 1
        else:
            high = mid
    return low
