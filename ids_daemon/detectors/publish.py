"""Findings → v1 predictions (the same `EncodedBatch` the model's predictions travel in).

One prediction per finding, after a rate limit: at most one per (detector, attacker,
victim, class) per ``repeat_s`` seconds of packet time; the findings folded in the
meantime are counted in the next one's ``suppressed``.
"""

from __future__ import annotations

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
    """Keeps the first finding of a key per ``repeat_s``; counts (and carries) the rest."""

    def __init__(self, repeat_s: float, max_keys: int = 65536):
        self.repeat_s = repeat_s
        self.counters: dict[str, int] = {"suppressed": 0}
        self.last = LRU(max_keys, self.counters, "evictions")  # key -> [last published ts, suppressed, packets]

    def admit(self, findings: list[Finding]) -> list[Finding]:
        out = []
        for f in findings:
            key = (f.detector, f.attacker, f.victim, f.cls)
            st = self.last.get_touch(key)
            if st is not None and f.first_ts - st[0] < self.repeat_s:
                st[1] += 1
                st[2] += f.packets
                self.counters["suppressed"] += 1
                continue
            if st is not None:
                f.suppressed = st[1]
            self.last.touch(key, [f.last_ts, 0, 0])
            out.append(f)
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
