"""Regenerate ids_daemon/data/sample.pcap: a small, seeded IoT capture for the demo.

Benign MQTT/CoAP/DNS/NTP/HTTP traffic between a few devices, then a spoofed-source
SYN flood, an ICMP flood and a port scan. Run: python scripts/make_sample_pcap.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from scapy.all import ARP, DNS, DNSQR, DNSRR, ICMP, IP, NTP, TCP, UDP, Ether, Raw, wrpcap

T0 = 1_700_000_000.0
NET = "192.168.50."
BROKER, WEB, GW = NET + "2", NET + "3", NET + "1"
DEVICES = [NET + str(10 + i) for i in range(12)]


def mac(ip: str) -> str:
    return "02:00:00:00:%02x:%02x" % (int(ip.split(".")[2]) & 0xFF, int(ip.split(".")[3]))


def frame(src: str, dst: str, l4, t: float):
    p = Ether(src=mac(src), dst=mac(dst)) / IP(src=src, dst=dst, ttl=64) / l4
    p.time = t
    return p


def tcp_session(rng, cli, srv, dport, t, exchanges, payload=b"x" * 40):
    sport = rng.randint(20000, 60000)
    seq, ack = rng.randint(1, 1 << 30), rng.randint(1, 1 << 30)
    out = [frame(cli, srv, TCP(sport=sport, dport=dport, flags="S", seq=seq), t),
           frame(srv, cli, TCP(sport=dport, dport=sport, flags="SA", seq=ack, ack=seq + 1), t + 0.001),
           frame(cli, srv, TCP(sport=sport, dport=dport, flags="A", seq=seq + 1, ack=ack + 1), t + 0.002)]
    t += 0.01
    for _ in range(exchanges):
        out.append(frame(cli, srv, TCP(sport=sport, dport=dport, flags="PA") / Raw(payload), t))
        out.append(frame(srv, cli, TCP(sport=dport, dport=sport, flags="PA") / Raw(payload[:20]), t + 0.002))
        out.append(frame(cli, srv, TCP(sport=sport, dport=dport, flags="A"), t + 0.003))
        t += rng.uniform(0.05, 0.4)
    out.append(frame(cli, srv, TCP(sport=sport, dport=dport, flags="FA"), t))
    out.append(frame(srv, cli, TCP(sport=dport, dport=sport, flags="FA"), t + 0.001))
    out.append(frame(cli, srv, TCP(sport=sport, dport=dport, flags="A"), t + 0.002))
    return out


def build(seed: int = 7) -> list:
    rng = random.Random(seed)
    pkts = []
    for i, dev in enumerate(DEVICES):
        t = T0 + i * 0.05
        a = Ether(src=mac(dev), dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=dev, pdst=GW, hwsrc=mac(dev))
        a.time = t
        r = Ether(src=mac(GW), dst=mac(dev)) / ARP(op=2, psrc=GW, pdst=dev, hwsrc=mac(GW), hwdst=mac(dev))
        r.time = t + 0.0005
        pkts += [a, r]
        pkts += tcp_session(rng, dev, BROKER, 1883, t + 0.1, exchanges=rng.randint(15, 30))
        for k in range(rng.randint(3, 6)):
            tq = t + 1 + k * rng.uniform(0.5, 2)
            qid = rng.randint(0, 65535)
            pkts.append(frame(dev, GW, UDP(sport=rng.randint(30000, 60000), dport=53) /
                              DNS(id=qid, qd=DNSQR(qname=f"dev{i}.iot.example")), tq))
            pkts.append(frame(GW, dev, UDP(sport=53, dport=pkts[-1][UDP].sport) /
                              DNS(id=qid, qr=1, qd=DNSQR(qname=f"dev{i}.iot.example"),
                                  an=DNSRR(rrname=f"dev{i}.iot.example", rdata=BROKER)), tq + 0.003))
            pkts.append(frame(dev, BROKER, UDP(sport=5683, dport=5683) / Raw(b"\x40\x01" + bytes(rng.randbytes(10))),
                              tq + 0.2))
            pkts.append(frame(BROKER, dev, UDP(sport=5683, dport=5683) / Raw(b"\x60\x45" + bytes(rng.randbytes(30))),
                              tq + 0.205))
        pkts.append(frame(dev, GW, UDP(sport=123, dport=123) / NTP(), t + 3))
        pkts.append(frame(GW, dev, UDP(sport=123, dport=123) / NTP(mode=4), t + 3.002))
        if i % 3 == 0:
            pkts += tcp_session(rng, dev, WEB, 80, t + 4, exchanges=4, payload=b"GET /status HTTP/1.1\r\n\r\n" * 2)
    # attacks, after the benign part
    t = T0 + 12
    for k in range(600):  # spoofed-source SYN flood on the web server
        src = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        p = Ether(src=mac(GW), dst=mac(WEB)) / IP(src=src, dst=WEB, ttl=rng.choice([64, 128, 255])) / \
            TCP(sport=rng.randint(1024, 65535), dport=80, flags="S", seq=rng.randint(0, 1 << 31))
        p.time = t + k * 0.0008
        pkts.append(p)
    t += 1
    for k in range(300):  # ICMP echo flood from one device
        pkts.append(frame(DEVICES[3], BROKER, ICMP(type=8, id=7, seq=k) / Raw(b"\x00" * 56), t + k * 0.001))
    t += 1
    for port in range(1, 200):  # SYN port scan; closed ports answer RST
        pkts.append(frame(DEVICES[5], WEB, TCP(sport=40000, dport=port, flags="S"), t + port * 0.002))
        pkts.append(frame(WEB, DEVICES[5], TCP(sport=port, dport=40000, flags="RA"), t + port * 0.002 + 0.0003))
    pkts.sort(key=lambda p: float(p.time))
    return pkts


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "ids_daemon/data/sample.pcap"
    pk = build()
    wrpcap(str(out), pk)
    print(f"wrote {len(pk)} packets to {out}")
