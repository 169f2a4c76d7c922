"""Alerts as Suricata EVE ``alert`` records (eve.json): one JSON object per line, valid
under Suricata's published EVE JSON Schema, so SIEMs ingest them with the Suricata
parsers they already have (Elastic's Suricata module, Wazuh, Splunk's TA, Security
Onion). The mapping is documented in docs/alerts-eve.md.

The schema forbids keys it does not name at the top level and in ``alert``; everything
of ours that EVE has no field for goes into ``alert.metadata`` as arrays of strings (the
form Suricata writes rule metadata in). A value we do not have (a detector finding's
ports, a crowd flood's source, a summary's flow) is left out, never written as null.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import zlib
from datetime import datetime, timezone
from typing import Any, BinaryIO

import orjson

from ...errors import ConfigError
from ...model.classes import FAMILIES
from ...predictions.community_id import community_id as _community_id
from .alert import Alert, OutputStats
from .config import EVE_SID_BASE

log = logging.getLogger("ids_daemon.consumers.alerts")

# alert severity -> EVE alert.severity (1 high .. 3 low, Suricata's rule priority)
EVE_SEVERITY: dict[str, int] = {"critical": 1, "high": 1, "medium": 2, "low": 3}
# alert severity -> alert.metadata.signature_severity, as Emerging Threats rules spell it
SIGNATURE_SEVERITY: dict[str, str] = {"critical": "Critical", "high": "Major", "medium": "Minor",
                                      "low": "Informational"}

# Fixed signature_id offsets (sid = sid_base + offset), from the taxonomy's order of
# families and classes (model/classes.py, whose order is fixed: CLASSES_34 indexes models):
# family F (index 1..7) owns F*100 .. F*100+99: F*100 is the family itself (an 8-class
# model), F*100+k its k-th CICIoT2023 class. tests/test_alerts_eve.py pins the documented ids.
_FAMILY_CLASSES = {fam: members for fam, members in FAMILIES.items() if fam != "Benign"}
SID_OFFSETS: dict[str, int] = {}
for _f, (_fam, _members) in enumerate(_FAMILY_CLASSES.items(), start=1):
    SID_OFFSETS[_fam] = _f * 100
    for _k, _cls in enumerate(_members, start=1):
        SID_OFFSETS[_cls] = _f * 100 + _k
SID_ATTACK = 900  # "Attack" of a 2-class model
SID_RATE_LIMIT = 999  # a rate-limit summary
SID_OTHER = 10_000  # other label sets: 10_000 + crc32(class) % 90_000
SID_OFFSETS["Attack"] = SID_ATTACK
_SID_LOWER = {k.lower(): v for k, v in SID_OFFSETS.items()}

# our flow.protocol -> EVE proto (Suricata's spelling)
_PROTO = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "IPv6-ICMP", "icmp6": "IPv6-ICMP",
          "ipv6-icmp": "IPv6-ICMP", "sctp": "SCTP", "igmp": "IGMP", "gre": "GRE"}
_PROTO_NUMBER = {"tcp": 6, "udp": 17, "sctp": 132}  # the protocols a Community ID is computed for here
_PORTED = frozenset({"tcp", "udp", "sctp"})  # EVE writes ports for these (ICMP gets icmp_type/code instead)

FLOW_ID_MASK = 0x0007_FFFF_FFFF_FFFF  # 51 bits, as Suricata masks its flow_id: exact in any JSON reader


def signature_id(attack: str, sid_base: int = EVE_SID_BASE) -> int:
    """The fixed signature_id of a class (any case), a family, or another label."""
    off = _SID_LOWER.get(attack.lower())
    if off is None:
        off = SID_OTHER + zlib.crc32(attack.encode("utf-8")) % 90_000
    return sid_base + off


def flow_id(key: str) -> int:
    """A stable positive 64-bit integer (51 bits used) for a flow key: the same key gives the
    same id in every run and on every host, different keys practically never collide."""
    v = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") & FLOW_ID_MASK
    return v or 1


def eve_timestamp(t: float) -> str:
    """``t`` (epoch seconds) as EVE writes time: 2026-12-06T18:48:08.730210+0000."""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def eve_proto(protocol: str | None) -> str | None:
    """Our flow.protocol as EVE's ``proto`` (TCP, UDP, ICMP, IPv6-ICMP, ...; a number as
    text); None for what is not an IP protocol (ARP)."""
    if not protocol:
        return None
    p = protocol.lower()
    if p in _PROTO:
        return _PROTO[p]
    if p.isdigit():
        return p
    if p == "arp":
        return None
    return protocol.upper()


def _ip_version(*addrs: str | None) -> int | None:
    for a in addrs:
        if a:
            try:
                return ipaddress.ip_address(a).version
            except ValueError:
                continue
    return None


def _ms(v: Any) -> list[str]:
    return [str(v)]


def _num(x: float) -> str:
    return f"{x:.4f}"


def eve_record(alert: Alert, *, gid: int = 1, sid_base: int = EVE_SID_BASE) -> dict[str, Any]:
    """One alert as an EVE ``alert`` record (a dict in EVE's key order)."""
    p = alert.prediction
    summary = alert.kind == "summary" or p is None
    rec: dict[str, Any] = {}
    t = alert.packets_last if alert.packets_last is not None else alert.time
    rec["timestamp"] = eve_timestamp(t)
    fl = None if summary else p.flow  # type: ignore[union-attr]
    if fl is not None:
        rec["flow_id"] = flow_id(fl.key)
    if p is not None and not summary and p.interface:
        rec["in_iface"] = p.interface
    rec["event_type"] = "alert"
    proto_l = (fl.protocol or "").lower() if fl is not None else ""
    if fl is not None:
        ported = proto_l in _PORTED
        if fl.src_ip:
            rec["src_ip"] = fl.src_ip
            if ported and fl.src_port is not None:
                rec["src_port"] = fl.src_port
        if fl.dst_ip:
            rec["dest_ip"] = fl.dst_ip
            if ported and fl.dst_port is not None:
                rec["dest_port"] = fl.dst_port
        ipv = _ip_version(fl.src_ip, fl.dst_ip)
        if ipv is not None:
            rec["ip_v"] = ipv
        proto = eve_proto(fl.protocol)
        if proto is not None:
            rec["proto"] = proto
        cid = fl.community_id or _computed_community_id(fl)
        if cid:
            rec["community_id"] = cid
    if alert.sensor:
        rec["host"] = alert.sensor
    rec["alert"] = _alert_object(alert, gid, sid_base, summary)
    if fl is not None and alert.packets_first is not None and alert.packets_last is not None:
        flow: dict[str, Any] = {}
        if "src_ip" in rec:
            flow["src_ip"] = rec["src_ip"]
        if "dest_ip" in rec:
            flow["dest_ip"] = rec["dest_ip"]
        if "src_port" in rec:
            flow["src_port"] = rec["src_port"]
        if "dest_port" in rec:
            flow["dest_port"] = rec["dest_port"]
        flow["start"] = eve_timestamp(alert.packets_first)
        flow["end"] = eve_timestamp(alert.packets_last)
        rec["flow"] = flow
    return rec


def _computed_community_id(fl: Any) -> str | None:
    """A Community ID for a 5-tuple the prediction did not carry one for (older messages)."""
    num = _PROTO_NUMBER.get((fl.protocol or "").lower())
    if num is None or not fl.src_ip or not fl.dst_ip or fl.src_port is None or fl.dst_port is None:
        return None
    try:
        return _community_id(fl.src_ip, fl.dst_ip, num, fl.src_port, fl.dst_port)
    except ValueError:
        return None


def _alert_object(alert: Alert, gid: int, sid_base: int, summary: bool) -> dict[str, Any]:
    p = alert.prediction
    md: dict[str, list[str]] = {}
    if summary:
        sid = sid_base + SID_RATE_LIMIT
        fam = alert.family if alert.family != "*" else "several"
        sig = (f"IDS-DAEMON rate limit: {alert.rate_limited} alerts held back ({alert.count} predictions, "
               f"{len(alert.targets)} targets, family {fam})")
        category = alert.family if alert.family != "*" else "Rate-limited alerts"
    else:
        assert p is not None
        sid = signature_id(alert.attack, sid_base)
        model = p.model_name
        if model.startswith("detector:"):
            how = model
        else:
            pa = alert.max_p_attack if alert.max_p_attack is not None else p.p_attack
            how = f"{model} {p.model_version}" + (f", p_attack {pa:.2f}" if pa is not None else "")
        where = alert.target or p.flow.key
        sig = f"IDS-DAEMON {alert.attack}: {where} ({how})"
        if alert.kind == "update":
            sig += f", {alert.count} more predictions"
        category = alert.family
    md["ids_class"] = [alert.attack]
    if len(alert.attacks) > 1:
        md["ids_classes"] = [f"{k}={v}" for k, v in sorted(alert.attacks.items())]
    md["ids_family"] = [alert.family]
    md["ids_severity"] = [alert.severity]
    md["signature_severity"] = [SIGNATURE_SEVERITY[alert.severity]]
    md["risk_score"] = [_num(alert.max_risk)]
    if alert.max_p_attack is not None:
        md["p_attack"] = [_num(alert.max_p_attack)]
    if p is not None and not summary:
        if p.model_name.startswith("detector:"):
            md["detector"] = [p.model_name.split(":", 1)[1]]
        else:
            md["model"] = [p.model_name]
            md["model_version"] = [p.model_version]
        if p.pcap_file:  # where --alert-pcap wrote the packets (Suricata's pcap-log has no alert field)
            md["pcap_file"] = [p.pcap_file]
        md["flow_kind"] = [p.flow.kind]
        md["flow_key"] = [p.flow.key]
        md["protocol"] = [p.flow.protocol]
    if alert.targets:
        md["attack_target"] = list(alert.targets)
    md["ids_alert_id"] = [alert.id]
    md["ids_alert_kind"] = [alert.kind]
    if alert.incident:
        md["ids_incident"] = [alert.incident]
    md["ids_predictions"] = [str(alert.count)]
    if alert.examples:
        md["ids_prediction_ids"] = list(alert.examples)
    md["ids_alert_time"] = [eve_timestamp(alert.time)]
    out: dict[str, Any] = {"action": "allowed", "gid": gid, "signature_id": sid, "rev": 1, "signature": sig,
                           "category": category, "severity": EVE_SEVERITY[alert.severity]}
    if not summary and p is not None:
        fl = p.flow
        ported = (fl.protocol or "").lower() in _PORTED
        if fl.src_ip:
            out["source"] = {"ip": fl.src_ip, **({"port": fl.src_port} if ported and fl.src_port is not None else {})}
        if fl.dst_ip:
            out["target"] = {"ip": fl.dst_ip, **({"port": fl.dst_port} if ported and fl.dst_port is not None else {})}
    out["metadata"] = md
    return out


def eve_json(alert: Alert, *, gid: int = 1, sid_base: int = EVE_SID_BASE) -> bytes:
    return orjson.dumps(eve_record(alert, gid=gid, sid_base=sid_base))


class EveOutput:
    """Suricata EVE ``alert`` records, one JSON line per alert appended to a file (flushed
    after each). With ``max_bytes`` the file is rotated before it would grow past it:
    PATH -> PATH.1 -> ... -> PATH.KEEP (the oldest dropped)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = 0, keep: int = 5, gid: int = 1,
                 sid_base: int = EVE_SID_BASE):
        self.path = str(path)
        self.max_bytes, self.keep = int(max_bytes), max(1, int(keep))
        self.gid, self.sid_base = int(gid), int(sid_base)
        self.name = f"eve:{self.path}"
        self.stats = OutputStats()
        self._fh: BinaryIO | None = None
        self._size = 0

    def open(self) -> None:
        try:
            self._fh = open(self.path, "ab")
            self._size = self._fh.tell()
        except OSError as e:
            raise ConfigError(f"alerts output eve {self.path}: cannot open: {e.strerror}") from None

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        self._fh = None
        for i in range(self.keep - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._fh = open(self.path, "ab")
        self._size = 0

    def send(self, alert: Alert) -> None:
        try:
            line = eve_json(alert, gid=self.gid, sid_base=self.sid_base) + b"\n"
        except Exception as e:  # noqa: BLE001 - one odd alert must not stop the others
            self.stats.failed += 1
            log.warning("alert output %s: alert %s not converted: %s", self.name, alert.id, e)
            return
        try:
            if self._fh is None:
                self.open()
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._fh.write(line)  # type: ignore[union-attr]
            self._fh.flush()  # type: ignore[union-attr]
            self._size += len(line)
            self.stats.sent += 1
        except (OSError, ConfigError) as e:
            self.stats.failed += 1
            log.warning("alert output %s: %s", self.name, e)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as e:
                log.warning("alert output %s: %s", self.name, e)
        self._fh = None
