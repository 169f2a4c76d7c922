"""Community ID v1 (ids_daemon/predictions/community_id.py) against the reference values
published with the specification (tests/data/community_id_baseline.json, copied from
github.com/corelight/community-id-spec baseline/)."""

from __future__ import annotations

import ipaddress
import json

import numpy as np
import pytest

from ids_daemon.predictions.community_id import address_bytes, community_id, community_ids
from tests.paths import DATA

BASELINE = json.loads((DATA / "community_id_baseline.json").read_text())
FLOWS = BASELINE["table_flows"] + BASELINE["pcap_flows"]


def _name(f: dict) -> str:
    return f"{f['proto']}-{f['saddr']}-{f['sport']}-{f['daddr']}-{f['dport']}-seed{f['seed']}"


@pytest.mark.parametrize("flow", FLOWS, ids=_name)
def test_each_reference_flow(flow: dict) -> None:
    got = community_id(flow["saddr"], flow["daddr"], flow["proto"], flow["sport"], flow["dport"], seed=flow["seed"])
    assert got == flow["communityid"]


def test_the_baseline_covers_the_protocols_the_issue_names() -> None:
    protos = {(f["proto"], ":" in f["saddr"]) for f in FLOWS}
    # TCP, UDP, ICMP over IPv4; ICMPv6; TCP over IPv6; SCTP; a port-less protocol over both
    assert {(6, False), (17, False), (1, False), (58, True), (6, True), (132, False), (46, False), (46, True)} <= protos
    assert len(FLOWS) == 55


@pytest.mark.parametrize("family", [4, 6])
def test_vectorised_columns_equal_the_reference(family: int) -> None:
    """The encoder's form: whole columns at once, addresses as a uint32 column (IPv4) or
    rows of 16 bytes (IPv6), several protocols and both directions mixed in one call."""
    flows = [f for f in FLOWS if (":" in f["saddr"]) == (family == 6) and f["seed"] == 0]
    assert len(flows) >= 12

    def col(key: str) -> np.ndarray:
        packed = [ipaddress.ip_address(f[key]).packed for f in flows]
        if family == 4:
            return np.array([int.from_bytes(b, "big") for b in packed], dtype=np.uint32)
        return np.frombuffer(b"".join(packed), dtype=np.uint8).reshape(-1, 16)

    got = community_ids(col("saddr"), col("daddr"), [f["proto"] for f in flows],
                        [f["sport"] or 0 for f in flows], [f["dport"] or 0 for f in flows])
    assert got == [f["communityid"] for f in flows]


def test_address_forms_agree() -> None:
    """IPv6 as 16 bytes, 4 big-endian words or 2 halves: the same bytes in network order."""
    a = ipaddress.ip_address("2001:db8::1:2").packed
    as_bytes = np.frombuffer(a, dtype=np.uint8).reshape(1, 16)
    words = np.frombuffer(a, dtype=">u4").astype(np.uint32).reshape(1, 4)
    halves = np.frombuffer(a, dtype=">u8").astype(np.uint64).reshape(1, 2)
    for form in (words, halves):
        assert address_bytes(form).tobytes() == as_bytes.tobytes() == a
    assert address_bytes(np.array([0x0A000001], dtype=np.uint32)).tobytes() == bytes([10, 0, 0, 1])
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        address_bytes(np.zeros((1, 3), dtype=np.uint8))


def test_no_rows_no_ids() -> None:
    """A batch of pool windows only hands the hash no flow."""
    for width in (4, 16):
        empty = np.zeros((0, width), dtype=np.uint8)
        assert community_ids(empty, empty, [], [], []) == []
