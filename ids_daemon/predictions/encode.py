"""Prediction schema v1: building and encoding predictions (orjson), and the JSON Schema.

The schema file ships with the package (``predictions/prediction.v1.schema.json``) so that
subscribers can validate what they receive.
"""

from __future__ import annotations

import json
from functools import lru_cache
from itertools import repeat
from importlib import resources
from typing import Any, Iterable

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


_FLOW_CACHE: dict[int, tuple[bytes, str]] = {}
_FLOW_CACHE_MAX = 1 << 18


def _flows(w: Any) -> list[tuple[bytes, str]]:
    """Each window's key (the Kafka message key) and its ``flow`` object as JSON text, cached by
    key hash: a key predicts again and again, and its identity (endpoints in initiator order, or
    the pool's host, and a flow's Community ID) is fixed."""
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
            _FLOW_CACHE[hashes[i]] = (keys[j].encode(), orjson.dumps({
                "key": keys[j], "kind": _KIND_NAMES.get(int(m.kind[j]), "capture"), "protocol": proto_name(m.proto[j]),
                "src_ip": src[j] if fl else None, "src_port": int(m.sport[j]) if fl else None,
                "dst_ip": dst[j], "dst_port": int(m.dport[j]) if fl else None,
                "community_id": cid[j],
            }).decode())
    return [_FLOW_CACHE[h] for h in hashes]


def _numbers(values: list[Any]) -> list[str]:
    """orjson's text of each number (or bool, or None) in ``values``, from one call: the text
    it writes for the same value inside an object, so the messages below are byte for byte
    what ``orjson.dumps`` of their dicts writes (floats in the shortest form that reads back,
    NaN as null)."""
    return orjson.dumps(values).decode()[1:-1].split(",") if values else []


def _floats(columns: list[np.ndarray]) -> list[str]:
    """`_numbers` of the columns' values one after the other, from one ``orjson.dumps`` of
    the numpy array (no Python float per value: the same text, orjson writes a float64 the
    same way from either; NaN and infinities as null) when every column holds floats."""
    if all(c.dtype.kind == "f" for c in columns):
        a = np.concatenate(columns, dtype=np.float64)
        return orjson.dumps(a, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",") if len(a) else []
    return _numbers([v for c in columns for v in c.tolist()])


def _strings(values: list[str]) -> list[str]:
    """orjson's text of each string in ``values`` (quoted, escaped), from one call: inside a
    dumped string every quote is escaped, so an unescaped ``","`` is always a separator."""
    if not values:
        return []
    inner = orjson.dumps(values).decode()[2:-2].split('","')
    return [f'"{x}"' for x in inner]


def _json(v: Any) -> str:
    return orjson.dumps(v).decode()


def _column(table: np.ndarray, index: np.ndarray) -> list[str]:
    """``table[i]`` for each ``i`` of ``index``, gathered in C (an object array's take)."""
    return table[index].tolist()


@lru_cache(maxsize=8)
def _tables(classes: tuple[str, ...], families: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """The per-class, per-severity and per-close-reason texts of a message, as object arrays
    (`_column`'s tables), made once per model rather than per batch (a tenth of encoding a
    batch of 1,024)."""
    def table(texts: list[str]) -> np.ndarray:
        return np.array(texts, dtype=object)

    entry = [f'{{"class":{_json(c)},"p":' for c in classes]  # a top-k entry opens with its class
    return (table(entry), table(["}," + e for e in entry]),  # ... and closes the one before it
            table([f'{_json(c)},"family":{_json(f)},"is_attack":' for c, f in zip(classes, families)]),
            table([f',"severity":{_json(v)},"probabilities":[' for v in SEVERITIES]),
            table([f',"close_reason":{_json(name)},"history":' for name in REASON_NAMES]))


def encode_predictions(seq: Any, probs: np.ndarray, decision: tuple[np.ndarray, ...], severity: np.ndarray, *,
                       classes: list[str], families: list[str], model: dict[str, str], sensor: str, id_prefix: str,
                       first_id: int, top_k: int, now: float, interface: str | None = None,
                       evidence: list[str] | None = None,
                       attribution: list[str | None] | None = None,
                       pcap_files: list[str | None] | None = None) -> EncodedBatch:
    """One JSON object per sequence of ``seq`` (a SequenceBatch), from its probabilities
    and the worker's ``decision`` (`ids_daemon.inference.risk.decide`) and severities.
    ``interface``: the live capture interface (None for a file: no interface saw it).
    ``evidence``: one sentence per sequence (its last window's facts), ``attribution``:
    per sequence, the columns that pushed p_attack most as JSON text
    (`ids_daemon.inference.attribution.top_columns_json`; None: not computed for it);
    both are optional fields of the record (docs/evidence.md). ``pcap_files``: per sequence,
    the alert pcap file its packets are written to (None: not recorded).

    Each object is written as ``orjson.dumps`` of its dict would write it (key order, number
    text, escapes; tests/test_predictions.py reads every message back and dumps it again), but
    from text made once per batch (the fields every message shares), per class (its names) or
    per flow (its identity, cached): building a dict of dicts per prediction and dumping it
    took over half of `InferenceWorker.predict` with the model's fast path. Every number comes
    from one ``orjson.dumps`` of the batch's numbers; per-row texts are gathered from per-class
    tables in C (an object array's take) and the messages written by one f-string each."""
    w = seq.windows
    n = len(w)
    if not n:
        return EncodedBatch(keys=[], values=[], schema=SCHEMA_ID)
    pred, conf, risk, p_attack, is_attack = decision
    k = min(top_k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    flows = _flows(w)
    # every number (and is_attack's bools) from one orjson call, sliced back into columns
    nums = _floats([w.first_ts, w.last_ts, p_attack, conf, risk, np.take_along_axis(probs, top, axis=1).ravel()])
    first, last, pa, cf, rs = (nums[j * n:(j + 1) * n] for j in range(5))
    att = _numbers(is_attack.tolist())
    entry, later_entry, named_t, sev_t, reason_t = _tables(tuple(classes), tuple(families))
    parts: list[list[str]] = []
    for j in range(k):
        parts += [_column(entry if j == 0 else later_entry, top[:, j]), nums[5 * n + j::k]]
    probs_text = list(map("".join, zip(*parts)))
    named = _column(named_t, pred)
    sev = _column(sev_t, severity)
    reason = _column(reason_t, w.reason)
    head = f'{{"schema":{_json(SCHEMA_ID)},"id":{_json(f"{id_prefix}-")[:-1]}'
    shared = (f'","time":{_json(now)},"timestamp":{_json(iso8601(now))},"sensor":{_json(sensor)},'
              f'"interface":{_json(interface)},"predicted_attack":')
    tail = f'}},"model":{_json(model)}' + (',"evidence":' if evidence is not None else "")
    ev = _strings(evidence) if evidence is not None else repeat("")
    # the optional fields after the evidence, per row ("" where a row has none)
    opt: Iterable[str] = repeat("")
    if attribution is not None or pcap_files is not None:
        att_t = attribution if attribution is not None else repeat(None)
        pcap_t = pcap_files if pcap_files is not None else repeat(None)
        opt = [("" if a is None else f',"attribution":{a}') + ("" if f is None else f',"pcap_file":{_json(f)}')
               for a, f, _ in zip(att_t, pcap_t, range(n))]
    texts = [f'{head}{i}{shared}{nm}{at},"p_attack":{p},"confidence":{c},"risk_score":{r}{sv}{pt}}}],"flow":{fl[1]},'
             f'"window":{{"first_ts":{ft},"last_ts":{lt},"packets":{pk}{rn}{h}{tail}{e}{o}}}'
             for i, nm, at, p, c, r, sv, pt, fl, ft, lt, pk, rn, h, e, o
             in zip(range(first_id, first_id + n), named, att, pa, cf, rs, sev, probs_text, flows, first, last,
                    w.packets.tolist(), reason, seq.lengths.tolist(), ev, opt)]  # one message per prediction
    return EncodedBatch(keys=[key for key, _ in flows], values=list(map(str.encode, texts)), schema=SCHEMA_ID)
