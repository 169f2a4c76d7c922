"""Polling helper shared by the tests that wait on another process or thread."""

from __future__ import annotations

import time


def wait_until(cond, timeout: float, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
