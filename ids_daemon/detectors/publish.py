"""Findings → v1 predictions (the same `EncodedBatch` the model's predictions travel in).

One prediction per finding, after a rate limit: at most one per (detector, attacker,
victim, class) per ``repeat_s`` seconds of packet time. The findings folded in the
meantime are published together, as one prediction, once ``repeat_s`` has passed since
the key's last one (or when the run ends): their packets summed, their time span, the
latest's evidence, and in ``suppressed`` how many were folded into it beyond the first.
Every frame a published finding stood for is then in some message's ``window.packets``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import orjson

from ..inference.risk import FAMILY_WEIGHT, severity_index
from ..predictions.vocabulary import SEVERITIES
from ..predictions.encode import SCHEMA_ID
from ..predictions.timestamps import iso8601
from ..sinks.base import EncodedBatch
from .base import LRU, Finding


class RateLimiter:
    """Keeps the first finding of a key per ``repeat_s``; folds the rest into one finding that
    `admit` publishes when it is due and `flush` at the end."""

    def __init__(self, repeat_s: float, max_keys: int = 65536):
        self.repeat_s = repeat_s
        self.max_keys = max_keys
        self.counters: dict[str, int] = {"suppressed": 0}
        self.last = LRU(max_keys, self.counters, "evictions")  # key -> packet time of its last message
        # key -> the findings folded since its last message, merged; insertion order = oldest first
        self.pending: dict[tuple, Finding] = {}

    def admit(self, findings: list[Finding], now: float | None = None) -> list[Finding]:
        """The findings to publish now: folded ones whose ``repeat_s`` has passed by packet time
        ``now`` (the batch's last frame), then those of ``findings`` not folded."""
        out = self._due(now) if now is not None and self.pending else []
        for f in findings:
            key = (f.detector, f.attacker, f.victim, f.cls)
            last = self.last.get_touch(key)
            if last is not None and f.first_ts - last < self.repeat_s:
                self.counters["suppressed"] += 1
                self._fold(key, f, out)
                continue
            folded = self.pending.pop(key, None)
            if folded is not None:  # its time had come (`now` not given, or behind this finding)
                out.append(folded)
            self.last.touch(key, f.last_ts)
            out.append(f)
        return out

    def flush(self) -> list[Finding]:
        """Every folded finding still waiting (the run is ending)."""
        out = list(self.pending.values())
        self.pending.clear()
        return out

    def _fold(self, key: tuple, f: Finding, out: list[Finding]) -> None:
        p = self.pending.get(key)
        if p is None:
            self.pending[key] = replace(f, suppressed=0)
            if len(self.pending) > self.max_keys:  # bounded: the oldest is published early, not lost
                old = next(iter(self.pending))
                out.append(self.pending.pop(old))
            return
        p.suppressed += 1
        p.packets += f.packets
        p.first_ts = min(p.first_ts, f.first_ts)
        p.last_ts = max(p.last_ts, f.last_ts)
        p.evidence = f.evidence  # the latest wording (a scan's port count grows)

    def _due(self, now: float) -> list[Finding]:
        out = []
        for key, p in list(self.pending.items()):
            last = self.last.get(key)
            if last is None or now - last >= self.repeat_s:
                del self.pending[key]
                self.last.touch(key, now)  # the next repeats fold for repeat_s from this message
                out.append(p)
        return out


def encode_findings(findings: list[Finding], *, sensor: str, id_prefix: str, first_id: int,
                    now: float, interface: str | None = None, pcap_files: list[str | None] | None = None) -> EncodedBatch:
    """One v1 prediction per finding (is_attack true, confidence 1); ``pcap_files``: the alert
    pcap file of each (None: not recorded)."""
    risks = np.array([FAMILY_WEIGHT.get(f.family, 0.5) for f in findings], dtype=np.float64)
    sev = severity_index(risks).tolist() if findings else []
    values: list[bytes] = []
    keys: list[bytes] = []
    timestamp = iso8601(now)
    for i, f in enumerate(findings):
        # a flood from a crowd has no one attacker: its key is the victim's
        key = f"{f.detector} {f.attacker or '*'}" + (f" {f.victim}" if f.victim else "")
        evidence = f.evidence + (f" (+{f.suppressed} repeats)" if f.suppressed else "")
        msg: dict[str, Any] = {
            "schema": SCHEMA_ID,
            "id": f"{id_prefix}-d{first_id + i}",
            "time": now,
            "timestamp": timestamp,
            "sensor": sensor,
            "interface": interface,
            "predicted_attack": f.cls,
            "family": f.family,
            "is_attack": True,
            "confidence": 1.0,
            "risk_score": float(risks[i]),
            "severity": SEVERITIES[sev[i]],
            "probabilities": [{"class": f.cls, "p": 1.0}],
            "flow": {"key": key, "kind": "detector", "protocol": f.protocol, "src_ip": f.attacker or None, "src_port": None,
                     "dst_ip": f.victim, "dst_port": None},
            "window": {"first_ts": f.first_ts, "last_ts": f.last_ts, "packets": max(1, f.packets),
                       "close_reason": "detector", "history": 1},
            "model": {"name": f"detector:{f.detector}", "version": "1"},
            "evidence": evidence,
            "suppressed": f.suppressed,
        }
        if pcap_files is not None and pcap_files[i] is not None:
            msg["pcap_file"] = pcap_files[i]
        values.append(orjson.dumps(msg))
        keys.append(key.encode())
    return EncodedBatch(keys=keys, values=values, schema=SCHEMA_ID)
