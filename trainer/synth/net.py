"""A simulated capture: one site's LAN, its hosts, TCP connections and a small event scheduler.

`Net` holds everything one pcap needs: the site's LAN (a /22-/25 drawn from
192.168/16, 10/8 or 172.16/12, gateway at the first or last address), per-host MAC,
network stack (`Stack`: initial TTL, window, MSS, SYN option layout, ephemeral port
range -- Linux, Windows, Apple, BSD, lwIP, RTOS), hops between the host and the
capture point, IP-ID counter, the frames emitted so far, and optional ARP poisoning
(frames between poisoned pairs go through the attacker, who forwards them with
TTL - 1). Every choice is drawn per site, so no TTL, window, subnet or port range is
tied to a class. `Tcp` keeps sequence numbers straight for one connection, with the
two ends' own stacks, and loses and retransmits segments at the site's loss rate.
`run_agents` interleaves generator "agents" (a device, a bot, a scanner) in time
order until a packet budget is reached.
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
         b"\x50\xc7\xbf", b"\x2c\xaa\x8e", b"\x02\x42\xac", b"\x00\x1b\x1b", b"\x3c\x22\xfb", b"\xf0\x18\x98",
         b"\x00\x0e\x8f", b"\xac\xde\x48", b"\x00\x80\xf4", b"\x28\x63\x36")
T_BASE = 1_696_000_000.0  # 2023-09-29: the captures' start times spread over the following 60 days


class Stack:
    """A host's TCP/IP stack defaults: initial TTL, receive window, MSS, window scale,
    SYN option layout and ephemeral port range."""

    __slots__ = ("name", "ttl0", "win", "mss", "ws", "layout", "eph")

    def __init__(self, name: str, ttl0: int, win: int, mss: int, ws: int, layout: tuple[str, ...],
                 eph: tuple[int, int]):
        self.name, self.ttl0, self.win, self.mss, self.ws, self.layout, self.eph = name, ttl0, win, mss, ws, layout, eph

    @property
    def ts(self) -> bool:
        return "TS" in self.layout

    def syn_options(self, tsval: int, tsecr: int, mss: int | None = None,
                    offered: tuple[str, ...] | None = None) -> bytes:
        """SYN options; with ``offered`` (the peer's layout), SYN-ACK options: only what the peer offered."""
        out = b""
        for o in self.layout:
            if offered is not None and o in ("TS", "WS", "SACK") and o not in offered:
                continue
            if o == "MSS":
                out += b"\x02\x04" + (mss or self.mss).to_bytes(2, "big")
            elif o == "SACK":
                out += b"\x04\x02"
            elif o == "TS":
                out += b"\x08\x0a" + (tsval & 0xFFFFFFFF).to_bytes(4, "big") + (tsecr & 0xFFFFFFFF).to_bytes(4, "big")
            elif o == "WS":
                out += b"\x03\x03" + bytes([self.ws])
            elif o == "NOP":
                out += b"\x01"
            else:  # EOL
                out += b"\x00"
        return out


_LAYOUTS = {
    "linux": ("MSS", "SACK", "TS", "NOP", "WS"),
    "windows": ("MSS", "NOP", "WS", "NOP", "NOP", "SACK"),
    "apple": ("MSS", "NOP", "WS", "NOP", "NOP", "TS", "SACK", "EOL", "EOL"),
    "bsd": ("MSS", "NOP", "WS", "SACK", "TS"),
    "mss": ("MSS",),
    "mss-sack": ("MSS", "NOP", "NOP", "SACK"),
}
# stack: (initial TTLs, windows, MSS values, window scales, option layouts, ephemeral port ranges)
STACKS: dict[str, tuple] = {
    "linux": ((64,), (64240, 29200, 65160, 42340, 14600, 65535, 26883), (1460, 1460, 1448, 1400, 1380, 1452),
              (7, 7, 6, 8, 9, 10), ("linux",), ((32768, 60999), (32768, 60999), (1024, 65535), (49152, 65535))),
    "android": ((64,), (65535, 64240, 42780), (1460, 1400, 1420), (8, 9, 10), ("linux",), ((32768, 60999),)),
    "windows": ((128,), (64240, 65535, 8192, 64800), (1460, 1460, 1400, 1380), (8, 8, 2), ("windows",),
                ((49152, 65535),)),
    "apple": ((64,), (65535,), (1460, 1460, 1440, 1380), (6, 6, 5), ("apple",), ((49152, 65535),)),
    "bsd": ((64,), (65535, 65228, 32768), (1460, 1460, 1412), (6, 9), ("bsd",), ((10000, 65535), (49152, 65535))),
    "lwip": ((255, 255, 64, 128), (5744, 2920, 5840, 4380, 11680, 2144), (1460, 1436, 536, 1440), (0,),
             ("mss",), ((49152, 65535),)),
    "rtos": ((64, 255, 32, 60, 30, 128), (8192, 4096, 2048, 16384, 65535, 5840), (1460, 536, 1024, 1380), (0,),
             ("mss", "mss", "mss-sack"), ((1024, 5000), (49152, 65535), (1024, 65535), (4096, 8191))),
}
ROLE_STACKS: dict[str, tuple[str, ...]] = {  # what a kind of host runs, by weight
    "server": ("linux",) * 6 + ("bsd", "windows"),
    "desktop": ("windows",) * 5 + ("apple",) * 3 + ("linux",) * 2,
    "phone": ("android",) * 3 + ("apple",) * 2,
    "iot": ("lwip",) * 4 + ("linux",) * 4 + ("rtos",) * 2,
    "camera": ("linux",) * 5 + ("rtos",) * 2 + ("lwip",),
    "plc": ("rtos",) * 4 + ("linux", "windows"),
    "pi": ("linux",) * 8 + ("windows", "apple"),  # an attacker's box
    "bot": ("linux",) * 6 + ("lwip", "rtos", "rtos"),
    "remote": ("linux",) * 7 + ("windows", "bsd", "apple"),
}
LAN_ROLES = ("iot", "iot", "iot", "server", "desktop", "phone", "camera")


def draw_stack(rng: random.Random, name: str) -> Stack:
    ttls, wins, msss, wss, layouts, ephs = STACKS[name]
    return Stack(name, rng.choice(ttls), rng.choice(wins), rng.choice(msss), rng.choice(wss),
                 _LAYOUTS[rng.choice(layouts)], rng.choice(ephs))


class Net:
    """One capture's network and the frames sent on it."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.t0 = round(T_BASE + rng.uniform(0, 60 * 86400), 3)
        r = rng.random()
        bits = rng.choice((24, 24, 24, 24, 23, 22, 25))
        if r < 0.45:
            base = (192 << 24) | (168 << 16) | (rng.randint(0, 255) << 8)
        elif r < 0.8:
            base = (10 << 24) | (rng.randint(0, 255) << 16) | (rng.randint(0, 255) << 8)
        else:
            base = (172 << 24) | (rng.randint(16, 31) << 16) | (rng.randint(0, 255) << 8)
        self.bits = bits
        self.size = 1 << (32 - bits)
        self.mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        self.prefix = base & self.mask
        self.cidr = f"{ipstr(self.prefix)}/{bits}"
        self.subnet = (self.prefix >> 8) & 255  # third octet
        gw_off = 1 if rng.random() < 0.8 else self.size - 2
        self.gw = self.prefix | gw_off
        self.bcast = self.prefix | (self.size - 1)
        self.max_hops = rng.choice((0, 0, 0, 1, 2, 3))  # routed hops between LAN hosts and the capture point
        self.loss = rng.choice((0.0, 0.002, 0.005, 0.01, 0.03))  # segment loss rate: retransmissions
        self.pkts: list[tuple[float, bytes]] = []
        self._mac: dict[int, bytes] = {}
        self._ttl: dict[int, int] = {}
        self._stack: dict[int, Stack] = {}
        self._ipid: dict[int, int] = {}
        self._used: set[int] = {gw_off}
        # (L2 sender, L2 next hop) -> attacker IP: frames between them pass through the attacker
        self.poisoned: dict[tuple[int, int], int] = {}
        self.forward_delay = (0.00005, 0.0004)
        # per-window label rules for the manifest (trainer.dataset._rule_labels), in order: a
        # scenario whose file is not all of its class says which windows are what
        self.rules: list[dict] = []

    # ---- addresses -----------------------------------------------------------------------
    def is_lan(self, ip: int) -> bool:
        return (ip & self.mask) == self.prefix

    def hosts(self, k: int, lo: int = 2, hi: int = 254) -> list[int]:
        """k distinct unused LAN addresses at offsets lo-hi (hi >= 250: up to the end of the LAN)."""
        top = self.size - 2
        hi = top if hi >= 250 else min(hi, top)
        free = [h for h in range(lo, hi + 1) if h not in self._used]
        if len(free) < k:
            free = [h for h in range(2, top + 1) if h not in self._used]
        pick = self.rng.sample(free, k)
        self._used.update(pick)
        return [self.prefix | h for h in pick]

    def host(self, lo: int = 2, hi: int = 254) -> int:
        return self.hosts(1, lo, hi)[0]

    def neighbour(self, i: int) -> int:
        """The prefix of the i-th same-sized network after this one (a sibling VLAN)."""
        return (self.prefix + i * self.size) & 0xFFFFFFFF

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
        """MAC of a LAN host; off-LAN addresses are behind the gateway's MAC; multicast and broadcast map."""
        m = self._mac.get(ip)
        if m is not None:
            return m
        if ip >> 28 == 14:
            return b"\x01\x00\x5e" + (ip & 0x7FFFFF).to_bytes(3, "big")
        if ip == 0xFFFFFFFF or ip == self.bcast:
            return wire.BROADCAST
        if not self.is_lan(ip):
            return self.mac(self.gw)
        m = self.rng.choice(_OUIS) + self.rng.randbytes(3)
        self._mac[ip] = m
        return m

    def stack(self, ip: int) -> Stack:
        """A host's stack, drawn on first use (LAN hosts: the site's device mix; others: servers)."""
        st = self._stack.get(ip)
        if st is None:
            st = self.set_stack(ip, self.rng.choice(LAN_ROLES) if self.is_lan(ip) else "remote")
        return st

    def set_stack(self, ip: int, role: str) -> Stack:
        """Give a host a stack drawn for ``role`` (a key of ROLE_STACKS); its TTL follows."""
        st = draw_stack(self.rng, self.rng.choice(ROLE_STACKS[role]))
        self._stack[ip] = st
        self._ttl.pop(ip, None)
        return st

    def hops(self) -> int:
        return self.rng.randint(0, self.max_hops)

    def ttl(self, ip: int) -> int:
        """The TTL a host's packets carry at the capture point: its stack's initial TTL minus hops."""
        v = self._ttl.get(ip)
        if v is None:
            v = self.stack(ip).ttl0 - (self.hops() if self.is_lan(ip) else self.rng.randint(3, 24))
            self._ttl[ip] = v
        return v

    def set_ttl(self, ip: int, ttl: int) -> None:
        self._ttl[ip] = ttl

    def eport(self, ip: int) -> int:
        """An ephemeral port from the host's stack's range."""
        lo, hi = self.stack(ip).eph
        return self.rng.randint(lo, hi)

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


def _linux_syn_opts(t: float, ecr: int = 0, mss: int = 1460, ws: int = 7) -> bytes:
    ts = int(t * 1000) & 0xFFFFFFFF
    return (b"\x02\x04" + mss.to_bytes(2, "big") + b"\x04\x02\x08\x0a" + ts.to_bytes(4, "big") + ecr.to_bytes(4, "big")
            + b"\x01\x03\x03" + bytes([ws]))


def ephemeral(rng: random.Random) -> int:
    """A Linux ephemeral port (for hosts whose stack does not matter; `Net.eport` follows the host's stack)."""
    return rng.randint(32768, 60999)


class Tcp:
    """One TCP connection between client ``cli`` and server ``srv`` with consistent seq/ack numbers.

    Windows, MSS, SYN options and timestamps come from the two hosts' stacks (`Net.stack`)
    unless given; ``linux`` forces timestamps on (True) or off (False). Data segments are
    lost and retransmitted after an RTO at the site's loss rate (`Net.loss`).
    Methods take the time of the first packet they send and return the time their
    last packet was sent. ``rtt`` is the round trip between the two ends.
    """

    def __init__(self, net: Net, cli: int, srv: int, sport: int, dport: int, *, rtt: float | None = None,
                 linux: bool | None = None, cli_win: int | None = None, srv_win: int | None = None,
                 mss: int | None = None, cli_ttl: int | None = None, srv_ttl: int | None = None,
                 cli_mac: bytes | None = None):
        r = net.rng
        self.net, self.cli, self.srv, self.sport, self.dport = net, cli, srv, sport, dport
        self.cst, self.sst = net.stack(cli), net.stack(srv)
        lan = net.is_lan(cli) and net.is_lan(srv)
        self.rtt = rtt if rtt is not None else (r.uniform(0.0003, 0.004) if lan else r.uniform(0.012, 0.2))
        self.cseq = r.getrandbits(32)
        self.sseq = r.getrandbits(32)
        self.linux = (self.cst.ts and self.sst.ts) if linux is None else linux  # timestamps on every segment
        self.cwin = cli_win or self.cst.win
        self.swin = srv_win or self.sst.win
        self.mss = mss or min(self.cst.mss, self.sst.mss)
        self.cli_ttl, self.srv_ttl, self.cli_mac = cli_ttl, srv_ttl, cli_mac
        self.rto = max(0.2, self.rtt * 3) if self.cst.name != "windows" else max(0.3, self.rtt * 3)
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

    def lossy_seg(self, t: float, from_cli: bool, flags: int, payload: bytes = b"") -> float:
        """`seg`, except that at the site's loss rate the segment goes unanswered and is sent again
        after the RTO; returns the time of the copy that got through."""
        if self.net.loss and self.net.rng.random() < self.net.loss:
            keep = self.cseq if from_cli else self.sseq
            self.seg(t, from_cli, flags, payload)
            if from_cli:
                self.cseq = keep
            else:
                self.sseq = keep
            t += self.rto * self.net.rng.uniform(1.0, 1.3)
        self.seg(t, from_cli, flags, payload)
        return t

    def syn_options(self, t: float, from_cli: bool) -> bytes:
        ts = int(t * 1000) + self._ts_off[0 if from_cli else 1]
        if from_cli:
            opts = self.cst.syn_options(ts, 0)
        else:
            opts = self.sst.syn_options(ts, int((t - self.rtt / 2) * 1000) + self._ts_off[0], self.sst.mss,
                                        offered=self.cst.layout)
        if not self.linux and (self.cst.ts and self.sst.ts):  # timestamps forced off
            opts = opts.replace(b"\x08\x0a", b"\x01\x01", 1)[:4]
        elif self.linux and b"\x08\x0a" not in opts:  # forced on
            opts = _linux_syn_opts(t, 0 if from_cli else int(t * 1000) & 0xFFFFFFFF, self.mss)
        return opts

    def connect(self, t: float) -> float:
        """Three-way handshake (the SYN retransmitted after 1 s at the site's loss rate); returns the time of
        the client's ACK."""
        if self.net.loss and self.net.rng.random() < self.net.loss:
            self.seg(t, True, SYN, options=self.syn_options(t, True))
            self.cseq -= 1
            t += self.net.rng.choice((1.0, 1.0, 3.0))
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
            t = self.lossy_seg(t, from_cli, PA if last else ACK, c) if c else self.seg(t, from_cli, PA, c) or t
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
