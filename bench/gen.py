"""Fast synthetic capture files for benchmarks (and tests): numpy, no per-packet Python.

Packets are described as columns (one numpy array per header field); `write_columns`
lays every record out in one byte buffer and writes each header field for all packets
at once with fancy indexing. Checksums are left zero (the reader does not verify them);
IPv4 total lengths, TCP data offsets, UDP lengths and ARP layouts are correct, frames
shorter than 60 bytes are zero-padded as on Ethernet.

    write_flood_pcap(path, n_packets, seed)    # SYN/UDP/ICMP flood from spoofed sources + ~10% benign
    write_benign_pcap(path, n_packets, seed)   # long-ish IoT TCP/UDP flows (MQTT, CoAP, DNS, HTTP(S)), a little ARP
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

T0_US = 1_700_000_000 * 1_000_000  # first timestamp, microseconds since the epoch
ETH_MIN = 60  # Ethernet minimum frame without FCS: shorter frames are padded

# TCP flag bits
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16

KIND_IPV4, KIND_ARP = 0, 1

_COLUMNS = {  # name: dtype; every packet description holds all of them
    "ts_us": np.int64, "kind": np.uint8, "proto": np.uint8, "src": np.uint32, "dst": np.uint32,
    "sport": np.uint16, "dport": np.uint16, "ttl": np.uint8, "flags": np.uint8, "payload": np.int64,
    "icmp_type": np.uint8, "arp_op": np.uint16, "ipid": np.uint16, "seq": np.uint32, "ack": np.uint32,
}

# Layer 2 as a gateway's LAN shows it: every host of 192.168.1.0/24 has its own MAC (02:00 and its
# IPv4 address), and what comes from or goes to any other address crosses the gateway's
# (192.168.1.1) MAC. One MAC for every frame would be one station claiming every IP: ARP spoofing
# and an ARP sweep to the detectors, which a benign capture must not be.
_LAN, _LAN_MASK = 0xC0A80100, 0xFFFFFF00
_GATEWAY = 0xC0A80101
_MAC_OUI = 0x0200 << 32
_BROADCAST = 0xFFFFFFFFFFFF


def mac_of(addr: np.ndarray) -> np.ndarray:
    """The MAC each IPv4 address is reached at on the LAN (uint64, 48 bits used)."""
    a = np.asarray(addr).astype(np.uint64)
    on_lan = (a & np.uint64(_LAN_MASK)) == np.uint64(_LAN)
    return np.uint64(_MAC_OUI) | np.where(on_lan, a, np.uint64(_GATEWAY))


def ip(text: str) -> int:
    """Dotted quad → uint32 value."""
    a, b, c, d = map(int, text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def empty_columns(n: int) -> dict[str, np.ndarray]:
    """Zeroed packet columns for ``n`` packets."""
    return {k: np.zeros(n, dtype=dt) for k, dt in _COLUMNS.items()}


def concat_sorted(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several packet descriptions merged into one, in timestamp order (stable)."""
    cols = {k: np.concatenate([p[k] for p in parts]).astype(dt) for k, dt in _COLUMNS.items()}
    order = np.argsort(cols["ts_us"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def _timestamps(rng: np.random.Generator, n: int, lo_us: int, hi_us: int, t0_us: int = T0_US) -> np.ndarray:
    """Increasing timestamps with gaps uniform in [lo_us, hi_us] microseconds."""
    return t0_us + np.cumsum(rng.integers(lo_us, hi_us + 1, size=n, dtype=np.int64))


def _put(buf: np.ndarray, pos: np.ndarray, val: np.ndarray | int, nbytes: int, big: bool = True) -> None:
    """Write ``nbytes``-byte integers at byte positions ``pos`` (vectorised)."""
    v = np.asarray(val).astype(np.uint64)
    for k in range(nbytes):
        shift = 8 * (nbytes - 1 - k) if big else 8 * k
        buf[pos + k] = ((v >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint8)


def _put_bytes(buf: np.ndarray, pos: np.ndarray, data: bytes) -> None:
    """The same constant bytes at every position in ``pos``."""
    tmpl = np.frombuffer(data, dtype=np.uint8)
    buf[pos[:, None] + np.arange(tmpl.shape[0])] = tmpl


def build_records(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The whole pcap file (µs, little endian, Ethernet) as one uint8 array."""
    n = int(cols["ts_us"].shape[0])
    kind = cols["kind"]
    proto = cols["proto"].astype(np.int64)
    arp = kind == KIND_ARP
    v4 = ~arp
    tcp = v4 & (proto == 6)
    udp = v4 & (proto == 17)
    icmp = v4 & (proto == 1)
    l4hdr = np.where(tcp, 20, np.where(udp | icmp, 8, 0))
    ip_total = 20 + l4hdr + cols["payload"]
    frame = np.where(arp, 14 + 28, 14 + ip_total)
    if (ip_total > 0xFFFF).any():
        raise ValueError("IPv4 packet larger than 65535 bytes")
    caplen = np.maximum(frame, ETH_MIN)
    rec = 16 + caplen
    base = np.empty(n, dtype=np.int64)
    base[0:1] = 24
    np.cumsum(rec[:-1], out=base[1:])
    base[1:] += 24
    total = 24 + int(rec.sum())
    buf = np.zeros(total, dtype=np.uint8)
    buf[:24] = np.frombuffer(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1), dtype=np.uint8)

    # record headers (little endian)
    ts = cols["ts_us"]
    _put(buf, base, ts // 1_000_000, 4, big=False)
    _put(buf, base + 4, ts % 1_000_000, 4, big=False)
    _put(buf, base + 8, caplen, 4, big=False)
    _put(buf, base + 12, caplen, 4, big=False)

    # Ethernet
    f = base + 16
    src_mac, dst_mac = mac_of(cols["src"]), mac_of(cols["dst"])
    request = arp & (cols["arp_op"] == 1)
    dst_mac[request] = _BROADCAST
    _put(buf, f, dst_mac, 6)
    _put(buf, f + 6, src_mac, 6)
    _put(buf, f + 12, np.where(arp, 0x0806, 0x0800), 2)

    # IPv4
    i = f[v4] + 14
    buf[i] = 0x45
    _put(buf, i + 2, ip_total[v4], 2)
    _put(buf, i + 4, cols["ipid"][v4], 2)
    buf[i + 6] = 0x40  # DF
    buf[i + 8] = cols["ttl"][v4]
    buf[i + 9] = cols["proto"][v4]
    _put(buf, i + 12, cols["src"][v4], 4)
    _put(buf, i + 16, cols["dst"][v4], 4)

    # TCP
    t = f[tcp] + 34
    _put(buf, t, cols["sport"][tcp], 2)
    _put(buf, t + 2, cols["dport"][tcp], 2)
    _put(buf, t + 4, cols["seq"][tcp], 4)
    _put(buf, t + 8, cols["ack"][tcp], 4)
    buf[t + 12] = 0x50  # data offset: 5 words
    buf[t + 13] = cols["flags"][tcp]
    _put(buf, t + 14, 64240, 2)  # window

    # UDP
    u = f[udp] + 34
    _put(buf, u, cols["sport"][udp], 2)
    _put(buf, u + 2, cols["dport"][udp], 2)
    _put(buf, u + 4, 8 + cols["payload"][udp], 2)

    # ICMP (echo: identifier in sport, sequence in the low 16 bits of seq)
    c = f[icmp] + 34
    buf[c] = cols["icmp_type"][icmp]
    _put(buf, c + 4, cols["sport"][icmp], 2)
    _put(buf, c + 6, cols["seq"][icmp] & 0xFFFF, 2)

    # ARP, IPv4 over Ethernet
    a = f[arp] + 14
    _put_bytes(buf, a, bytes.fromhex("0001" "0800" "06" "04"))
    _put(buf, a + 6, cols["arp_op"][arp], 2)
    _put(buf, a + 8, src_mac[arp], 6)
    _put(buf, a + 14, cols["src"][arp], 4)
    _put(buf, a + 18, np.where(request[arp], 0, dst_mac[arp]), 6)  # a request's target MAC is unknown
    _put(buf, a + 24, cols["dst"][arp], 4)
    return buf


def write_columns(path: str | Path, cols: dict[str, np.ndarray]) -> Path:
    """Write a packet description as a classic pcap file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    build_records(cols).tofile(tmp)
    tmp.replace(path)  # never leave a half-written file that a later run would reuse
    return path


# ---- traffic models --------------------------------------------------------------------------
def benign_columns(rng: np.random.Generator, n: int, n_flows: int | None = None, gap_us: tuple[int, int] = (20, 80),
                   arp_share: float = 0.01, t0_us: int = T0_US) -> dict[str, np.ndarray]:
    """IoT-like traffic: ``n`` packets over ``n_flows`` long-ish TCP/UDP flows, a little ARP.

    Devices 192.168.1.100-179 talk to an MQTT broker (1883/TCP), CoAP peers (5683/UDP), the
    gateway's DNS (53/UDP) and cloud servers (80, 443/TCP). TCP flows open with a handshake,
    carry PSH|ACK data and bare ACKs, and close with FIN|ACK from both sides.
    """
    if n_flows is None:
        n_flows = int(min(2000, max(50, n // 100)))
    n_arp = int(round(n * arp_share))
    m = n - n_arp
    n_flows = max(1, min(n_flows, m))
    gw, broker = ip("192.168.1.1"), ip("192.168.1.2")
    devices = np.arange(ip("192.168.1.100"), ip("192.168.1.180"), dtype=np.uint32)
    cloud = np.array([ip(x) for x in ("52.28.14.7", "35.157.2.90", "104.18.32.47", "142.250.74.78",
                                      "13.107.42.14", "151.101.1.69")], dtype=np.uint32)
    # service mix: (proto, server port, payload lo, payload hi)
    services = [(6, 1883, 2, 300), (17, 5683, 10, 200), (17, 53, 30, 200), (6, 80, 100, 1460), (6, 443, 60, 1460)]
    svc = rng.choice(len(services), size=n_flows, p=[0.35, 0.2, 0.15, 0.1, 0.2])
    f_proto = np.array([services[s][0] for s in svc], dtype=np.int64)
    f_port = np.array([services[s][1] for s in svc], dtype=np.int64)
    f_plo = np.array([services[s][2] for s in svc], dtype=np.int64)
    f_phi = np.array([services[s][3] for s in svc], dtype=np.int64)
    f_client = rng.choice(devices, size=n_flows)
    f_server = np.where(f_port == 1883, broker, np.where(f_port == 53, gw, rng.choice(cloud, size=n_flows)))
    coap = f_port == 5683
    f_server[coap] = rng.choice(devices, size=int(coap.sum()))
    f_server = f_server.astype(np.uint32)
    f_cport = rng.integers(32768, 61000, size=n_flows)
    f_cport[coap] = 5683
    f_ttl_c = rng.choice(np.array([64, 128, 255]), size=n_flows)
    f_ttl_s = rng.choice(np.array([64, 52, 57, 116, 243]), size=n_flows)
    f_isn = rng.integers(0, 1 << 32, size=(2, n_flows), dtype=np.int64)

    # heavy-tailed flow sizes: each packet picks its flow by weight, in time order
    w = rng.pareto(1.2, size=n_flows) + 0.05
    flow = rng.choice(n_flows, size=m, p=w / w.sum())
    order = np.argsort(flow, kind="stable")
    counts = np.bincount(flow, minlength=n_flows)
    starts = np.cumsum(counts) - counts
    pos = np.empty(m, dtype=np.int64)
    pos[order] = np.arange(m) - np.repeat(starts, counts)
    size = counts[flow]

    proto = f_proto[flow]
    is_tcp = proto == 6
    pay = rng.integers(f_plo[flow], f_phi[flow] + 1)
    # direction: TCP handshake/teardown fixed, the rest alternates request/response with jitter
    to_server = (pos % 2 == 0) ^ (rng.random(m) < 0.2)
    flags = np.zeros(m, dtype=np.int64)
    if is_tcp.any():
        data = rng.random(m) < 0.6
        flags = np.where(data, PSH | ACK, ACK)
        pay = np.where(is_tcp & ~data, 0, pay)
        hs = is_tcp & (size >= 5)
        first, second, third = hs & (pos == 0), hs & (pos == 1), hs & (pos == 2)
        fin1 = hs & (size >= 7) & (pos == size - 2)
        fin2 = hs & (size >= 7) & (pos == size - 1)
        flags = np.where(first, SYN, np.where(second, SYN | ACK, flags))
        flags = np.where(third, ACK, flags)
        flags = np.where(fin1 | fin2, FIN | ACK, flags)
        to_server = np.where(first | third | fin1, True, np.where(second | fin2, False, to_server))
        pay = np.where(first | second | third | fin1 | fin2, 0, pay)
        flags = np.where(is_tcp, flags, 0)
    c = flow
    cols = empty_columns(m)
    cols["ts_us"][:] = 0
    cols["proto"][:] = proto
    cols["src"][:] = np.where(to_server, f_client[c], f_server[c])
    cols["dst"][:] = np.where(to_server, f_server[c], f_client[c])
    cols["sport"][:] = np.where(to_server, f_cport[c], f_port[c])
    cols["dport"][:] = np.where(to_server, f_port[c], f_cport[c])
    cols["ttl"][:] = np.where(to_server, f_ttl_c[c], f_ttl_s[c])
    cols["flags"][:] = flags
    cols["payload"][:] = pay
    cols["ipid"][:] = rng.integers(0, 1 << 16, size=m)
    cols["seq"][:] = (np.where(to_server, f_isn[0, c], f_isn[1, c]) + pos * 512) & 0xFFFFFFFF
    cols["ack"][:] = np.where(flags & ACK, (np.where(to_server, f_isn[1, c], f_isn[0, c]) + pos * 512) & 0xFFFFFFFF, 0)

    # ARP as devices do it: asking for the gateway, the broker or now and then a CoAP peer, and the
    # owner of the asked address answering (a reply's sender is the address it was asked for)
    arp = empty_columns(n_arp)
    arp["kind"][:] = KIND_ARP
    req = rng.random(n_arp) < 0.6
    asker = rng.choice(devices, size=n_arp)
    target = np.where(rng.random(n_arp) < 0.7, gw, np.where(rng.random(n_arp) < 0.7, broker,
                                                            rng.choice(devices, size=n_arp)))
    target = np.where(target == asker, gw, target).astype(np.uint32)
    arp["arp_op"][:] = np.where(req, 1, 2)
    arp["src"][:] = np.where(req, asker, target)
    arp["dst"][:] = np.where(req, target, asker)

    out = cols
    # packets were drawn in time order except ARP (appended): interleave ARP by position
    if n_arp:
        perm = rng.permutation(n)
        keep_order = np.sort(perm[:m])  # slots of the flow packets, in order
        arp_slots = np.sort(perm[m:])
        merged = {}
        for k, dt in _COLUMNS.items():
            col = np.zeros(n, dtype=dt)
            col[keep_order] = cols[k]
            col[arp_slots] = arp[k]
            merged[k] = col
        out = merged
    out["ts_us"][:] = _timestamps(rng, n, *gap_us, t0_us=t0_us)
    return out


def flood_columns(rng: np.random.Generator, n: int, benign_share: float = 0.10,
                  gap_us: tuple[int, int] = (3, 10), t0_us: int = T0_US) -> dict[str, np.ndarray]:
    """A flood from spoofed sources: ~75% TCP SYN to victim:80 (random source ip:port and TTL
    per packet, 54-byte frames padded to 60), ~10% UDP flood, ~5% ICMP echo flood,
    ``benign_share`` benign IoT traffic; ~150k packets/s."""
    victim = ip("192.168.1.10")
    n_benign = int(round(n * benign_share))
    m = n - n_benign
    kind = rng.choice(3, size=m, p=[0.83, 0.11, 0.06])  # of the attack packets: syn, udp, icmp
    syn, udp, icmp = kind == 0, kind == 1, kind == 2
    cols = empty_columns(m)
    cols["proto"][:] = np.where(syn, 6, np.where(udp, 17, 1))
    cols["src"][:] = rng.integers(0x01000000, 0xDF000000, size=m, dtype=np.int64)
    cols["dst"][:] = victim
    cols["sport"][:] = rng.integers(1024, 65536, size=m)
    cols["dport"][:] = np.where(syn, 80, np.where(udp, rng.integers(1, 65536, size=m), 0))
    cols["ttl"][:] = rng.integers(30, 256, size=m)
    cols["flags"][:] = np.where(syn, SYN, 0)
    cols["payload"][:] = np.where(udp, rng.integers(18, 513, size=m), np.where(icmp, 56, 0))
    cols["icmp_type"][:] = np.where(icmp, 8, 0)
    cols["ipid"][:] = rng.integers(0, 1 << 16, size=m)
    cols["seq"][:] = rng.integers(0, 1 << 32, size=m, dtype=np.int64)
    cols["ts_us"][:] = np.sort(rng.integers(0, 1 << 40, size=m))  # order only; real times below
    benign = benign_columns(rng, n_benign, n_flows=max(10, n_benign // 100), arp_share=0.01) if n_benign else None
    if benign is not None:
        benign["ts_us"][:] = np.sort(rng.integers(0, 1 << 40, size=n_benign))
        out = concat_sorted([cols, benign])
    else:
        out = cols
    out["ts_us"][:] = _timestamps(rng, n, *gap_us, t0_us=t0_us)
    return out


def write_flood_pcap(path: str | Path, n_packets: int = 200_000, seed: int = 1) -> Path:
    """A flood-heavy capture (see `flood_columns`): with 200k packets, ~150k distinct flows."""
    return write_columns(path, flood_columns(np.random.default_rng(seed), int(n_packets)))


def write_benign_pcap(path: str | Path, n_packets: int = 200_000, seed: int = 2) -> Path:
    """A benign-heavy capture (see `benign_columns`): ~2000 long-ish IoT flows and a little ARP."""
    return write_columns(path, benign_columns(np.random.default_rng(seed), int(n_packets)))
