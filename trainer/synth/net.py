"""A simulated capture: one IoT LAN, its hosts, TCP connections and a small event scheduler.

`Net` holds everything one pcap needs: a /24 LAN (gateway .1), per-host MAC, TTL
and IP-ID counter, the frames emitted so far, and optional ARP poisoning (frames
between poisoned pairs go through the attacker, who forwards them with TTL − 1).
`Tcp` keeps sequence numbers straight for one connection. `run_agents` interleaves
generator "agents" (a device, a bot, a scanner) in time order until a packet budget
is reached.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Generator, Iterable

from . import wire
from .wire import ACK, FIN, PA, RST, SYN, ipstr

Agent = Generator[float, None, None]

# vendor prefixes seen on IoT testbeds (Raspberry Pi, Espressif, Tuya, Amazon, TP-Link, Wyze, locally administered)
_OUIS = (b"\xb8\x27\xeb", b"\xdc\xa6\x32", b"\x24\x0a\xc4", b"\x84\xf3\xeb", b"\xd8\xf1\x5b", b"\x68\x54\xfd",
         b"\x50\xc7\xbf", b"\x2c\xaa\x8e", b"\x02\x42\xac")
T_BASE = 1_696_000_000.0  # 2023-09-29: the captures' start times spread over the following 60 days


class Net:
    """One capture's network and the frames sent on it."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.t0 = round(T_BASE + rng.uniform(0, 60 * 86400), 3)
        self.subnet = rng.randint(0, 254)
        self.prefix = (192 << 24) | (168 << 16) | (self.subnet << 8)
        self.gw = self.prefix | 1
        self.pkts: list[tuple[float, bytes]] = []
        self._mac: dict[int, bytes] = {}
        self._ttl: dict[int, int] = {}
        self._ipid: dict[int, int] = {}
        self._used: set[int] = {1}
        # (L2 sender, L2 next hop) -> attacker IP: frames between them pass through the attacker
        self.poisoned: dict[tuple[int, int], int] = {}
        self.forward_delay = (0.00005, 0.0004)

    # ---- addresses -----------------------------------------------------------------------
    def is_lan(self, ip: int) -> bool:
        return (ip & 0xFFFFFF00) == self.prefix

    def hosts(self, k: int, lo: int = 2, hi: int = 254) -> list[int]:
        """k distinct unused LAN addresses in .lo–.hi."""
        free = [h for h in range(lo, hi + 1) if h not in self._used]
        pick = self.rng.sample(free, k)
        self._used.update(pick)
        return [self.prefix | h for h in pick]

    def host(self, lo: int = 2, hi: int = 254) -> int:
        return self.hosts(1, lo, hi)[0]

    def public(self) -> int:
        """A random routable unicast address outside private, loopback, link-local and multicast space."""
        r = self.rng
        while True:
            a = r.randint(1, 223)
            b = r.randint(0, 255)
            if a in (10, 127, 100) or (a == 172 and 16 <= b < 32) or (a == 192 and b == 168) or (a == 169 and b == 254):
                continue
            return (a << 24) | (b << 16) | (r.randint(0, 255) << 8) | r.randint(1, 254)

    def spoofed(self) -> int:
        """A random source as ``hping3 --rand-source`` draws it (any non-loopback, non-multicast address)."""
        r = self.rng
        while True:
            ip = r.getrandbits(32)
            if 1 <= ip >> 24 < 224 and ip >> 24 != 127:
                return ip

    def mac(self, ip: int) -> bytes:
        """MAC address of a LAN host; off-LAN addresses are behind the gateway's MAC."""
        if not self.is_lan(ip):
            ip = self.gw
        m = self._mac.get(ip)
        if m is None:
            m = self.rng.choice(_OUIS) + self.rng.randbytes(3)
            self._mac[ip] = m
        return m

    def ttl(self, ip: int) -> int:
        """The TTL a host's packets carry when seen on the LAN (remote hosts: initial TTL minus hops)."""
        v = self._ttl.get(ip)
        if v is None:
            r = self.rng
            if self.is_lan(ip):
                v = r.choice((64, 64, 64, 64, 64, 255, 255, 128))
            else:
                v = r.choice((64, 64, 128, 255)) - r.randint(6, 22)
            self._ttl[ip] = v
        return v

    def set_ttl(self, ip: int, ttl: int) -> None:
        self._ttl[ip] = ttl

    def ipid(self, ip: int) -> int:
        v = self._ipid.get(ip)
        if v is None:
            v = self.rng.getrandbits(16)
        self._ipid[ip] = (v + 1) & 0xFFFF
        return v

    # ---- emitting frames -----------------------------------------------------------------
    def frame(self, t: float, dst_mac: bytes, src_mac: bytes, ethertype: int, payload: bytes) -> None:
        self.pkts.append((t, wire.ether(dst_mac, src_mac, ethertype, payload)))

    def ip(self, t: float, src: int, dst: int, proto: int, l4: bytes, *, ttl: int | None = None,
           ident: int | None = None, df: bool = True, tos: int = 0, l2src: bytes | None = None,
           l2dst: bytes | None = None) -> None:
        """Send one IP datagram (fragmented at 1500 bytes when larger)."""
        ttl = self.ttl(src) if ttl is None else ttl
        ident = self.ipid(src) if ident is None else ident
        if 20 + len(l4) <= wire.MTU:
            datagrams = [(t, wire.ipv4(src, dst, proto, l4, ttl, ident, df, tos=tos))]
        else:
            datagrams = [(t + i * 1.2e-5, wire.ipv4(src, dst, proto, data, ttl, ident, False, mf, off, tos))
                         for i, (off, mf, data) in enumerate(wire.fragments(l4))]
        sender = src if self.is_lan(src) else self.gw
        hop = dst if self.is_lan(dst) else self.gw
        attacker = self.poisoned.get((sender, hop)) if self.poisoned and l2src is None and l2dst is None else None
        smac = l2src or self.mac(src)
        if attacker is None:
            dmac = l2dst or self.mac(dst)
            for ts, d in datagrams:
                self.pkts.append((ts, wire.ether(dmac, smac, wire.ETH_P_IP, d)))
            return
        # poisoned: to the attacker's MAC, then forwarded by the attacker with TTL - 1
        amac = self.mac(attacker)
        delay = self.rng.uniform(*self.forward_delay)
        for ts, d in datagrams:
            self.pkts.append((ts, wire.ether(amac, smac, wire.ETH_P_IP, d)))
            if d[8] > 1:
                fwd = d[:8] + bytes([d[8] - 1]) + d[9:10] + b"\0\0" + d[12:20]
                fwd = fwd[:10] + wire.checksum(fwd) + fwd[12:] + d[20:]
                self.pkts.append((ts + delay, wire.ether(self.mac(hop), amac, wire.ETH_P_IP, fwd)))

    def tcp(self, t: float, src: int, dst: int, sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0,
            payload: bytes = b"", win: int = 64240, options: bytes = b"", urg: int = 0, **ip_kw) -> None:
        seg = wire.tcp(src, dst, sport, dport, flags, seq, ack, win, payload, options, urg)
        self.ip(t, src, dst, wire.PROTO_TCP, seg, **ip_kw)

    def udp(self, t: float, src: int, dst: int, sport: int, dport: int, payload: bytes = b"", **ip_kw) -> None:
        self.ip(t, src, dst, wire.PROTO_UDP, wire.udp(src, dst, sport, dport, payload), **ip_kw)

    def ping(self, t: float, src: int, dst: int, type_: int, icmp_id: int, seq: int, payload: bytes, **ip_kw) -> None:
        """ICMP echo request (8) or reply (0)."""
        self.ip(t, src, dst, wire.PROTO_ICMP, wire.echo(type_, icmp_id, seq, payload), **ip_kw)

    def icmp_error(self, t: float, reporter: int, original: bytes, type_: int = 3, code: int = 3, **ip_kw) -> None:
        """An ICMP error about ``original`` (an IP datagram), quoting as much as fits in 576 bytes (Linux)."""
        dst = int.from_bytes(original[12:16], "big")
        self.ip(t, reporter, dst, wire.PROTO_ICMP, wire.icmp(type_, code, b"\0\0\0\0", original[:548]), df=False,
                tos=0xC0, **ip_kw)

    def arp(self, t: float, op: int, sender: int, target: int, *, sha: bytes | None = None, tha: bytes | None = None,
            l2dst: bytes | None = None, l2src: bytes | None = None) -> None:
        """ARP request (op 1, broadcast unless l2dst) or reply (op 2, to the target)."""
        sha = sha or self.mac(sender)
        if op == 1:
            tha = tha or wire.ZERO_MAC
            dst = l2dst or wire.BROADCAST
        else:
            tha = tha or self.mac(target)
            dst = l2dst or tha
        self.frame(t, dst, l2src or sha, wire.ETH_P_ARP, wire.arp(op, sha, sender, tha, target))

    def poison(self, attacker: int, a: int, b: int) -> None:
        """From now on frames between LAN hosts a and b (both ways) pass through ``attacker``."""
        self.poisoned[(a, b)] = attacker
        self.poisoned[(b, a)] = attacker


def ephemeral(rng: random.Random) -> int:
    return rng.randint(32768, 60999)


def _linux_syn_opts(t: float, ecr: int = 0, mss: int = 1460, ws: int = 7) -> bytes:
    ts = int(t * 1000) & 0xFFFFFFFF
    return (b"\x02\x04" + mss.to_bytes(2, "big") + b"\x04\x02\x08\x0a" + ts.to_bytes(4, "big") + ecr.to_bytes(4, "big")
            + b"\x01\x03\x03" + bytes([ws]))


class Tcp:
    """One TCP connection between client ``cli`` and server ``srv`` with consistent seq/ack numbers.

    Methods take the time of the first packet they send and return the time their
    last packet was sent. ``rtt`` is the round trip between the two ends.
    """

    def __init__(self, net: Net, cli: int, srv: int, sport: int, dport: int, *, rtt: float | None = None,
                 linux: bool | None = None, cli_win: int | None = None, srv_win: int | None = None,
                 mss: int = 1460, cli_ttl: int | None = None, srv_ttl: int | None = None,
                 cli_mac: bytes | None = None):
        r = net.rng
        self.net, self.cli, self.srv, self.sport, self.dport = net, cli, srv, sport, dport
        lan = net.is_lan(cli) and net.is_lan(srv)
        self.rtt = rtt if rtt is not None else (r.uniform(0.0003, 0.004) if lan else r.uniform(0.015, 0.12))
        self.cseq = r.getrandbits(32)
        self.sseq = r.getrandbits(32)
        self.linux = r.random() < 0.6 if linux is None else linux  # timestamps on every segment
        self.cwin = cli_win or r.choice((64240, 64240, 29200, 65535, 5840, 14600))
        self.swin = srv_win or r.choice((65160, 64240, 28960, 5792, 8192, 14480))
        self.mss = mss
        self.cli_ttl, self.srv_ttl, self.cli_mac = cli_ttl, srv_ttl, cli_mac
        self._ts_off = (r.getrandbits(32), r.getrandbits(32))

    def _opts(self, t: float, from_cli: bool) -> bytes:
        if not self.linux:
            return b""
        mine = (int(t * 1000) + self._ts_off[0 if from_cli else 1]) & 0xFFFFFFFF
        peer = (int((t - self.rtt / 2) * 1000) + self._ts_off[1 if from_cli else 0]) & 0xFFFFFFFF
        return b"\x01\x01\x08\x0a" + mine.to_bytes(4, "big") + peer.to_bytes(4, "big")

    def seg(self, t: float, from_cli: bool, flags: int, payload: bytes = b"", options: bytes | None = None,
            win: int | None = None) -> None:
        """Send one segment and advance that side's sequence number."""
        n = self.net
        if options is None:
            options = self._opts(t, from_cli)
        if from_cli:
            n.tcp(t, self.cli, self.srv, self.sport, self.dport, flags, self.cseq, self.sseq if flags & ACK else 0,
                  payload, self.cwin if win is None else win, options, ttl=self.cli_ttl, l2src=self.cli_mac)
            self.cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        else:
            n.tcp(t, self.srv, self.cli, self.dport, self.sport, flags, self.sseq, self.cseq if flags & ACK else 0,
                  payload, self.swin if win is None else win, options, ttl=self.srv_ttl)
            self.sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)

    def syn_options(self, t: float, from_cli: bool) -> bytes:
        if self.linux:
            return _linux_syn_opts(t, 0 if from_cli else (int(t * 1000) & 0xFFFFFFFF), self.mss)
        return b"\x02\x04" + self.mss.to_bytes(2, "big")

    def connect(self, t: float) -> float:
        """Three-way handshake; returns the time of the client's ACK."""
        self.seg(t, True, SYN, options=self.syn_options(t, True))
        t += self.rtt / 2
        self.seg(t, False, SYN | ACK, options=self.syn_options(t, False))
        t += self.rtt / 2
        self.seg(t, True, ACK)
        return t

    def send(self, t: float, from_cli: bool, payload: bytes, flags: int = PA) -> float:
        self.seg(t, from_cli, flags, payload)
        return t

    def ack(self, t: float, from_cli: bool) -> float:
        self.seg(t, from_cli, ACK)
        return t

    def transfer(self, t: float, from_cli: bool, data: bytes, gap: float = 0.00012, ack_last: bool = True) -> float:
        """Send ``data`` in MSS-sized segments (PSH on the last); the receiver ACKs every second one and,
        when ``ack_last``, the last. Returns the time of the last packet sent."""
        mss = self.mss - (12 if self.linux else 0)
        chunks = [data[i:i + mss] for i in range(0, len(data), mss)] or [b""]
        for i, c in enumerate(chunks):
            last = i == len(chunks) - 1
            self.seg(t, from_cli, PA if last else ACK, c)
            if last:
                if ack_last:
                    t += self.rtt / 2
                    self.seg(t, not from_cli, ACK)
                return t
            if i % 2 == 1:
                self.seg(t + self.rtt / 2, not from_cli, ACK)
            t += gap
        return t

    def exchange(self, t: float, request: bytes, response: bytes | None, from_cli: bool = True,
                 think: float = 0.0005) -> float:
        """A request, the peer's response (which carries the ACK) and the requester's ACK of it;
        without a response, the peer's delayed ACK. Returns the time of the last packet."""
        t = self.transfer(t, from_cli, request, ack_last=False) + self.rtt / 2
        if response is None:
            self.seg(t + 0.04, not from_cli, ACK)
            return t + 0.04
        return self.transfer(t + think, not from_cli, response)

    def close(self, t: float, from_cli: bool = True) -> float:
        """FIN from one side, FIN+ACK from the other, final ACK."""
        self.seg(t, from_cli, FIN | ACK)
        t += self.rtt / 2
        self.seg(t, not from_cli, FIN | ACK)
        t += self.rtt / 2
        self.seg(t, from_cli, ACK)
        return t

    def reset(self, t: float, from_cli: bool = True, with_ack: bool = True) -> float:
        self.seg(t, from_cli, (RST | ACK) if with_ack else RST)
        return t

    def __repr__(self) -> str:
        return f"Tcp({ipstr(self.cli)}:{self.sport} -> {ipstr(self.srv)}:{self.dport})"


def run_agents(net: Net, agents: Iterable[Agent], budget: int) -> None:
    """Run agents in time order until ``net`` holds ``budget`` frames or every agent has finished.

    An agent is a generator that emits frames for its current time and yields the
    time it wants to be resumed at; its first yield says when it starts.
    """
    heap: list[tuple[float, int, Agent]] = []
    for i, g in enumerate(agents):
        t = next(g, None)
        if t is not None:
            heap.append((t, i, g))
    heapq.heapify(heap)
    while heap and len(net.pkts) < budget:
        _, i, g = heapq.heappop(heap)
        t = next(g, None)
        if t is not None:
            heapq.heappush(heap, (t, i, g))
