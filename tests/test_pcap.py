"""Capture file formats, link types and bad input: the reader and the decoder."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ids_daemon.capture.batch import STATUS_MALFORMED, STATUS_OK, STATUS_OTHER, PacketBatch
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.errors import CaptureError

from .pcapgen import ethernet, ipv4_udp, write_pcap, write_pcapng

from .paths import PCAPS as SHARED  # noqa: E402


def read_all(path: Path, batch_size: int = 65536) -> PacketBatch:
    with PcapSource(path, batch_size=batch_size) as src:
        parts = []
        while (b := src.next_batch()) is not None:
            parts.append(b)
    return PacketBatch.concat(parts)


def _frames(n: int = 25) -> list[tuple[float, bytes]]:
    return [(1_700_000_000.0 + i * 0.001234, ethernet(ipv4_udp(sport=1000 + i, payload=bytes(i))))
            for i in range(n)]


@pytest.mark.parametrize("variant", ["le-us", "be-us", "le-ns", "be-ns", "ng-le-us", "ng-be-ns", "ng-le-ms"])
def test_every_file_format_gives_the_same_packets(tmp_path: Path, variant: str) -> None:
    frames = _frames()
    p = tmp_path / "x"
    if variant.startswith("ng"):
        res = {"us": 6, "ns": 9, "ms": 3}[variant[-2:]]
        write_pcapng(p, frames, big_endian="-be-" in variant, tsresol=res)
    else:
        write_pcap(p, frames, big_endian=variant.startswith("be"), nanos=variant.endswith("ns"))
    b = read_all(p, batch_size=7)  # several batches, so state across batches is exercised
    assert len(b) == len(frames)
    assert (b.status == STATUS_OK).all()
    assert b.sport.tolist() == [1000 + i for i in range(len(frames))]
    assert (b.dport == 53).all() and (b.proto == 17).all()
    assert b.src4[0] == 0x0A000001 and b.dst4[0] == 0x0A000002
    tol = 1e-3 if variant.endswith("ms") else 2e-6
    np.testing.assert_allclose(b.ts, [t for t, _ in frames], rtol=0, atol=tol)
    assert b.frame_len.tolist() == [14 + 28 + i for i in range(len(frames))]


def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path: Path) -> None:
    pkt = ipv4_udp(sport=7, dport=9)
    frames = [(1.0, ethernet(pkt)), (2.0, pkt), (3.0, ethernet(pkt))]
    p = write_pcapng(tmp_path / "two.pcapng", frames, linktypes=(1, 101), iface_of=[0, 1, 0])
    b = read_all(p)
    assert b.linktype.tolist() == [1, 101, 1]
    assert (b.status == STATUS_OK).all() and (b.sport == 7).all()
    assert (b.frame_len == 14 + len(pkt)).all()


@pytest.mark.parametrize("linktype,wrap", [
    (1, lambda ip: ethernet(ip)),
    (113, lambda ip: struct.pack(">HHH8sH", 0, 1, 6, bytes(8), 0x0800) + ip),  # Linux cooked v1
    (276, lambda ip: struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, bytes(8)) + ip),  # Linux cooked v2
    (101, lambda ip: ip),  # raw IP
    (12, lambda ip: ip),  # raw IP, BSD number
    (0, lambda ip: struct.pack("<I", 2) + ip),  # BSD null, little-endian host
    (0, lambda ip: struct.pack(">I", 2) + ip),  # BSD null, big-endian host
    (108, lambda ip: struct.pack(">I", 2) + ip),  # OpenBSD loop
])
def test_link_types_decode_the_same_ip_packet(tmp_path: Path, linktype: int, wrap) -> None:
    ip = ipv4_udp(src="192.0.2.1", dst="198.51.100.7", sport=5683, dport=5683, payload=b"coap", ttl=33)
    p = write_pcap(tmp_path / "l.pcap", [(5.5, wrap(ip))], linktype=linktype)
    b = read_all(p)
    assert b.status.tolist() == [STATUS_OK]
    assert b.ethertype[0] == 0x0800 and b.ip_version[0] == 4
    assert b.src4[0] == 0xC0000201 and b.dst4[0] == 0xC6336407
    assert (b.sport[0], b.dport[0], b.ttl[0], b.proto[0]) == (5683, 5683, 33, 17)
    # the extractor re-encoded every frame as Ethernet: 14 bytes + IP total length
    assert b.frame_len[0] == 14 + len(ip)


def test_vlan_tags_and_padding(tmp_path: Path) -> None:
    ip = ipv4_udp()
    frames = [(1.0, ethernet(ip, vlans=(10,))), (2.0, ethernet(ip, vlans=(10, 20))), (3.0, ethernet(ip, pad_to=60))]
    b = read_all(write_pcap(tmp_path / "v.pcap", frames))
    assert b.vlan_count.tolist() == [1, 2, 0]
    assert (b.status == STATUS_OK).all() and (b.sport == 1234).all()
    assert b.frame_len.tolist() == [18 + len(ip), 22 + len(ip), 14 + len(ip)]  # padding never counts


def test_arp_ipv6_and_other_frames(tmp_path: Path) -> None:
    arp = struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, bytes(6), bytes([10, 0, 0, 9]), bytes(6),
                      bytes([10, 0, 0, 1]))
    v6 = struct.pack(">IHBB16s16s", 0x60000000, 8, 17, 5, bytes(15) + b"\x01", bytes(15) + b"\x02") + \
        struct.pack(">HHHH", 546, 547, 8, 0)
    lldp = bytes(30)
    frames = [(1.0, ethernet(arp, 0x0806, pad_to=60)), (2.0, ethernet(v6, 0x86DD)), (3.0, ethernet(lldp, 0x88CC))]
    b = read_all(write_pcap(tmp_path / "m.pcap", frames))
    assert b.status.tolist() == [STATUS_OK, STATUS_OK, STATUS_OTHER]
    assert b.arp_op[0] == 2 and b.src4[0] == 0x0A000009 and b.dst4[0] == 0x0A000001 and b.frame_len[0] == 60
    assert b.ip_version[1] == 6 and b.proto[1] == 17 and (b.sport[1], b.dport[1]) == (546, 547)
    assert b.ttl[1] == 5 and b.src6[1, 15] == 1 and b.dst6[1, 15] == 2


def test_fragments_and_cut_short_transport_headers(tmp_path: Path) -> None:
    ip = bytearray(ipv4_udp(sport=4000, dport=4001))
    later = bytearray(ip)
    struct.pack_into(">H", later, 6, 0x0010)  # fragment offset 16 (x8 bytes): no UDP header here
    first = bytearray(ip)
    struct.pack_into(">H", first, 6, 0x2000)  # MF, offset 0: the header is there
    cut = bytearray(ipv4_udp())[:24]  # IPv4 header + 4 bytes: UDP header cut short
    struct.pack_into(">H", cut, 2, 24)
    frames = [(1.0, ethernet(bytes(first))), (2.0, ethernet(bytes(later))), (3.0, ethernet(bytes(cut)))]
    b = read_all(write_pcap(tmp_path / "f.pcap", frames))
    assert (b.status == STATUS_OK).all()
    assert b.l4_ok.tolist() == [True, False, False]
    assert b.frag_mf[0] and b.frag_offset[1] == 16
    assert b.sport[0] == 4000 and b.sport[1] == 0 and b.proto[1] == 17


def test_malformed_frames_are_marked_with_a_reason(tmp_path: Path) -> None:
    good = ipv4_udp()
    bad_ihl = bytearray(good)
    bad_ihl[0] = 0x44  # header length 16 bytes
    too_long = bytearray(good)
    struct.pack_into(">H", too_long, 2, 1500)  # claims more bytes than the frame holds
    frames = [(1.0, ethernet(bytes(bad_ihl))), (2.0, ethernet(bytes(too_long))), (3.0, ethernet(good)),
              (4.0, ethernet(b"\x45\x00"))]
    b = read_all(write_pcap(tmp_path / "bad.pcap", frames))
    assert b.status.tolist() == [STATUS_MALFORMED, STATUS_MALFORMED, STATUS_OK, STATUS_MALFORMED]
    assert b.reason.tolist() == [4, 5, 0, 4]


def test_snap_length_cut_keeps_the_true_frame_length(tmp_path: Path) -> None:
    ip = ipv4_udp(payload=bytes(300))
    frame = ethernet(ip)
    p = write_pcap(tmp_path / "snap.pcap", [(1.0, frame[:64])], orig_len=[len(frame)])
    b = read_all(p)
    assert b.status[0] == STATUS_OK and b.l4_ok[0]
    assert b.frame_len[0] == len(frame)  # from the IP header, not the 64 captured bytes


@pytest.mark.parametrize("name", sorted(p.name for p in SHARED.glob("*")) if SHARED.exists() else [])
def test_shared_captures_read_without_a_crash(name: str) -> None:
    b = read_all(SHARED / name)
    assert len(b) >= 1
    expect_malformed = name.startswith(("fuzz", "malformed"))
    assert ((b.status == STATUS_MALFORMED).any()) == expect_malformed


def test_shared_captures_cover_each_link_type() -> None:
    seen = {}
    for p in SHARED.glob("*"):
        b = read_all(p)
        for lt in np.unique(b.linktype).tolist():
            seen[lt] = p.name
    assert {1, 113, 0, 101} <= set(seen), seen


def test_empty_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_text("hello world, not a capture\n")
    (tmp_path / "short").write_bytes(struct.pack("<I", 0xA1B2C3D4) + b"\x02\x00")
    for name, words in (("empty", "empty file"), ("text", "not a pcap"), ("short", "truncated")):
        with pytest.raises(CaptureError, match=words) as ei:
            PcapSource(tmp_path / name).open()
        assert "\n" not in str(ei.value)
    with pytest.raises(CaptureError, match="cannot open"):
        PcapSource(tmp_path / "missing.pcap").open()


def test_unsupported_link_type(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "wifi.pcap", [(1.0, b"\x00" * 40)], linktype=105)
    with pytest.raises(CaptureError, match="unsupported link type 105"):
        PcapSource(p).open()
    q = write_pcapng(tmp_path / "wifi.pcapng", [(1.0, b"\x00" * 40)], linktypes=(105,))
    with pytest.raises(CaptureError, match="unsupported link type 105"):
        read_all(q)


def test_truncated_file_returns_every_complete_packet_first(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "t.pcap", _frames(10))
    data = p.read_bytes()
    p.write_bytes(data[:-5])  # cut inside the last record
    src = PcapSource(p, batch_size=4)
    src.open()
    got = 0
    with pytest.raises(CaptureError, match=r"truncated.*record #10.*after 9 complete packets"):
        while (b := src.next_batch()) is not None:
            got += len(b)
    assert got == 9
    ng = write_pcapng(tmp_path / "t.pcapng", _frames(10))
    ng.write_bytes(ng.read_bytes()[:-40])  # inside the statistics block / last packet
    with pytest.raises(CaptureError, match="truncated"):
        read_all(ng)


def test_corrupt_record_length(tmp_path: Path) -> None:
    p = write_pcap(tmp_path / "c.pcap", _frames(3))
    data = bytearray(p.read_bytes())
    first_rec = 24
    second_rec = first_rec + 16 + struct.unpack_from("<I", data, first_rec + 8)[0]
    struct.pack_into("<I", data, second_rec + 8, 0x7FFFFFF0)
    p.write_bytes(bytes(data))
    src = PcapSource(p)
    src.open()
    b = src.next_batch()
    assert len(b) == 1  # the packet before the corruption
    with pytest.raises(CaptureError, match="corrupt record"):
        src.next_batch()


def test_records_larger_than_a_chunk(tmp_path: Path) -> None:
    big = ethernet(ipv4_udp(payload=bytes(60000)))
    frames = [(1.0, big), (2.0, big), (3.0, ethernet(ipv4_udp()))]
    p = write_pcap(tmp_path / "big.pcap", frames)
    src = PcapSource(p, chunk_bytes=1 << 16)
    src.open()
    parts = []
    while (b := src.next_batch()) is not None:
        parts.append(b)
    b = PacketBatch.concat(parts)
    assert len(b) == 3 and (b.status == STATUS_OK).all()
    assert b.frame_len[0] == len(big)
