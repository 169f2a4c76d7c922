"""Small helpers for the lines people read (summaries, reports)."""

from __future__ import annotations

import re


def plural(count: int, word: str, words: str | None = None) -> str:
    """``count`` and the noun agreeing with it: "1 frame", "2 frames", "0 frames"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


# nouns the summaries count; "1 frames" reads as a slip
_COUNTED = re.compile(r"(?<![\d.,])\b1 (frame|window|row|prediction|flow|pool|packet|sequence|finding|capture|class"
                      r"|batch)(?:es|s)\b")


def agree(text: str) -> str:
    """``text`` with every count of exactly 1 followed by the singular of its noun."""
    return _COUNTED.sub(r"1 \1", text)
