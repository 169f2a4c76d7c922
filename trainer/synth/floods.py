"""Floods from one host and benign bulk transfers, written as pcap frames at a given rate.

scapy builds a few thousand packets a second; a flood at 50 k packets/s for a few seconds
needs hundreds of thousands, so these captures are packed with `struct` (checksums left
zero: the daemon does not verify them). Each scenario returns ``(frames, attack)``: the
``(timestamp, frame)`` list in time order and, per frame, whether it belongs to the flood
(its packets, and the victim's answers to them). `bench/floods.py` and
tests/test_detectors_volume.py measure the detectors on them.

Kinds (CICIoT2023 class in brackets): ``syn`` (DoS-SYN_Flood: SYNs to an open port, the
victim's SYN-ACKs, the attacker's resets), ``ack`` (DoS-TCP_Flood: bare ACKs, the victim's
resets), ``pshack`` (DDoS-PSHACK_Flood), ``rstfin`` (DDoS-RSTFINFlood), ``udp`` (DoS-UDP_Flood:
short datagrams to random ports), ``udp_closed`` (DoS-UDP_Flood: to one closed port, ICMP
unreachables back at most 1,000/s, as Linux rate-limits them), ``icmp`` (DDoS-ICMP_Flood: echo
requests and replies), ``blacknurse`` (DDoS-ICMP_Flood: ICMP port unreachables sent unprompted),
``udp_frag``/``icmp_frag``/``ack_frag`` (the DDoS-*_Fragmentation classes: 3 fragments per
datagram), ``http`` (DoS-HTTP_Flood: one connection per GET, answered). Benign: ``download``
(HTTP download, 1,448-byte segments, an ACK every second one), ``video_udp`` (RTP, 1,200-byte
datagrams to one port, an RTCP report every 5 s), ``video_tcp``, ``download_thin`` (the same
acknowledged every 32nd segment, as behind receive offload), ``smb_backup`` (writes to port
445, acknowledged), ``vpn_fragmented`` (a download through a UDP tunnel whose outer datagrams
are fragmented in two, the inner ACKs back in small datagrams), ``nfs_udp`` (NFSv3 reads over
UDP, each 8 KiB reply in six fragments).
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

ATTACKER, VICTIM = "10.20.0.66", "10.20.0.10"
CLIENT, SERVER = "10.20.0.21", "10.20.0.5"
_MAC = {ATTACKER: "02:00:00:00:00:66", VICTIM: "02:00:00:00:00:10", CLIENT: "02:00:00:00:00:21",
        SERVER: "02:00:00:00:00:05"}

FLOOD_CLASS = {
    "syn": "DoS-SYN_Flood", "ack": "DoS-TCP_Flood", "pshack": "DDoS-PSHACK_Flood", "rstfin": "DDoS-RSTFINFlood",
    "udp": "DoS-UDP_Flood", "udp_closed": "DoS-UDP_Flood", "icmp": "DDoS-ICMP_Flood", "blacknurse": "DDoS-ICMP_Flood",
    "udp_frag": "DDoS-UDP_Fragmentation", "icmp_frag": "DDoS-ICMP_Fragmentation", "ack_frag": "DDoS-ACK_Fragmentation",
    "http": "DoS-HTTP_Flood",
}
BENIGN = ("download", "download_thin", "video_udp", "video_tcp", "smb_backup", "vpn_fragmented", "nfs_udp")


def _ip(a: str) -> bytes:
    return bytes(map(int, a.split(".")))


def _mac(a: str) -> bytes:
    return bytes.fromhex(_MAC.get(a, "02:00:00:00:00:99").replace(":", ""))


class _Writer:
    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.attack: list[bool] = []
        self.ipid = 0

    def ip(self, t: float, src: str, dst: str, proto: int, l4: bytes, attack: bool, frag: int = 0,
           mf: bool = False) -> None:
        self.ipid = (self.ipid + 1) & 0xFFFF
        flags = (0x2000 if mf else 0) | (frag & 0x1FFF)
        hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), self.ipid, flags, 64, proto, 0,
                          _ip(src), _ip(dst))
        self.frames.append((t, _mac(dst) + _mac(src) + b"\x08\x00" + hdr + l4))
        self.attack.append(attack)

    def tcp(self, t: float, src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0,
            payload: bytes = b"", attack: bool = False) -> None:
        seg = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0,
                          0) + payload
        self.ip(t, src, dst, 6, seg, attack)

    def udp(self, t: float, src: str, dst: str, sport: int, dport: int, payload: bytes, attack: bool = False) -> None:
        self.ip(t, src, dst, 17, struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload, attack)

    def icmp(self, t: float, src: str, dst: str, typ: int, code: int, body: bytes, attack: bool = False) -> None:
        self.ip(t, src, dst, 1, struct.pack(">BBHI", typ, code, 0, 0) + body, attack)


FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16


def flood(kind: str, rate: float, seconds: float, seed: int = 0, t0: float = 1_700_000_000.0
          ) -> tuple[list[tuple[float, bytes]], list[bool]]:
    """A flood of ``kind`` from ATTACKER to VICTIM at ``rate`` packets/s (the attacker's
    packets) for ``seconds``, with the victim's answers, plus a little benign traffic of the
    victim with another client (so the capture is not the flood alone)."""
    rnd = random.Random(seed)
    w = _Writer()
    n = max(1, int(rate * seconds))
    dt = 1.0 / rate
    last_unreach = -1.0
    unreach_budget = 0
    for i in range(n):
        t = t0 + i * dt
        sp = rnd.randrange(1024, 65535)
        if kind == "syn":
            w.tcp(t, ATTACKER, VICTIM, sp, 80, SYN, rnd.getrandbits(32), attack=True)
            if i % 2 == 0:  # the backlog answers some, then the attacker's stack resets them
                w.tcp(t + dt / 4, VICTIM, ATTACKER, 80, sp, SYN | ACK, rnd.getrandbits(32), attack=True)
                w.tcp(t + dt / 3, ATTACKER, VICTIM, sp, 80, RST, attack=True)
        elif kind == "ack":
            w.tcp(t, ATTACKER, VICTIM, sp, 80, ACK, rnd.getrandbits(32), rnd.getrandbits(32), attack=True)
            if i % 4 == 0:
                w.tcp(t + dt / 4, VICTIM, ATTACKER, 80, sp, RST, attack=True)
        elif kind == "pshack":
            w.tcp(t, ATTACKER, VICTIM, sp, 80, PSH | ACK, rnd.getrandbits(32), rnd.getrandbits(32),
                  payload=rnd.randbytes(rnd.randrange(16, 64)), attack=True)
        elif kind == "rstfin":
            w.tcp(t, ATTACKER, VICTIM, sp, 80, (RST | ACK) if i % 2 else (FIN | ACK), rnd.getrandbits(32), attack=True)
        elif kind == "udp":
            w.udp(t, ATTACKER, VICTIM, sp, rnd.randrange(1, 65535), rnd.randbytes(rnd.randrange(0, 32)), attack=True)
        elif kind == "udp_closed":
            w.udp(t, ATTACKER, VICTIM, sp, 9999, rnd.randbytes(512), attack=True)
            sec = int(t)
            if sec != last_unreach:
                last_unreach, unreach_budget = sec, 1000
            if unreach_budget > 0:
                unreach_budget -= 1
                quote = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 540, 0, 0, 64, 17, 0, _ip(ATTACKER), _ip(VICTIM))
                w.icmp(t + dt / 4, VICTIM, ATTACKER, 3, 3, quote + struct.pack(">HHHH", sp, 9999, 520, 0), attack=True)
        elif kind == "icmp":
            w.icmp(t, ATTACKER, VICTIM, 8, 0, rnd.randbytes(56), attack=True)
            w.icmp(t + dt / 4, VICTIM, ATTACKER, 0, 0, rnd.randbytes(56), attack=True)
        elif kind == "blacknurse":
            quote = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, _ip(VICTIM), _ip("10.20.0.200"))
            w.icmp(t, ATTACKER, VICTIM, 3, 3, quote + bytes(8), attack=True)
        elif kind in ("udp_frag", "icmp_frag", "ack_frag"):
            # one datagram of 2,960 bytes in three fragments; ``rate`` counts fragments
            if i % 3:
                continue
            proto = {"udp_frag": 17, "icmp_frag": 1, "ack_frag": 6}[kind]
            body = rnd.randbytes(2940)
            l4 = (struct.pack(">HHHH", sp, rnd.randrange(1, 65535), 8 + len(body), 0) if proto == 17 else
                  struct.pack(">BBHI", 8, 0, 0, 0) if proto == 1 else
                  struct.pack(">HHIIBBHHH", sp, 80, rnd.getrandbits(32), rnd.getrandbits(32), 5 << 4, ACK, 65535, 0, 0))
            data = l4 + body
            for k, off in enumerate((0, 1480, 2960)):
                part = data[off:off + 1480]
                if part:
                    w.ip(t + k * dt, ATTACKER, VICTIM, proto, part, True, frag=off // 8, mf=off + 1480 < len(data))
        elif kind == "http":
            # rate counts the attacker's packets: SYN, ACK, GET, FIN = 4 per request
            if i % 4:
                continue
            seq, sseq = rnd.getrandbits(32), rnd.getrandbits(32)
            get = f"GET /?{rnd.getrandbits(40):x} HTTP/1.1\r\nHost: victim\r\nUser-Agent: Mozilla/5.0\r\n" \
                  f"Cache-Control: no-cache\r\n\r\n".encode()
            step = dt
            w.tcp(t, ATTACKER, VICTIM, sp, 80, SYN, seq, attack=True)
            w.tcp(t + step / 3, VICTIM, ATTACKER, 80, sp, SYN | ACK, sseq, seq + 1, attack=True)
            w.tcp(t + step, ATTACKER, VICTIM, sp, 80, ACK, seq + 1, sseq + 1, attack=True)
            w.tcp(t + 2 * step, ATTACKER, VICTIM, sp, 80, PSH | ACK, seq + 1, sseq + 1, get, attack=True)
            w.tcp(t + 2.5 * step, VICTIM, ATTACKER, 80, sp, PSH | ACK, sseq + 1, seq + 1 + len(get),
                  b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", attack=True)
            w.tcp(t + 3 * step, ATTACKER, VICTIM, sp, 80, FIN | ACK, seq + 1 + len(get), sseq + 41, attack=True)
        else:
            raise ValueError(f"unknown flood kind {kind!r}")
    _background(w, rnd, t0, seconds)
    return _sorted(w)


def _background(w: _Writer, rnd: random.Random, t0: float, seconds: float) -> None:
    """The victim's ordinary traffic meanwhile: a DNS lookup and a web request a second."""
    for s in range(max(1, int(seconds))):
        t = t0 + s + 0.5
        q = rnd.getrandbits(16)
        w.udp(t, VICTIM, "10.20.0.1", 40000 + s, 53, struct.pack(">HHHHHH", q, 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01")
        w.udp(t + 0.01, "10.20.0.1", VICTIM, 53, 40000 + s,
              struct.pack(">HHHHHH", q, 0x8180, 1, 1, 0, 0) + b"\x01a\x00\x00\x01\x00\x01" + bytes(16))


def benign(kind: str, seconds: float = 10.0, seed: int = 0, t0: float = 1_700_000_000.0,
           megabytes: float = 100.0) -> tuple[list[tuple[float, bytes]], list[bool]]:
    """A benign bulk exchange between SERVER and CLIENT (no frame is an attack)."""
    rnd = random.Random(seed)
    w = _Writer()
    if kind in ("download", "download_thin", "video_tcp", "smb_backup"):
        # sender -> receiver data at a steady rate, acknowledged every second segment; "thin":
        # every 32nd, as a capture behind receive offload sees it (one ACK per coalesced burst)
        every = 32 if kind == "download_thin" else 2
        if kind in ("download", "download_thin"):
            snd, rcv, sport, dport, mss = SERVER, CLIENT, 80, 51000, 1448
            segments = int(megabytes * 1e6 / mss)
        elif kind == "video_tcp":
            snd, rcv, sport, dport, mss = SERVER, CLIENT, 443, 51001, 1448
            segments = int(seconds * 700)  # ~8 Mbit/s
        else:
            snd, rcv, sport, dport, mss = CLIENT, SERVER, 51002, 445, 1448
            segments = int(megabytes * 1e6 / mss)
        dt = seconds / segments
        seq, ack = rnd.getrandbits(32), rnd.getrandbits(32)
        w.tcp(t0 - 0.003, rcv if kind != "smb_backup" else snd, snd if kind != "smb_backup" else rcv,
              dport if kind != "smb_backup" else sport, sport if kind != "smb_backup" else dport, SYN, ack)
        for i in range(segments):
            t = t0 + i * dt
            w.tcp(t, snd, rcv, sport, dport, ACK | (PSH if i % 16 == 15 else 0), seq + i * mss, ack,
                  payload=bytes(mss))
            if i % every == every - 1:
                w.tcp(t + dt / 2, rcv, snd, dport, sport, ACK, ack, seq + (i + 1) * mss)
    elif kind == "video_udp":
        rate = 1500
        for i in range(int(seconds * rate)):
            t = t0 + i / rate
            w.udp(t, SERVER, CLIENT, 5004, 5004, struct.pack(">BBHII", 0x80, 96, i & 0xFFFF, i * 3000, 0x1234)
                  + bytes(1188))
            if i % (5 * rate) == 0:  # RTCP receiver report every 5 s
                w.udp(t + 0.001, CLIENT, SERVER, 5005, 5005, bytes(32))
    elif kind == "vpn_fragmented":
        # a download through a UDP tunnel (WireGuard's port) whose 1,448-byte inner segments make
        # outer datagrams larger than the path's MTU: each goes as two fragments; the inner ACKs
        # come back as small datagrams, one per two segments
        segments = int(megabytes * 1e6 / 1448)
        dt = seconds / segments
        for i in range(segments):
            t = t0 + i * dt
            _fragments(w, t, dt / 4, SERVER, CLIENT, 17, struct.pack(">HHHH", 51820, 51820, 1540, 0) + bytes(1532),
                       1480)
            if i % 2 == 1:
                w.udp(t + dt / 2, CLIENT, SERVER, 51820, 51820, bytes(96))
    elif kind == "nfs_udp":
        # NFSv3 over UDP: the client asks for 8 KiB at a time, each reply goes as six fragments
        reads = int(megabytes * 1e6 / 8192)
        dt = seconds / reads
        for i in range(reads):
            t = t0 + i * dt
            w.udp(t, CLIENT, SERVER, 800, 2049, bytes(128))
            _fragments(w, t + dt / 3, dt / 12, SERVER, CLIENT, 17, struct.pack(">HHHH", 2049, 800, 8328, 0)
                       + bytes(8320), 1480)
    else:
        raise ValueError(f"unknown benign kind {kind!r}")
    return _sorted(w)


def _fragments(w: _Writer, t: float, step: float, src: str, dst: str, proto: int, data: bytes, size: int) -> None:
    """``data`` (the transport header and payload) as IPv4 fragments of ``size`` bytes, ``step`` apart."""
    for k, off in enumerate(range(0, len(data), size)):
        w.ip(t + k * step, src, dst, proto, data[off:off + size], False, frag=off // 8, mf=off + size < len(data))


def _sorted(w: _Writer) -> tuple[list[tuple[float, bytes]], list[bool]]:
    order = sorted(range(len(w.frames)), key=lambda k: w.frames[k][0])
    return [w.frames[k] for k in order], [w.attack[k] for k in order]


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    """Classic pcap, Ethernet, microsecond timestamps."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for ts, data in frames:
        sec = int(ts)
        usec = min(999_999, round((ts - sec) * 1e6))
        out.append(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))
    return path
