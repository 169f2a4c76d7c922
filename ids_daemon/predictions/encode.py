"""Prediction schema v1: building and encoding predictions (orjson), and the JSON Schema.

The schema file ships with the package (``predictions/prediction.v1.schema.json``) so that
subscribers can validate what they receive.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import orjson

from ..features.window import KIND_FLOW, KIND_POOL, REASON_NAMES, proto_name
from ..sinks.base import EncodedBatch
from .community_id import community_ids
from .timestamps import iso8601
from .vocabulary import SEVERITIES

SCHEMA_ID = "ids.prediction.v1"
_KIND_NAMES = {KIND_FLOW: "flow", KIND_POOL: "pool"}


@lru_cache(maxsize=1)
def json_schema() -> dict[str, Any]:
    """The JSON Schema of prediction v1."""
    text = (resources.files("ids_daemon.predictions") / "prediction.v1.schema.json").read_text()
    return json.loads(text)


_FLOW_CACHE: dict[int, dict[str, Any]] = {}
_FLOW_CACHE_MAX = 1 << 18


def _flows(w: Any) -> list[dict[str, Any]]:
    """The ``flow`` object of each window, cached by key hash: a key predicts again and
    again, and its identity (endpoints in initiator order, or the pool's host, and a
    flow's Community ID) is fixed."""
    hashes = w.key.tolist()
    missing = [i for i, h in enumerate(hashes) if h not in _FLOW_CACHE]
    if missing:
        if len(_FLOW_CACHE) + len(missing) > _FLOW_CACHE_MAX:
            _FLOW_CACHE.clear()  # bounded: start over rather than grow
        m = w.take(np.array(missing))
        keys = m.key_strings().tolist()
        fm = m.kind == KIND_FLOW
        flow = fm.tolist()
        src, dst = (a.tolist() for a in m.endpoint_strings())  # IPv4 or IPv6
        # only flows have a 5-tuple (a pool's or capture's window has no Community ID); one family per call
        cid: list[str | None] = [None] * len(m)
        v6 = m.ip_version == 6
        for rows, (a, b) in ((np.flatnonzero(fm & ~v6), (m.src, m.dst)), (np.flatnonzero(fm & v6), (m.src6, m.dst6))):
            if len(rows):
                ids = community_ids(a[rows], b[rows], m.proto[rows], m.sport[rows], m.dport[rows])
                for r, c in zip(rows.tolist(), ids):
                    cid[r] = c
        for j, i in enumerate(missing):
            fl = flow[j]
            _FLOW_CACHE[hashes[i]] = {
                "key": keys[j], "kind": _KIND_NAMES.get(int(m.kind[j]), "capture"), "protocol": proto_name(m.proto[j]),
                "src_ip": src[j] if fl else None, "src_port": int(m.sport[j]) if fl else None,
                "dst_ip": dst[j], "dst_port": int(m.dport[j]) if fl else None,
                "community_id": cid[j],
            }
    return [_FLOW_CACHE[h] for h in hashes]


def encode_predictions(seq: Any, probs: np.ndarray, decision: tuple[np.ndarray, ...], severity: np.ndarray, *,
                       classes: list[str], families: list[str], model: dict[str, str], sensor: str, id_prefix: str,
                       first_id: int, top_k: int, now: float, interface: str | None = None,
                       evidence: list[str] | None = None,
                       attribution: list[list[dict[str, Any]] | None] | None = None,
                       pcap_files: list[str | None] | None = None) -> EncodedBatch:
    """One JSON object per sequence of ``seq`` (a SequenceBatch), from its probabilities
    and the worker's ``decision`` (`ids_daemon.inference.risk.decide`) and severities.
    ``interface``: the live capture interface (None for a file: no interface saw it).
    ``evidence``: one sentence per sequence (its last window's facts), ``attribution``:
    per sequence, the columns that pushed p_attack most (None: not computed for it);
    both are optional fields of the record (docs/evidence.md). ``pcap_files``: per sequence,
    the alert pcap file its packets are written to (None: not recorded)."""
    w = seq.windows
    n = len(w)
    pred, conf, risk, p_attack, is_attack = decision
    sev = severity
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    flows = _flows(w)
    timestamp = iso8601(now)
    first, last, packets = w.first_ts.tolist(), w.last_ts.tolist(), w.packets.tolist()
    reasons = w.reason.tolist()
    hist = seq.lengths.tolist()
    pred_l, conf_l, risk_l, sev_l = pred.tolist(), conf.tolist(), risk.tolist(), sev.tolist()
    top_l = top.tolist()
    tp = np.take_along_axis(probs, top, axis=1).tolist()
    pa_l, att_l = p_attack.tolist(), is_attack.tolist()
    values: list[bytes] = []
    kb: list[bytes] = []
    for i in range(n):  # one message per prediction; the model ran on the whole batch
        c = pred_l[i]
        flow = flows[i]
        msg = {
            "schema": SCHEMA_ID,
            "id": f"{id_prefix}-{first_id + i}",
            "time": now,
            "timestamp": timestamp,
            "sensor": sensor,
            "interface": interface,
            "predicted_attack": classes[c],
            "family": families[c],
            "is_attack": att_l[i],
            "p_attack": pa_l[i],
            "confidence": conf_l[i],
            "risk_score": risk_l[i],
            "severity": SEVERITIES[sev_l[i]],
            "probabilities": [{"class": classes[j], "p": p} for j, p in zip(top_l[i], tp[i])],
            "flow": flow,
            "window": {"first_ts": first[i], "last_ts": last[i], "packets": packets[i],
                       "close_reason": REASON_NAMES[reasons[i]], "history": hist[i]},
            "model": model,
        }
        if evidence is not None:
            msg["evidence"] = evidence[i]
        if attribution is not None and attribution[i] is not None:
            msg["attribution"] = attribution[i]
        if pcap_files is not None and pcap_files[i] is not None:
            msg["pcap_file"] = pcap_files[i]
        values.append(orjson.dumps(msg))
        kb.append(flow["key"].encode())
    return EncodedBatch(keys=kb, values=values, schema=SCHEMA_ID)
