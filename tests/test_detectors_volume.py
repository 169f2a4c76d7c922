"""Floods from one or a few hosts (`detector:volume`): every flood kind at 1 k, 10 k and 50 k
packets/s is flagged with its family, benign bulk transfers are not, scans stay scans, and
the state stays bounded. Captures are written by `trainer.synth.floods` (struct-packed
frames, read back by the daemon's pcap reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ids_daemon.capture.batch import PacketBatch
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import DetectorsConfig, VolumeDetectorConfig
from ids_daemon.detectors import DETECTOR_CLASSES, DetectorSet
from ids_daemon.detectors.volume import VolumeDetector
from trainer.bysource import family_key
from trainer.synth.floods import (ATTACKER, BENIGN, VICTIM, FLOOD_CLASS, SYN, _fragments, _Writer, _sorted, benign, flood,
                                  write_pcap)

C = {c: i for i, c in enumerate(DETECTOR_CLASSES)}
FAMILY = np.array([family_key(c) for c in DETECTOR_CLASSES] + [""], dtype=object)


def run(tmp_path: Path, frames: list, cfg: DetectorsConfig | None = None, batch_size: int = 65536):
    path = write_pcap(tmp_path / "x.pcap", frames)
    ds = DetectorSet(cfg)
    classes, findings = [], []
    with PcapSource(path, batch_size=batch_size) as src:
        while (b := src.next_batch()) is not None:
            r = ds.process(b)
            classes.append(r.frame_class)
            findings += r.findings
    return np.concatenate(classes), findings, ds


# (rate, seconds): a few thousand to a few ten thousand frames each
RATES = [(1000, 2.0), (10000, 0.5), (50000, 0.2)]


@pytest.mark.parametrize("kind", sorted(FLOOD_CLASS))
@pytest.mark.parametrize("rate, seconds", RATES, ids=[f"{r // 1000}k" for r, _ in RATES])
def test_floods_from_one_host_are_flagged_with_their_family(tmp_path: Path, kind: str, rate: int, seconds: float) -> None:
    frames, attack = flood(kind, rate, seconds, seed=rate)
    fc, findings, _ = run(tmp_path, frames)
    att = np.asarray(attack)
    assert (fc[att] >= 0).mean() >= 0.95
    assert (FAMILY[fc[att]] == family_key(FLOOD_CLASS[kind])).mean() >= 0.95
    named = np.bincount(fc[att][fc[att] >= 0], minlength=len(DETECTOR_CLASSES)).argmax()
    assert DETECTOR_CLASSES[named] == FLOOD_CLASS[kind]
    assert (fc[~att] == -1).all()  # the victim's own lookups meanwhile
    vol = [f for f in findings if f.detector == "volume"]
    assert vol and {f.attacker for f in vol} == {ATTACKER} and {f.victim for f in vol} == {VICTIM}


@pytest.mark.parametrize("kind", BENIGN)
def test_benign_bulk_transfers_flag_nothing(tmp_path: Path, kind: str) -> None:
    frames, _ = benign(kind, seconds=4.0, megabytes=30.0)
    fc, findings, _ = run(tmp_path, frames)
    assert len(frames) > 4000
    assert (fc == -1).all() and not findings


@pytest.mark.parametrize("proto, cls", [(17, None), (1, "DDoS-ICMP_Fragmentation"), (6, "DDoS-ACK_Fragmentation"),
                                        (50, None)])
@pytest.mark.parametrize("answered", [True, False])
def test_fragments_answered_by_datagrams_are_an_exchange(tmp_path: Path, proto: int, cls: str | None,
                                                          answered: bool) -> None:
    """2,000 datagrams of 3,000 bytes in 2 s (three fragments each) from one host to another. The
    host answering every datagram with one of its own (UDP, or the tunnel's protocol: ESP here)
    makes it an exchange; fragmented pings and TCP segments at that rate are a flood however
    answered (the echo replies, the resets); unanswered, every protocol's are a flood."""
    w = _Writer()
    for i in range(2000):
        t = 1_700_000_000.0 + i / 1000
        _fragments(w, t, 0.0002, ATTACKER, VICTIM, proto, bytes(3000), 1480)
        if answered:
            if proto == 17 or proto == 1:
                w.udp(t + 0.0005, VICTIM, ATTACKER, 7000, 7000, bytes(64)) if proto == 17 else \
                    w.icmp(t + 0.0005, VICTIM, ATTACKER, 0, 0, bytes(64))
            elif proto == 6:
                w.tcp(t + 0.0005, VICTIM, ATTACKER, 80, 4000, 0x04)
            else:
                w.ip(t + 0.0005, VICTIM, ATTACKER, proto, bytes(96), False)
    frames, _ = _sorted(w)
    fc, findings, _ = run(tmp_path, frames)
    frag = np.array([(f[20] & 0x3F) or f[21] for _, f in frames], dtype=bool)  # (IPv4 MF or fragment offset)
    assert frag.sum() == 6000
    # (fragments of another protocol than ICMP and TCP are named as UDP's)
    want = cls or (None if answered else "DDoS-UDP_Fragmentation")
    if want is None:
        assert (fc == -1).all() and not findings
    else:
        assert (fc[frag] == C[want]).all()
        assert {f.cls for f in findings} == {want}


def test_two_sources_make_it_distributed(tmp_path: Path) -> None:
    w = _Writer()
    for i in range(3000):
        t = 1_700_000_000.0 + i / 2000
        w.tcp(t, ATTACKER if i % 2 else "10.20.0.67", VICTIM, 1024 + i, 80, SYN, i * 7919)
    frames, _ = _sorted(w)
    fc, findings, _ = run(tmp_path, frames)
    assert (fc == C["DDoS-SYN_Flood"]).mean() >= 0.95
    assert {f.attacker for f in findings if f.detector == "volume"} == {ATTACKER, "10.20.0.67"}


def test_a_fast_syn_scan_stays_a_port_scan(tmp_path: Path) -> None:
    # 2,000 ports at 5,000 SYNs a second, closed ports resetting: a scan (each port once), not a flood
    w = _Writer()
    for i in range(2000):
        t = 1_700_000_000.0 + i / 5000
        w.tcp(t, ATTACKER, VICTIM, 40000, 1 + i, SYN, 12345)
        w.tcp(t + 0.0001, VICTIM, ATTACKER, 1 + i, 40000, 0x14, 0, 12346)
    frames, _ = _sorted(w)
    fc, findings, _ = run(tmp_path, frames)
    assert not [f for f in findings if f.detector == "volume"]
    assert (fc == C["Recon-PortScan"]).mean() >= 0.9


def test_under_the_rate_nothing_is_flagged(tmp_path: Path) -> None:
    # 50 unanswered SYNs a second to one port for 4 s: under syn_rate (100/s)
    w = _Writer()
    for i in range(200):
        w.tcp(1_700_000_000.0 + i / 50, ATTACKER, VICTIM, 1024 + i, 80, SYN, i)
    frames, _ = _sorted(w)
    fc, findings, _ = run(tmp_path, frames)
    assert (fc == -1).all() and not findings
    # the same at a lower configured rate is a flood; switched off, nothing
    fc, _, _ = run(tmp_path, frames, DetectorsConfig(volume=VolumeDetectorConfig(syn_rate=40)))
    assert (fc == C["DoS-SYN_Flood"]).mean() >= 0.95
    fc, _, _ = run(tmp_path, flood("udp", 5000, 0.5)[0], DetectorsConfig(volume=VolumeDetectorConfig(enabled=False)))
    assert not (fc == C["DoS-UDP_Flood"]).any()


def test_the_closed_ports_answers_do_not_make_the_victim_an_attacker(tmp_path: Path) -> None:
    frames, attack = flood("udp_closed", 3000, 1.0)
    fc, findings, _ = run(tmp_path, frames)
    assert (fc[np.asarray(attack)] == C["DoS-UDP_Flood"]).all()  # the unreachables are flagged with the flood
    assert {f.attacker for f in findings} == {ATTACKER}


def test_small_batches_as_live_capture_gives_them(tmp_path: Path) -> None:
    frames, attack = flood("syn", 1000, 3.0)
    fc, _, _ = run(tmp_path, frames, batch_size=40)
    assert (fc[np.asarray(attack)] >= 0).mean() >= 0.9


def test_state_is_bounded_under_a_spoofed_flood() -> None:
    det = VolumeDetector(VolumeDetectorConfig(max_keys=64))
    rng = np.random.default_rng(1)
    for k in range(5):
        n = 20000
        b = PacketBatch.empty(n)
        b.ts[:] = 1_700_000_000.0 + k + np.arange(n) / n
        b.ip_version[:] = 4
        b.proto[:] = 17
        b.l4_ok[:] = True
        # 50 new sources a batch, 400 datagrams each: every key is counted
        b.src4[:] = np.repeat(rng.integers(1, 2**32 - 1, 50, dtype=np.uint32), n // 50)
        b.dst4[:] = 0x0A14000A
        b.dport[:] = 53
        det.process(b, np.full(n, -1, np.int16))
        assert len(det.counts) <= 64 and len(det.held) <= 64
    assert det.counters["count_evictions"] > 0


@pytest.mark.shared_data("real")
def test_a_real_syn_flood_from_one_host() -> None:
    """The corpus's single-source SYN flood (filed under DoS-SYN_Flood; its file name says
    portscan, but it hammers one port): no crowd, no scan, a flood by rate and answers."""
    from .paths import REAL

    path = REAL / "attack/DoS-SYN_Flood/padmavatisb_Intrusion-detection-system-using-ML-DL__portscan.pcap"
    classes, findings = [], []
    ds = DetectorSet()
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            r = ds.process(b)
            classes.append(r.frame_class)
            findings += r.findings
    fc = np.concatenate(classes)
    assert (fc == C["DoS-SYN_Flood"]).mean() >= 0.95
    vol = [f for f in findings if f.detector == "volume"]
    assert vol and len({f.attacker for f in vol}) == 1 and all("SYNs in 1 s" in f.evidence for f in vol)


def test_the_sketch_keeps_every_candidate_and_nothing_else() -> None:
    """`_volume_kernel.count_batch` groups only the frames its sketch keeps: its candidates must be
    exactly those of grouping every frame by (key, bucket), a known key's included, when keys
    collide in the sketch (a small batch of many keys) and when they do not, and whether the keys
    being counted are fewer than the frames (marked in the sketch) or more (looked up)."""
    from ids_daemon.detectors import _volume_kernel as vk
    from ids_daemon.detectors._scan_kernel import new_table, t_touch

    rng = np.random.default_rng(7)
    for n, nkeys in ((3000, 2500), (3000, 40), (200, 150)):
        b = PacketBatch.empty(n)
        b.ts[:] = np.sort(1_700_000_000.0 + rng.random(n) * 2.5)  # three buckets of 1 s
        b.ip_version[:] = 4
        b.proto[:] = 17
        b.l4_ok[:] = True
        pool = rng.integers(1, 2**63, nkeys, dtype=np.uint64)
        # a few heavy keys among many light ones
        pick = np.where(rng.random(n) < 0.5, rng.integers(0, 3, n), rng.integers(0, nkeys, n))
        rkey = pool[pick]
        kind = np.full(n, vk.K_UDP, np.int8)
        rows = np.arange(n)
        known = pool[[nkeys - 1, nkeys - 2]]
        # the keys being counted, in the counting table: few (marked in the sketch) or many (looked up)
        T = new_table(4096, vk.COUNT_VALUES)
        more = rng.integers(1, 2**63, 2 * n, dtype=np.uint64).tolist() + pool[:20].tolist() if n < 1000 else []
        for k in known.tolist() + more:
            t_touch(T[0], T[1], T[2], np.uint64(k), np.uint64(0), np.uint64(0))
        known = np.array([int(T[2][i, 0]) & (2**64 - 1) for i in range(int(T[0][2]))], dtype=np.uint64)
        rates = np.full(8, 400.0 if n > 1000 else 40.0)  # a heavy key's bucket holds ~n / 6 frames
        span = 1.0
        out = vk.count_batch(rows, rkey, kind, b.src4.astype(np.uint64), b.dst4.astype(np.uint64),
                             np.full(n, -1, np.int8), np.zeros(n, np.bool_), np.zeros(n, np.bool_), b.ts, b.dport,
                             b.sport, b.proto, b.l4_ok, b.tcp_flags, b.status, b.ip_version, b.ip_len,
                             b.ip_hdr_len, b.l4_hdr_len, 1.0, rates, span, T, False)
        c_key, c_n, c_head, c_bucket = out[1], out[2], out[3], out[4]
        got = sorted(zip(c_key.tolist(), c_bucket.tolist(), c_n.tolist(), c_head.tolist()))
        # the plain grouping
        bucket = np.floor(b.ts / 1.0).astype(np.int64)
        want = []
        for k, bk in sorted(set(zip(rkey.tolist(), bucket.tolist()))):
            at = np.flatnonzero((rkey == k) & (bucket == bk))
            if at.size >= max(rates[0] * span / 4, 2.0) or k in known.tolist():
                want.append((k, bk, int(at.size), int(at[0])))
        assert got == want
        assert len(want) > 3  # the heavy keys and the known ones are there
        assert (int(T[0][2]) > n) == (n < 1000)  # both ways of finding the known keys ran


@pytest.mark.parametrize("agent, cls", [("Mozilla/5.0 (Nikto/2.1.6)", "VulnerabilityScan"),
                                        ("Mozilla/5.0", "DoS-HTTP_Flood")])
def test_a_scanner_at_a_floods_rate_is_a_scan(tmp_path: Path, agent: str, cls: str) -> None:
    """Requests alone (no handshake or answer seen: the web detector cannot verify them) at 200 a
    second: a flood by rate, named by what they carry. A scanner's fingerprint in most of them
    makes it a VulnerabilityScan; plain page requests stay an HTTP flood."""
    import random

    rnd = random.Random(5)
    w = _Writer()
    for i in range(400):
        get = f"GET /cgi-bin/{rnd.getrandbits(24):x}.cgi HTTP/1.1\r\nHost: victim\r\nUser-Agent: {agent}\r\n\r\n".encode()
        w.tcp(1_700_000_000.0 + i / 200, ATTACKER, VICTIM, rnd.randrange(1024, 65535), 80, 0x18, rnd.getrandbits(32),
              rnd.getrandbits(32), get, attack=True)
    frames, attack = _sorted(w)
    fc, findings, _ = run(tmp_path, frames)
    assert (fc[np.asarray(attack)] == C[cls]).mean() >= 0.9
    vol = [f for f in findings if f.detector == "volume"]
    assert vol and {f.cls for f in vol} == {cls}
    assert ("attack signatures" in vol[0].evidence) == (cls == "VulnerabilityScan")
