"""Prediction times: ISO 8601 text for people and other tools, and the range a
prediction's ``time`` must fall in to be believed."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

# A prediction's `time` is the daemon's wall clock when it classified, so it is never in
# the future; a day ahead covers any clock skew between sensor and reader. Old records
# are fine (a backlog or an archived topic), but not before the Unix epoch.
MAX_AHEAD_S = 86_400.0


def iso8601(t: float) -> str:
    """``t`` (epoch seconds) as ISO 8601 / RFC 3339 UTC with microseconds, e.g.
    ``2026-11-29T11:02:03.123456Z`` (the form Suricata's and Zeek's JSON logs use)."""
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def time_problem(t: float, now: float | None = None) -> str | None:
    """Why ``t`` is not a believable prediction time (None when it is): not finite,
    before 1970, or more than `MAX_AHEAD_S` ahead of ``now`` (default: this host's clock)."""
    if not math.isfinite(t):
        return f"time {t} is not a finite number"
    if t < 0:
        return f"time {t} is before 1970"
    limit = (time.time() if now is None else now) + MAX_AHEAD_S
    if t > limit:
        return f"time {t:.6g} is more than {MAX_AHEAD_S:.0f} s ahead of this host's clock"
    return None
