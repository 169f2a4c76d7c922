"""Typed prediction records for subscribers (RL agents, alerting): parsed and checked
from the JSON the daemon publishes (schema ``ids.prediction.v1``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from .timestamps import time_problem
from .vocabulary import SEVERITY_RANK

SUPPORTED_MAJOR = 1


class MalformedPrediction(ValueError):
    """A message that is not a valid prediction (bad JSON, a missing or mistyped field)."""


class UnknownSchema(ValueError):
    """A prediction of a schema major version this client does not read."""


@dataclass(frozen=True, slots=True)
class ClassProbability:
    name: str
    p: float


@dataclass(frozen=True, slots=True)
class FlowInfo:
    key: str
    kind: str  # flow | pool | capture | detector
    protocol: str
    src_ip: str | None
    src_port: int | None
    dst_ip: str | None
    dst_port: int | None
    community_id: str | None = None  # flows only ("1:..."); absent in older messages

    @property
    def host(self) -> str | None:
        """The host the window is about: a pool's host, a flow's responder."""
        return self.dst_ip


@dataclass(frozen=True, slots=True)
class WindowInfo:
    first_ts: float
    last_ts: float
    packets: int
    close_reason: str | None
    history: int | None


@dataclass(frozen=True, slots=True)
class Prediction:
    """One classified sequence (see ids_daemon/predictions/prediction.v1.schema.json)."""

    schema: str
    id: str
    time: float
    sensor: str
    predicted_attack: str
    family: str
    is_attack: bool
    confidence: float
    risk_score: float
    severity: str
    probabilities: tuple[ClassProbability, ...]
    flow: FlowInfo
    window: WindowInfo
    model_name: str
    model_version: str
    p_attack: float | None = None  # 1 - P(benign); absent in messages older than operating points
    timestamp: str | None = None  # `time` as ISO 8601 UTC; absent in older messages
    interface: str | None = None  # the live capture interface; None for a file or an older message
    evidence: str | None = None  # the fact a detector established, or the model's window in a sentence (v1.3)
    pcap_file: str | None = None  # the alert pcap holding this prediction's packets (v1.4, --alert-pcap)
    # where it came from, when read from Kafka
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def severity_rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    @classmethod
    def from_json(cls, raw: bytes | str, **origin: Any) -> "Prediction":
        """Parse and check one message; raises `UnknownSchema` or `MalformedPrediction`."""
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise MalformedPrediction(f"not JSON: {e}") from None
        return cls.from_dict(d, **origin)

    @classmethod
    def from_dict(cls, d: Any, **origin: Any) -> "Prediction":
        if not isinstance(d, dict):
            raise MalformedPrediction("not a JSON object")
        schema = d.get("schema")
        if not isinstance(schema, str) or not schema.startswith("ids.prediction.v"):
            raise MalformedPrediction(f"no ids.prediction schema field (got {schema!r})")
        try:
            major = int(schema.rsplit(".v", 1)[1].split(".")[0])
        except ValueError:
            raise MalformedPrediction(f"unreadable schema version {schema!r}") from None
        if major != SUPPORTED_MAJOR:
            raise UnknownSchema(f"schema {schema} (this client reads v{SUPPORTED_MAJOR})")
        try:
            f, w, m = _obj(d, "flow"), _obj(d, "window"), _obj(d, "model")
            sev = _str(d, "severity")
            if sev not in SEVERITY_RANK:
                raise MalformedPrediction(f"unknown severity {sev!r}")
            t = _num(d, "time")
            problem = time_problem(t)
            if problem:
                raise MalformedPrediction(problem)
            probs = d.get("probabilities")
            if not isinstance(probs, list) or not probs:
                raise MalformedPrediction("probabilities: not a non-empty list")
            return cls(
                schema=schema, id=_str(d, "id"), time=t, sensor=_str(d, "sensor"),
                predicted_attack=_str(d, "predicted_attack"), family=_str(d, "family"),
                is_attack=_bool(d, "is_attack"), confidence=_unit(d, "confidence"),
                risk_score=_unit(d, "risk_score"), severity=sev,
                probabilities=tuple(ClassProbability(_str(_obj(p), "class"), _unit(p, "p")) for p in probs),
                flow=FlowInfo(_str(f, "key", "flow."), _str(f, "kind", "flow."), _str(f, "protocol", "flow."),
                              _str(f, "src_ip", "flow.", None), _port(f, "src_port"),
                              _str(f, "dst_ip", "flow.", None), _port(f, "dst_port"),
                              _str(f, "community_id", "flow.", None)),
                window=WindowInfo(_num(w, "first_ts", "window."), _num(w, "last_ts", "window."),
                                  _int(w, "packets", "window.", lo=1), _str(w, "close_reason", "window.", None),
                                  _int(w, "history", "window.", None, lo=1)),
                model_name=_str(m, "name", "model."), model_version=_str(m, "version", "model."),
                p_attack=_unit(d, "p_attack", None), timestamp=_str(d, "timestamp", "", None),
                interface=_str(d, "interface", "", None), evidence=_str(d, "evidence", "", None),
                pcap_file=_str(d, "pcap_file", "", None), **origin,
            )
        except MalformedPrediction:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedPrediction(f"bad or missing field: {e!r}") from None


# Field readers: JSON types are checked, never coerced (str("false") or bool("false") would
# turn a wrong message into a plausible one). ``absent`` is what an optional field that is
# missing or null reads as; without it the field is required.
_REQUIRED: Any = object()


def _get(d: dict, key: str, where: str, absent: Any) -> Any:
    v = d.get(key)
    if v is None:
        if absent is _REQUIRED:
            raise MalformedPrediction(f"{where}{key}: missing")
        return absent
    return v


def _obj(d: Any, key: str | None = None) -> dict:
    v = d if key is None else d.get(key)
    if not isinstance(v, dict):
        raise MalformedPrediction(f"{key or 'probabilities[]'}: not an object")
    return v


def _str(d: dict, key: str, where: str = "", absent: Any = _REQUIRED) -> Any:
    v = _get(d, key, where, absent)
    if v is not absent and not isinstance(v, str):
        raise MalformedPrediction(f"{where}{key}: expected a string, got {type(v).__name__}")
    return v


def _bool(d: dict, key: str, where: str = "") -> bool:
    v = _get(d, key, where, _REQUIRED)
    if not isinstance(v, bool):
        raise MalformedPrediction(f"{where}{key}: expected true or false, got {v!r:.40}")
    return v


def _num(d: dict, key: str, where: str = "", absent: Any = _REQUIRED) -> Any:
    v = _get(d, key, where, absent)
    if v is absent:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MalformedPrediction(f"{where}{key}: expected a number, got {type(v).__name__}")
    x = float(v)
    if not math.isfinite(x):
        raise MalformedPrediction(f"{where}{key}: {x} is not finite")
    return x


def _int(d: dict, key: str, where: str = "", absent: Any = _REQUIRED, lo: int = 0, hi: int | None = None) -> Any:
    v = _get(d, key, where, absent)
    if v is absent:
        return v
    if isinstance(v, bool) or not isinstance(v, int):
        raise MalformedPrediction(f"{where}{key}: expected an integer, got {v!r:.40}")
    if v < lo or (hi is not None and v > hi):
        raise MalformedPrediction(f"{where}{key}: {v} outside [{lo}, {hi if hi is not None else 'inf'}]")
    return v


def _port(f: dict, key: str) -> int | None:
    return _int(f, key, "flow.", None, lo=0, hi=65535)


def _unit(d: dict, key: str, absent: Any = _REQUIRED) -> Any:
    x = _num(d, key, "", absent)
    if x is not absent and not 0.0 <= x <= 1.0:
        raise MalformedPrediction(f"{key} {x} outside [0, 1]")
    return x
