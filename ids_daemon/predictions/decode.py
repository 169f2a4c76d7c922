"""Typed prediction records for subscribers (RL agents, alerting): parsed and checked
from the JSON the daemon publishes (schema ``ids.prediction.v1``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

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
    kind: str  # flow | pool | capture
    protocol: str
    src_ip: str | None
    src_port: int | None
    dst_ip: str | None
    dst_port: int | None

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
            f, w, m = d["flow"], d["window"], d["model"]
            sev = d["severity"]
            if sev not in SEVERITY_RANK:
                raise MalformedPrediction(f"unknown severity {sev!r}")
            return cls(
                schema=schema, id=str(d["id"]), time=float(d["time"]), sensor=str(d["sensor"]),
                predicted_attack=str(d["predicted_attack"]), family=str(d["family"]), is_attack=bool(d["is_attack"]),
                confidence=_unit(d["confidence"], "confidence"), risk_score=_unit(d["risk_score"], "risk_score"),
                severity=sev,
                probabilities=tuple(ClassProbability(str(p["class"]), _unit(p["p"], "p")) for p in d["probabilities"]),
                flow=FlowInfo(str(f["key"]), str(f["kind"]), str(f["protocol"]), f.get("src_ip"), f.get("src_port"),
                              f.get("dst_ip"), f.get("dst_port")),
                window=WindowInfo(float(w["first_ts"]), float(w["last_ts"]), int(w["packets"]), w.get("close_reason"),
                                  w.get("history")),
                model_name=str(m["name"]), model_version=str(m["version"]),
                p_attack=_unit(d["p_attack"], "p_attack") if d.get("p_attack") is not None else None, **origin,
            )
        except MalformedPrediction:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedPrediction(f"bad or missing field: {e!r}") from None


def _unit(v: Any, name: str) -> float:
    x = float(v)
    if not 0.0 <= x <= 1.0:
        raise MalformedPrediction(f"{name} {x} outside [0, 1]")
    return x
