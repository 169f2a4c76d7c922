"""The attack scenarios, one function per CICIoT2023 class.

Modelled on the CICIoT2023 testbed: IoT devices on a /24 LAN behind a gateway,
the attackers (Raspberry Pis, Mirai bots) inside the LAN. Each function fills a
`Net` with about ``budget`` frames of one attack only — attacker and victim
packets, including the replies a real victim sends (SYN-ACK/RST, echo replies,
ICMP unreachables, ...) — and returns a one-line description of its parameters.
``k`` is the file's number within its class plus a per-(seed, class) offset; it
rotates the main discrete choice (`_pick`) so that a class's files differ.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from . import payloads as P
from . import wire
from .benign import CLOUD_NAMES, cloud_agent, mqtt_agent, ntp_agent
from .net import Agent, Net, Tcp, ephemeral, run_agents
from .wire import ACK, CWR, ECE, FIN, PA, PSH, RA, RST, SA, SYN, URG, ipstr

OPEN_TCP = (80, 443, 1883, 8080, 22, 23, 8883, 554)


def _pick(k: int, options: tuple):
    """The file's variant: files k, k+1, ... of a class take successive options (cyclically)."""
    return options[k % len(options)]


def _ttl_draw(rng: random.Random, mode: str) -> int:
    return rng.choice((64, 128, 255)) - rng.randint(0, 2) if mode == "mixed" else int(mode)


def _tool_ttl(net: Net, host: int | None = None) -> int:
    """The TTL a raw-socket tool's packets carry at the capture point, minus the site's hops: per file,
    the tool's default 64 (hping3, Mirai), the sending host's own stack, or an operator's --ttl."""
    rng = net.rng
    mode = getattr(net, "tool_ttl", None)
    if mode is None:
        r = rng.random()
        mode = 64 if r < 0.35 else (0 if r < 0.7 else rng.choice((128, 255, 32, rng.randint(30, 255))))
        net.tool_ttl = mode
    if mode == 0:
        return net.ttl(host) if host is not None else 64 - net.hops()
    return mode - net.hops()


def _svc_port(rng: random.Random, ports: tuple[int, ...] = (80, 443, 1883, 8080, 22, 23, 8883, 554)) -> int:
    """A victim service's port: a common one or, in a fifth of the files, one a site moved elsewhere."""
    return rng.choice(ports) if rng.random() < 0.8 else rng.randint(1024, 65535)


def _ttl_text(mode: str) -> str:
    return "~64/128/255 (random per packet)" if mode == "mixed" else mode


def _rate(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), -1)


SLOW_FLOOD, FAST_FLOOD = 20.0, 100_000.0  # packets/s: the span of flood rates the model must know


def _flood_rate(rng: random.Random, lo: float, hi: float) -> float:
    """A flood's rate: mostly the testbed's [lo, hi] (CICIoT2023's tools at full tilt), but a
    quarter of the files trickle (log-uniform from SLOW_FLOOD up to lo: a flood ramping up, a
    rate-limited bot, a spoofed flood through a slow link, where no volume rule fires yet) and a
    tenth run faster than the testbed (up to FAST_FLOOD). A model that met only the testbed's
    rates would have learnt a rate, not a flood."""
    r = rng.random()
    if r < 0.25:
        return round(math.exp(rng.uniform(math.log(SLOW_FLOOD), math.log(lo))), 1)
    if r < 0.35:
        return round(math.exp(rng.uniform(math.log(hi), math.log(FAST_FLOOD))), -1)
    return _rate(rng, lo, hi)


def _victim(net: Net) -> int:
    return net.host(2, 250)


def _attacker(net: Net) -> int:
    a = net.host(2, 250)
    net.set_stack(a, "pi")
    return a


def _bots(net: Net, lo: int, hi: int) -> list[int]:
    bots = net.hosts(net.rng.randint(lo, hi), 2, 250)
    for b in bots:
        net.set_stack(b, "bot")
    return bots


def _dur(net: Net) -> float:
    ts = [t for t, _ in net.pkts]
    return max(ts) - min(ts) if ts else 0.0


def _spoof_note(n_bots: int) -> str:
    return f"sent by {n_bots} bot{'s' if n_bots > 1 else ''}"


# ---- TCP floods --------------------------------------------------------------------------------


def _tcp_flood(net: Net, budget: int, *, victim: int, dport_of: Callable[[], int], src_of: Callable[[], int],
               sport_of: Callable[[], int], flags_of: Callable[[], int], ttl_of: Callable[[], int], rate: float,
               macs: list[bytes], win: int, payload_len: Callable[[], int], reply: float,
               attacker_rst: int | None = None, open_ports: tuple[int, ...] | None = None) -> None:
    """A raw-socket TCP flood (hping3 style: 20-byte header, no options) and the victim's answers.

    The victim answers a SYN on a listening port with SYN-ACK, a SYN on a closed port and
    any non-RST segment on a closed port with RST, an ACK-bearing segment on a listening
    port with RST; ``reply`` is the fraction it manages to answer under load.
    ``attacker_rst``: the attacker's own address, whose kernel resets every SYN-ACK it gets.
    """
    rng = net.rng
    t = net.t0
    vttl = net.ttl(victim)
    vmac = net.mac(victim)
    vst = net.stack(victim)
    open_ports = open_ports if open_ports is not None else (dport_of(),)
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        src, sport, dport, flags = src_of(), sport_of(), dport_of(), flags_of()
        seq = rng.getrandbits(32)
        ackn = rng.getrandbits(32) if flags & ACK else 0
        n = payload_len()
        net.tcp(t, src, victim, sport, dport, flags, seq, ackn, rng.randbytes(n) if n else b"", win,
                ttl=ttl_of(), ident=rng.getrandbits(16), df=False, l2src=rng.choice(macs), l2dst=vmac)
        if flags & RST or rng.random() >= reply:
            continue
        tr = t + rng.uniform(0.00003, 0.002)
        is_open = dport in open_ports
        if flags & SYN and not flags & ACK and is_open:
            rack = seq + 1 + n + (1 if flags & FIN else 0)
            rflags, rseq, opts = SA, rng.getrandbits(32), b"\x02\x04" + vst.mss.to_bytes(2, "big")
        elif flags & ACK:
            rflags, rseq, rack, opts = RST, ackn, 0, b""
        elif is_open:
            continue  # a listening socket drops a segment without SYN or ACK
        else:
            rflags, rseq, rack, opts = RA, 0, seq + n + (1 if flags & SYN else 0) + (1 if flags & FIN else 0), b""
        net.tcp(tr, victim, src, dport, sport, rflags, rseq, rack, b"", vst.win if rflags == SA else 0, opts,
                ttl=vttl, l2src=vmac)
        if rflags == SA and attacker_rst is not None:
            net.tcp(tr + rng.uniform(0.00002, 0.0003), attacker_rst, victim, sport, dport, RST, rack, 0, b"", 0)


def ddos_syn_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    dport = _pick(k, (80, 443, 1883, 8080, 23)) if rng.random() < 0.8 else rng.randint(1024, 65535)
    ttl_mode = _pick(k, ("fixed", "mixed", "fixed"))
    ttl_mode = str(_tool_ttl(net, rng.choice(bots))) if ttl_mode == "fixed" else ttl_mode
    rate = _flood_rate(rng, 3000, 12000)
    win = rng.choice((64, 512, 1024, 65535))
    reply = rng.uniform(0.15, 0.8)
    plen = rng.choice((0, 0, 0, rng.randint(10, 120)))
    _tcp_flood(net, budget, victim=victim, dport_of=lambda: dport, src_of=net.spoofed,
               sport_of=lambda: rng.randint(1024, 65535), flags_of=lambda: SYN,
               ttl_of=lambda: _ttl_draw(rng, ttl_mode), rate=rate, macs=[net.mac(b) for b in bots], win=win,
               payload_len=lambda: plen, reply=reply)
    return (f"spoofed-source SYN flood on {ipstr(victim)}:{dport} at ~{rate:.0f} pkt/s, {_spoof_note(len(bots))}, "
            f"random src ip+port per packet, ttl {_ttl_text(ttl_mode)}, window {win}, {plen} payload bytes; "
            f"victim SYN-ACKs {reply:.0%} of them")


def dos_syn_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim, attacker = _victim(net), _attacker(net)
    dport = _pick(k, (80, 443, 1883, 8080, 22)) if rng.random() < 0.8 else rng.randint(1024, 65535)
    rate = _flood_rate(rng, 1500, 9000)
    win = rng.choice((64, 512, 1024, 2048))
    ttl = _tool_ttl(net, attacker)
    reply = rng.uniform(0.5, 1.0)
    base = [rng.randint(1024, 60000)]

    def sport() -> int:
        base[0] = base[0] + 1 if base[0] < 65535 else 1024
        return base[0]

    _tcp_flood(net, budget, victim=victim, dport_of=lambda: dport, src_of=lambda: attacker, sport_of=sport,
               flags_of=lambda: SYN, ttl_of=lambda: ttl, rate=rate, macs=[net.mac(attacker)], win=win,
               payload_len=lambda: 0, reply=reply, attacker_rst=attacker)
    return (f"single-source SYN flood (hping3 -S --flood) {ipstr(attacker)} -> {ipstr(victim)}:{dport} at ~{rate:.0f} "
            f"pkt/s, incrementing source ports, ttl {ttl}, window {win}; victim SYN-ACKs {reply:.0%}, "
            f"attacker kernel RSTs each SYN-ACK")


def _flag_mix(rng: random.Random, k: int) -> tuple[str, Callable[[], int]]:
    mixes = {
        "ACK": (ACK,) * 6 + (PA, SYN),
        "PSH-ACK/ACK": (ACK, PA, PA, ACK, FIN | ACK),
        "random flags": tuple(range(1, 64)),
        "SYN/ACK/FIN/RST mix": (SYN, ACK, FIN, RST, PA, SA, FIN | ACK, URG | ACK, 0),
    }
    name = _pick(k, tuple(mixes))
    choices = mixes[name]
    return name, lambda: rng.choice(choices)


def ddos_tcp_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 3, 12)
    ports = tuple({_svc_port(rng) for _ in range(rng.randint(1, 3))})
    name, flags_of = _flag_mix(rng, k)
    spoof = rng.random() < 0.6
    ttls = [_tool_ttl(net, b) for b in bots]
    rate = _flood_rate(rng, 3000, 12000)
    plen = rng.choice((0, 0, rng.randint(1, 64), rng.randint(100, 1000)))
    _tcp_flood(net, budget, victim=victim, dport_of=lambda: rng.choice(ports),
               src_of=net.spoofed if spoof else (lambda: rng.choice(bots)),
               sport_of=lambda: rng.randint(1024, 65535), flags_of=flags_of, ttl_of=lambda: rng.choice(ttls), rate=rate,
               macs=[net.mac(b) for b in bots], win=rng.choice((64, 512, 65535)), payload_len=lambda: plen,
               reply=rng.uniform(0.2, 0.8), open_ports=ports)
    return (f"TCP flood on {ipstr(victim)} open ports {list(ports)} at ~{rate:.0f} pkt/s, {name}, "
            f"{'spoofed sources' if spoof else 'bot addresses'}, {_spoof_note(len(bots))}, {plen} payload bytes; "
            f"victim RST/SYN-ACK replies")


def dos_tcp_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim, attacker = _victim(net), _attacker(net)
    ports = tuple({_svc_port(rng) for _ in range(rng.randint(1, 2))})
    ttl = _tool_ttl(net, attacker)
    name, flags_of = _flag_mix(rng, k)
    rate = _flood_rate(rng, 2000, 9000)
    plen = rng.choice((0, 0, rng.randint(1, 64), rng.randint(100, 1000)))
    base = [rng.randint(1024, 60000)]

    def sport() -> int:
        base[0] = base[0] + 1 if base[0] < 65535 else 1024
        return base[0]

    _tcp_flood(net, budget, victim=victim, dport_of=lambda: rng.choice(ports), src_of=lambda: attacker,
               sport_of=sport, flags_of=flags_of, ttl_of=lambda: ttl, rate=rate, macs=[net.mac(attacker)],
               win=rng.choice((64, 512)), payload_len=lambda: plen, reply=rng.uniform(0.5, 1.0), open_ports=ports,
               attacker_rst=attacker)
    return (f"single-source TCP flood {ipstr(attacker)} -> {ipstr(victim)} ports {list(ports)} at ~{rate:.0f} pkt/s, "
            f"{name}, incrementing source ports, {plen} payload bytes; victim RST/SYN-ACK replies")


def ddos_rstfin_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    dmode = _pick(k, ("fixed", "random"))
    dport = _svc_port(rng)
    rate = _flood_rate(rng, 3000, 12000)
    ttl_mode = rng.choice(("fixed", "mixed"))
    ttl_mode = str(_tool_ttl(net, rng.choice(bots))) if ttl_mode == "fixed" else ttl_mode
    _tcp_flood(net, budget, victim=victim,
               dport_of=(lambda: dport) if dmode == "fixed" else (lambda: rng.randint(1, 65535)), src_of=net.spoofed,
               sport_of=lambda: rng.randint(1024, 65535), flags_of=lambda: RST | FIN,
               ttl_of=lambda: _ttl_draw(rng, ttl_mode), rate=rate, macs=[net.mac(b) for b in bots],
               win=rng.choice((64, 512, 0)), payload_len=lambda: 0, reply=0.0)
    return (f"spoofed RST+FIN flood (hping3 -R -F --rand-source) on {ipstr(victim)} "
            f"{'port ' + str(dport) if dmode == 'fixed' else 'random ports'} at ~{rate:.0f} pkt/s, "
            f"ttl {_ttl_text(ttl_mode)}, {_spoof_note(len(bots))}; no replies (RST segments are never answered)")


def ddos_pshack_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    dport = _svc_port(rng)
    ttl = _tool_ttl(net, bots[0])
    size_mode = _pick(k, ("fixed", "random"))
    size = rng.randint(1, 1400)
    rate = _flood_rate(rng, 3000, 12000)
    _tcp_flood(net, budget, victim=victim, dport_of=lambda: dport, src_of=net.spoofed,
               sport_of=lambda: rng.randint(1024, 65535), flags_of=lambda: PA, ttl_of=lambda: ttl, rate=rate,
               macs=[net.mac(b) for b in bots], win=rng.choice((64, 512, 65535)),
               payload_len=(lambda: size) if size_mode == "fixed" else (lambda: rng.randint(1, 1400)),
               reply=rng.uniform(0.1, 0.6))
    return (f"spoofed PSH+ACK flood on {ipstr(victim)}:{dport} at ~{rate:.0f} pkt/s, "
            f"{'payload ' + str(size) + ' bytes' if size_mode == 'fixed' else 'random payload 1-1400 bytes'}, "
            f"{_spoof_note(len(bots))}; victim RSTs part of them")


def ddos_synonymous_ip_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    dmode = _pick(k, ("fixed", "random"))
    dport = _svc_port(rng)
    rate = _flood_rate(rng, 3000, 12000)
    ttl = _tool_ttl(net, bots[0])
    _tcp_flood(net, budget, victim=victim,
               dport_of=(lambda: dport) if dmode == "fixed" else (lambda: rng.randint(1, 65535)),
               src_of=lambda: victim, sport_of=lambda: rng.randint(1024, 65535), flags_of=lambda: SYN,
               ttl_of=lambda: ttl, rate=rate, macs=[net.mac(b) for b in bots], win=rng.choice((64, 512)),
               payload_len=lambda: 0, reply=0.0)
    return (f"synonymous-IP SYN flood (source address = destination = {ipstr(victim)}) on "
            f"{'port ' + str(dport) if dmode == 'fixed' else 'random ports'} at ~{rate:.0f} pkt/s, "
            f"{_spoof_note(len(bots))}; the victim's answers to itself never reach the wire")


def ddos_ack_fragmentation(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    spoof = _pick(k, (True, False))
    size = rng.choice((1600, 2400, 2960, 4400, 1480 * 3 - 20))
    rate = _flood_rate(rng, 800, 3500)  # datagrams/s; fragments are 2-4x that
    dport = _svc_port(rng)
    reply = rng.uniform(0.1, 0.6)
    ttls = {b: _tool_ttl(net, b) for b in bots}
    vmac = net.mac(victim)
    t = net.t0
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        bot = rng.choice(bots)
        src = net.spoofed() if spoof else bot
        sport = rng.randint(1024, 65535)
        ackn = rng.getrandbits(32)
        seq = rng.getrandbits(32)
        plen = size + rng.randint(-8, 8) * 8
        net.tcp(t, src, victim, sport, dport, ACK, seq, ackn, rng.randbytes(plen), rng.choice((512, 1024, 65535)),
                ttl=ttls[bot], ident=rng.getrandbits(16), l2src=net.mac(bot), l2dst=vmac)
        if rng.random() < reply:
            net.tcp(t + rng.uniform(0.0002, 0.003), victim, src, dport, sport, RST, ackn, 0, b"", 0)
    return (f"fragmented TCP ACK flood on {ipstr(victim)}:{dport}: ~{size}-byte ACK segments split at MTU 1500 "
            f"({-(-(size + 20) // wire.FRAG_CHUNK)} fragments each, MF + offsets), ~{rate:.0f} datagrams/s from "
            f"{len(bots)} bots{' with spoofed sources' if spoof else ''}; victim RSTs {reply:.0%} after reassembly")


# ---- UDP and ICMP floods -----------------------------------------------------------------------


def _udp_flood(net: Net, budget: int, *, victim: int, src_of: Callable[[], int], sport_of: Callable[[], int],
               dport_of: Callable[[], int], size_of: Callable[[], int], rate: float, macs: list[bytes],
               ttl: int, closed: bool, df: bool = False, unreach_per_s: float = 1000.0,
               ident_of: Callable[[], int] | None = None) -> None:
    """UDP flood; a closed port earns ICMP port unreachables, rate-limited as Linux does (token bucket)."""
    rng = net.rng
    t = net.t0
    vmac = net.mac(victim)
    burst = 6.0 if unreach_per_s <= 1 else 50.0
    tokens, last = burst, t
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        src = src_of()
        d = wire.udp(src, victim, sport_of(), dport_of(), rng.randbytes(size_of()))
        ident = ident_of() if ident_of else rng.getrandbits(16)
        net.ip(t, src, victim, wire.PROTO_UDP, d, ttl=ttl, ident=ident, df=df, l2src=rng.choice(macs), l2dst=vmac)
        if closed:
            tokens = min(burst, tokens + (t - last) * unreach_per_s)
            last = t
            if tokens >= 1 and len(d) + 20 <= wire.MTU:
                tokens -= 1
                orig = wire.ipv4(src, victim, wire.PROTO_UDP, d, ttl, ident, df)
                net.icmp_error(t + rng.uniform(0.00003, 0.0005), victim, orig, 3, 3)


def ddos_udp_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    dmode = _pick(k, ("fixed", "random"))
    dport = rng.choice((53, 80, 123, 161, 1900, 5683, 7547, rng.randint(1024, 65535)))
    size_mode = rng.choice(("fixed", "random"))
    size = rng.randint(0, 1400)
    rate = _flood_rate(rng, 3000, 14000)
    closed = dmode == "random" or dport not in (53, 123, 5683)
    ups = 1000.0  # Linux: icmp_msgs_per_sec (the per-destination limit never bites: every source is new)
    _udp_flood(net, budget, victim=victim, src_of=net.spoofed, sport_of=lambda: rng.randint(1024, 65535),
               dport_of=(lambda: dport) if dmode == "fixed" else (lambda: rng.randint(1, 65535)),
               size_of=(lambda: size) if size_mode == "fixed" else (lambda: rng.randint(0, 1400)), rate=rate,
               macs=[net.mac(b) for b in bots], ttl=_tool_ttl(net, bots[0]), closed=closed, unreach_per_s=ups)
    return (f"spoofed UDP flood on {ipstr(victim)} {'port ' + str(dport) if dmode == 'fixed' else 'random ports'} "
            f"at ~{rate:.0f} pkt/s, {_spoof_note(len(bots))}, "
            f"{str(size) + '-byte' if size_mode == 'fixed' else '0-1400-byte random'} payloads"
            f"{f'; ICMP port unreachables (<= {ups:.0f}/s)' if closed else ''}")


def dos_udp_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim, attacker = _victim(net), _attacker(net)
    smode = _pick(k, ("incrementing", "fixed"))
    base = [rng.randint(1024, 60000)]

    def sport() -> int:
        if smode == "incrementing":
            base[0] = base[0] + 1 if base[0] < 65535 else 1024
        return base[0]

    dport = rng.choice((53, 80, 123, 1900, 5683, rng.randint(1024, 65535)))
    size = rng.choice((0, 8, 64, 512, 1024, rng.randint(0, 1400)))
    rate = _flood_rate(rng, 2000, 9000)
    closed = dport not in (53, 123, 5683)
    _udp_flood(net, budget, victim=victim, src_of=lambda: attacker, sport_of=sport, dport_of=lambda: dport,
               size_of=lambda: size, rate=rate, macs=[net.mac(attacker)], ttl=_tool_ttl(net, attacker), closed=closed,
               unreach_per_s=1.0)
    return (f"single-source UDP flood {ipstr(attacker)} -> {ipstr(victim)}:{dport} at ~{rate:.0f} pkt/s, "
            f"{smode} source port, {size}-byte payloads"
            f"{'; ICMP port unreachables (1/s, Linux rate limit)' if closed else ''}")


def ddos_udp_fragmentation(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    spoof = _pick(k, (True, False))
    size = rng.choice((1600, 2200, 2952, 4000, 8000))
    dport = rng.choice((53, 80, 123, 5683, rng.randint(1024, 65535)))
    rate = _flood_rate(rng, 600, 3000)
    _udp_flood(net, budget, victim=victim, src_of=net.spoofed if spoof else (lambda: rng.choice(bots)),
               sport_of=lambda: rng.randint(1024, 65535), dport_of=lambda: dport,
               size_of=lambda: size + rng.randint(-16, 16), rate=rate, macs=[net.mac(b) for b in bots],
               ttl=_tool_ttl(net, bots[0]), closed=False)
    return (f"fragmented UDP flood on {ipstr(victim)}:{dport}: ~{size}-byte datagrams split at MTU 1500 "
            f"({-(-(size + 8) // wire.FRAG_CHUNK)} fragments each), ~{rate:.0f} datagrams/s from {len(bots)} bots"
            f"{' with spoofed sources' if spoof else ''}")


def ddos_icmp_flood(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    size = _pick(k, (56, 0, 64, 120, 512, 1000, rng.randint(1, 1400)))
    rate = _flood_rate(rng, 3000, 14000)
    reply = rng.uniform(0.3, 1.0)
    ttl_mode = rng.choice(("fixed", "mixed"))
    ttl_mode = str(_tool_ttl(net, rng.choice(bots))) if ttl_mode == "fixed" else ttl_mode
    macs = [net.mac(b) for b in bots]
    vmac = net.mac(victim)
    ident = rng.getrandbits(16)
    pay = rng.randbytes(size)
    t = net.t0
    seq = 0
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        seq += 1
        src = net.spoofed()
        net.ping(t, src, victim, 8, ident, seq, pay, ttl=_ttl_draw(rng, ttl_mode), ident=rng.getrandbits(16),
                 df=False, l2src=rng.choice(macs), l2dst=vmac)
        if rng.random() < reply:
            net.ping(t + rng.uniform(0.00003, 0.001), victim, src, 0, ident, seq, pay, df=False)
    return (f"spoofed ICMP echo flood (hping3 --icmp --rand-source) on {ipstr(victim)} at ~{rate:.0f} pkt/s, "
            f"{size}-byte payloads, ttl {_ttl_text(ttl_mode)}, {_spoof_note(len(bots))}; "
            f"victim echo-replies {reply:.0%}")


def ddos_icmp_fragmentation(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 2, 8)
    spoof = _pick(k, (False, True))
    size = rng.choice((1500, 2000, 3000, 4000, 6000, 8972)) + rng.randint(-40, 40)
    rate = _flood_rate(rng, 500, 2500)
    ttls = {b: _tool_ttl(net, b) for b in bots}
    reply = rng.uniform(0.3, 0.9)
    vmac = net.mac(victim)
    ident = rng.getrandbits(16)
    pay = rng.randbytes(size)
    t = net.t0
    seq = 0
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        seq += 1
        bot = rng.choice(bots)
        src = net.spoofed() if spoof else bot
        net.ping(t, src, victim, 8, ident, seq, pay, ttl=ttls[bot], ident=rng.getrandbits(16), l2src=net.mac(bot),
                 l2dst=vmac)
        if rng.random() < reply:
            net.ping(t + rng.uniform(0.0002, 0.002), victim, src, 0, ident, seq, pay)
    return (f"fragmented ICMP flood on {ipstr(victim)}: {size}-byte pings split at MTU 1500 "
            f"({-(-(size + 8) // wire.FRAG_CHUNK)} fragments), ~{rate:.0f} pings/s from {len(bots)} bots"
            f"{' with spoofed sources' if spoof else ''}; victim replies (fragmented too) to {reply:.0%}")


# ---- HTTP floods and SlowLoris ---------------------------------------------------------------

_PATHS = ("/", "/index.html", "/login", "/api/status", "/?id=%d", "/search?q=%d", "/images/logo.png", "/cgi-bin/luci")


def _http_client(net: Net, cli: int, server: int, t: float, interval: float, body: int, per_conn: int,
                 busy: float, sports: list[int] | None, port: int = 80) -> Agent:
    rng = net.rng
    ua = rng.choice(P.USER_AGENTS)
    while True:
        yield t
        if sports is not None:
            sports[0] = sports[0] + 1 if sports[0] < 60999 else 32768
            sport = sports[0]
        else:
            sport = net.eport(cli)
        c = Tcp(net, cli, server, sport, port, rtt=rng.uniform(0.0003, 0.003))
        tt = c.connect(t)
        for _ in range(per_conn):
            path = rng.choice(_PATHS)
            if "%d" in path:
                path = path % rng.randint(0, 99999)
            status = "503 Service Unavailable" if rng.random() < busy else "200 OK"
            tt = c.exchange(tt + 0.0002, P.http_get(ipstr(server), path, ua),
                            P.http_response(rng, body if status == "200 OK" else 90, status, server="Apache/2.4.54"),
                            think=rng.uniform(0.0005, 0.02))
        c.close(tt + 0.0001, rng.random() < 0.6)
        t += rng.expovariate(1 / interval)


def _http_flood(net: Net, budget: int, k: int, ddos: bool) -> str:
    rng = net.rng
    server = net.host(2, 30)
    clients = _bots(net, 5, 40) if ddos else [_attacker(net)]
    net.set_stack(server, "server")
    port = 80 if rng.random() < 0.7 else rng.choice((8080, 8000, 8081, 8888))
    sessions = _rate(rng, 80, 500) if ddos else _rate(rng, 40, 250)
    body = rng.choice((120, 612, 1500, 4000, 10000))
    per_conn = _pick(k, (1, 1, 2, 4))
    busy = rng.uniform(0, 0.3)
    sports = None if ddos else [rng.randint(32768, 60999)]
    agents = [_http_client(net, c, server, net.t0 + rng.uniform(0, 0.05), len(clients) / sessions, body, per_conn,
                           busy, sports, port) for c in clients]
    run_agents(net, agents, budget)
    return (f"HTTP GET flood on {ipstr(server)}:{port} from {len(clients)} client{'s' if ddos else ''}: ~{sessions:.0f} "
            f"complete sessions/s (handshake, {per_conn} GET{'s' if per_conn > 1 else ''} per connection, "
            f"{body}-byte pages, {busy:.0%} 503s, FIN close), ~{len(net.pkts) / max(_dur(net), 1e-9):.0f} pkt/s")


def ddos_http_flood(net: Net, budget: int, k: int) -> str:
    return _http_flood(net, budget, k, True)


def dos_http_flood(net: Net, budget: int, k: int) -> str:
    return _http_flood(net, budget, k, False)


def _slowloris_conn(net: Net, bot: int, server: int, t: float, sleep: float, timeout: float | None,
                    port: int = 80) -> Agent:
    rng = net.rng
    ua = rng.choice(P.USER_AGENTS)
    while True:
        yield t
        c = Tcp(net, bot, server, net.eport(bot), port)
        opened = t = c.connect(t)
        for line in (f"GET /?{rng.randint(0, 2000)} HTTP/1.1\r\n", f"User-Agent: {ua}\r\n",
                     "Accept-language: en-US,en,q=0.5\r\n"):
            t = c.exchange(t + 0.0002, line.encode(), None)
        closed = False
        while not closed:
            t += sleep * rng.uniform(0.98, 1.05)
            if timeout is not None and t - opened > timeout:  # the server gives up on the request
                tt = opened + timeout
                yield tt
                c.send(tt, False, b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                       PA | FIN)
                c.ack(tt + c.rtt / 2, True)
                c.seg(tt + c.rtt / 2 + 0.001, True, FIN | ACK)
                c.ack(tt + c.rtt, False)
                t = tt + rng.uniform(0.5, sleep)  # reopen
                closed = True
                continue
            yield t
            t = c.exchange(t, f"X-a: {rng.randint(1, 5000)}\r\n".encode(), None)


def ddos_slowloris(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    server = net.host(2, 30)
    bots = _bots(net, 1, 5)
    conns = min(rng.randint(40, 200), max(4, budget // 25))  # leave budget for the slow phase
    sleep = rng.choice((5.0, 10.0, 15.0)) * rng.uniform(0.8, 1.2)
    port = 80 if rng.random() < 0.7 else rng.choice((8080, 8000, 443))
    timeout = _pick(k, (None, float(rng.randint(20, 40))))
    agents = []
    for i in range(conns):
        bot = bots[i % len(bots)]
        agents.append(_slowloris_conn(net, bot, server, net.t0 + i * rng.uniform(0.002, 0.02), sleep, timeout, port))
    run_agents(net, agents, budget)
    return (f"SlowLoris on {ipstr(server)}:{port} from {len(bots)} bots: {conns} connections held open with a partial "
            f"GET, one 'X-a:' header line every {sleep:.0f} s"
            f"{f', server times requests out after {timeout:.0f} s (408) and the bots reconnect' if timeout else ''}; "
            f"~{len(net.pkts) / max(_dur(net), 1e-9):.1f} pkt/s")


# ---- Mirai -----------------------------------------------------------------------------------


def _mirai_flood(net: Net, budget: int, k: int, kind: str) -> str:
    rng = net.rng
    victim = _victim(net)
    bots = _bots(net, 3, 12)
    size = _pick(k, (512, 512, 256, 768, 1024, 1400, rng.randint(16, 1450)))
    rate = _flood_rate(rng, 2500, 12000)
    const_ip = rng.random() < 0.3
    ttls = {b: _tool_ttl(net, b) for b in bots}
    dport_fixed = rng.choice((None, None, 80, 53, 7547, rng.randint(1, 65535)))
    vmac = net.mac(victim)
    per_bot: dict[int, tuple[int, int]] = {b: (rng.randint(1024, 65535), dport_fixed or rng.randint(1, 65535))
                                           for b in bots}
    ident = {b: rng.getrandbits(16) for b in bots}
    last_err: dict[int, float] = {}
    t = net.t0
    while len(net.pkts) < budget:
        t += rng.expovariate(rate)
        bot = rng.choice(bots)
        data = rng.randbytes(size)
        if kind == "udpplain":  # a connected UDP socket per target: fixed ports, kernel-built headers
            sport, dport = per_bot[bot]
            d = wire.udp(bot, victim, sport, dport, data)
            ident[bot] = (ident[bot] + 1) & 0xFFFF
            net.ip(t, bot, victim, wire.PROTO_UDP, d, ttl=ttls[bot], ident=ident[bot], df=True, l2dst=vmac)
            reply_type = 3  # port unreachable
        else:  # raw GRE: inner IP (or Ethernet + IP) with random source and UDP ports
            oid = rng.getrandbits(16)
            isrc = rng.getrandbits(32)
            idst = victim if const_ip else (~(isrc - 1024)) & 0xFFFFFFFF
            inner = wire.ipv4(isrc, idst, wire.PROTO_UDP,
                              wire.udp(isrc, idst, rng.getrandbits(16), dport_fixed or rng.getrandbits(16), data),
                              64, ~oid & 0xFFFF)
            if kind == "greeth":
                inner = rng.randbytes(6) + rng.randbytes(6) + b"\x08\x00" + inner
                d = wire.gre(wire.ETH_P_TEB, inner)
            else:
                d = wire.gre(wire.ETH_P_IP, inner)
            net.ip(t, bot, victim, wire.PROTO_GRE, d, ttl=ttls[bot], ident=oid, df=True, l2dst=vmac)
            reply_type = 2  # protocol unreachable
        # the victim speaks no GRE (protocol unreachable) / has no such UDP port (port unreachable), about 1/s per bot
        if t - last_err.get(bot, 0.0) > 1.0:
            last_err[bot] = t
            orig = net.pkts[-1][1][14:]
            net.icmp_error(t + rng.uniform(0.00005, 0.0005), victim, orig, 3, reply_type)
    ports = f"port {dport_fixed}" if dport_fixed else "random fixed ports"
    what = {"udpplain": f"UDP plain flood (one socket per bot, {ports})",
            "greip": "GRE-IP flood (GRE proto 0x0800 around IP/UDP)",
            "greeth": "GRE-Ethernet flood (GRE proto 0x6558 around Ethernet/IP/UDP)"}[kind]
    return (f"Mirai {what} on {ipstr(victim)} from {len(bots)} bots at ~{rate:.0f} pkt/s, {size}-byte random "
            f"payloads, ttl {sorted(set(ttls.values()))}, DF{', inner destination = victim' if const_ip and kind != 'udpplain' else ''}; "
            f"victim ICMP unreachables ~1/s per bot")


def mirai_greeth_flood(net: Net, budget: int, k: int) -> str:
    return _mirai_flood(net, budget, k, "greeth")


def mirai_greip_flood(net: Net, budget: int, k: int) -> str:
    return _mirai_flood(net, budget, k, "greip")


def mirai_udpplain(net: Net, budget: int, k: int) -> str:
    return _mirai_flood(net, budget, k, "udpplain")


# ---- Recon -----------------------------------------------------------------------------------

TOP_PORTS = (80, 23, 443, 21, 22, 25, 3389, 110, 445, 139, 143, 53, 135, 3306, 8080, 1723, 111, 995, 993, 5900,
             1025, 587, 8888, 199, 1720, 465, 548, 113, 81, 6001, 10000, 514, 5060, 179, 1026, 2000, 8443, 8000,
             32768, 554, 26, 1433, 49152, 2001, 515, 8008, 49154, 1027, 5666, 646, 5000, 5631, 631, 49153, 8081,
             2049, 88, 79, 5800, 106, 2121, 1110, 49155, 6000, 513, 990, 5357, 427, 49156, 543, 544, 5101, 144, 7,
             389, 1883, 8883, 5683, 7547, 37777, 9000, 9100, 502, 102, 47808, 20000, 2323)


def _scanner_sport(rng: random.Random) -> int:
    return rng.randint(33000, 65000)


def _syn_probe(net: Net, t: float, scanner: int, target: int, sport: int, dport: int, is_open: bool, ttl: int,
               win: int = 1024, flags: int = SYN, options: bytes = b"\x02\x04\x05\xb4", filtered: bool = False,
               connect: bool = False) -> None:
    """One nmap-style SYN probe and the target's answer (SYN-ACK then the scanner's RST, or RST-ACK)."""
    rng = net.rng
    seq = rng.getrandbits(32)
    if connect:  # -sT: a real connect() from the scanner's kernel
        c = Tcp(net, scanner, target, sport, dport, linux=True)
        c.seg(t, True, SYN, options=c.syn_options(t, True))
        if filtered:
            return
        tr = t + rng.uniform(0.0002, 0.003)
        if is_open:
            c.seg(tr, False, SA, options=c.syn_options(tr, False))
            c.seg(tr + 0.0001, True, ACK)
            c.reset(tr + 0.0003, True)
        else:
            net.tcp(tr, target, scanner, dport, sport, RA, 0, seq + 1, win=0)
        return
    net.tcp(t, scanner, target, sport, dport, flags, seq, 0, b"", win, options, ttl=ttl, ident=rng.getrandbits(16),
            df=False)
    if filtered:
        return
    tr = t + rng.uniform(0.0002, 0.003)
    if is_open:
        net.tcp(tr, target, scanner, dport, sport, SA, rng.getrandbits(32), seq + 1, b"", 64240, b"\x02\x04\x05\xb4")
        net.tcp(tr + rng.uniform(0.00002, 0.0002), scanner, target, sport, dport, RST, seq + 1, 0, b"", 0)
    else:
        net.tcp(tr, target, scanner, dport, sport, RA, 0, seq + 1, b"", 0)


def recon_portscan(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    scanner = _attacker(net)
    targets = net.hosts(rng.randint(1, 4), 2, 250)
    style = _pick(k, ("syn", "syn", "connect"))
    rate = _rate(rng, 150, 1500)
    ttl = rng.choice((64, rng.randint(37, 59)))
    port_set = _pick(k, ("top", "range", "all"))
    opens = {t: set(rng.sample(OPEN_TCP, rng.randint(1, 4))) | {rng.randint(1024, 65535)} for t in targets}
    firewalled = {t: rng.random() < 0.25 for t in targets}
    t = net.t0
    sweep = 0
    while len(net.pkts) < budget:
        sweep += 1
        if port_set == "top":
            ports = list(TOP_PORTS) + rng.sample(range(1, 10000), 400)
        elif port_set == "range":
            ports = list(range(1, 1025))
        else:
            ports = rng.sample(range(1, 65536), 3000)
        rng.shuffle(ports)
        for target in targets:
            sport = _scanner_sport(rng)
            for p in ports:
                if len(net.pkts) >= budget:
                    break
                t += rng.expovariate(rate)
                is_open = p in opens[target]
                _syn_probe(net, t, scanner, target, sport, p, is_open, ttl,
                           filtered=firewalled[target] and not is_open and rng.random() < 0.9,
                           connect=style == "connect")
        t += rng.uniform(1, 10)
    return (f"{'SYN' if style == 'syn' else 'connect()'} port scan (nmap -s{'S' if style == 'syn' else 'T'}) from "
            f"{ipstr(scanner)} of {len(targets)} host{'s' if len(targets) > 1 else ''} "
            f"({', '.join(ipstr(x) for x in targets)}), {port_set} ports in random order at ~{rate:.0f} probes/s, "
            f"ttl {ttl}; SYN-ACK/RST from open ports, RST-ACK from closed ones, silence from filtered ones")


# nmap OS detection probes: (name, flags, window, options, to open port?, df)
_T_OPTS = b"\x03\x03\x0a\x01\x02\x04\x01\x09\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x04\x02"
_OS_TCP_PROBES = (
    ("T2", 0, 128, _T_OPTS, True, True),
    ("T3", SYN | FIN | URG | PSH, 256, _T_OPTS,
     True, False),
    ("T4", ACK, 1024, _T_OPTS, True, True),
    ("T5", SYN, 31337, _T_OPTS, False, False),
    ("T6", ACK, 32768, _T_OPTS, False, True),
    ("T7", FIN | PSH | URG, 65535, b"\x03\x03\x0f\x01\x02\x04\x01\x09\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x04\x02",
     False, False),
)
_SEQ_PROBES = (
    (1, b"\x03\x03\x0a\x01\x02\x04\x05\xb4\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x04\x02"),
    (63, b"\x02\x04\x05\x78\x04\x02\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x03\x03\x0a\x00"),
    (4, b"\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x01\x01\x03\x03\x05\x01\x02\x04\x01\x18"),
    (4, b"\x04\x02\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00\x03\x03\x0a\x00"),
    (16, b"\x04\x02\x03\x03\x0a\x02\x04\x01\x09\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00"),
    (512, b"\x02\x04\x01\x09\x04\x02\x08\x0a\xff\xff\xff\xff\x00\x00\x00\x00"),
)


def _os_probe_target(net: Net, t: float, scanner: int, target: int, open_port: int, closed_port: int,
                     ttl: int) -> float:
    rng = net.rng
    sport = _scanner_sport(rng)
    # a short SYN scan first, to find an open and a closed port
    for p in rng.sample(TOP_PORTS, rng.randint(20, 60)) + [open_port]:
        t += rng.uniform(0.001, 0.01)
        _syn_probe(net, t, scanner, target, sport, p, p == open_port, ttl)
    t += rng.uniform(0.05, 0.3)
    for win, opts in _SEQ_PROBES:  # SEQ: six SYNs 100 ms apart
        sp = sport + rng.randint(1, 200)
        _syn_probe(net, t, scanner, target, sp, open_port, True, ttl, win=win, options=opts)
        t += 0.1
    icmp_id = rng.getrandbits(16)  # IE: two echo requests, odd code / TOS, DF
    net.ip(t, scanner, target, wire.PROTO_ICMP, wire.icmp(8, 9, icmp_id.to_bytes(2, "big") + b"\x01\x27", bytes(120)),
           ttl=ttl, df=True)
    net.ip(t + 0.0005, target, scanner, wire.PROTO_ICMP,
           wire.icmp(0, 0, icmp_id.to_bytes(2, "big") + b"\x01\x27", bytes(120)))
    net.ip(t + 0.001, scanner, target, wire.PROTO_ICMP,
           wire.icmp(8, 0, (icmp_id + 1).to_bytes(2, "big") + b"\x01\x28", bytes(150)), ttl=ttl, tos=4)
    net.ip(t + 0.0015, target, scanner, wire.PROTO_ICMP,
           wire.icmp(0, 0, (icmp_id + 1).to_bytes(2, "big") + b"\x01\x28", bytes(150)))
    t += 0.1
    # ECN: SYN with ECE and CWR
    seq = rng.getrandbits(32)
    net.tcp(t, scanner, target, sport + 1, open_port, SYN | ECE | CWR, seq, 0, b"", 3,
            b"\x03\x03\x0a\x01\x02\x04\x05\xb4\x04\x02\x01\x01", urg=0xF7F5, ttl=ttl, df=False)
    net.tcp(t + 0.0005, target, scanner, open_port, sport + 1, SA | ECE, rng.getrandbits(32), seq + 1, b"", 64240,
            b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07")
    net.tcp(t + 0.0007, scanner, target, sport + 1, open_port, RST, seq + 1, 0, b"", 0, ttl=ttl, df=False)
    for i, (name, flags, win, opts, to_open, df) in enumerate(_OS_TCP_PROBES):  # T2-T7
        t += rng.uniform(0.005, 0.03)
        dport = open_port if to_open else closed_port
        sp = sport + 2 + i
        seq = rng.getrandbits(32)
        ackn = rng.getrandbits(32) if flags & ACK else 0
        net.tcp(t, scanner, target, sp, dport, flags, seq, ackn, b"", win, opts, ttl=ttl, df=df)
        tr = t + rng.uniform(0.0003, 0.002)
        if name == "T3" and rng.random() < 0.5:
            net.tcp(tr, target, scanner, dport, sp, SA, rng.getrandbits(32), seq + 1, b"", 64240, b"\x02\x04\x05\xb4")
        elif flags & ACK:
            net.tcp(tr, target, scanner, dport, sp, RST, ackn, 0, b"", 0)
        elif name == "T2" and rng.random() < 0.6:
            continue  # many stacks drop the null-flags probe
        elif not to_open or name == "T2":
            net.tcp(tr, target, scanner, dport, sp, RA, 0, seq + (1 if flags & SYN else 0) + (1 if flags & FIN else 0),
                    b"", 0)
    t += rng.uniform(0.005, 0.03)  # U1: UDP to a closed port, 300 x 'C'
    d = wire.udp(scanner, target, sport + 9, closed_port, b"C" * 300)
    net.ip(t, scanner, target, wire.PROTO_UDP, d, ttl=ttl, ident=0x1042, df=False)
    net.icmp_error(t + 0.0006, target, wire.ipv4(scanner, target, wire.PROTO_UDP, d, ttl, 0x1042), 3, 3)
    return t


def recon_osscan(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    scanner = _attacker(net)
    candidates = net.hosts(rng.randint(5, 40), 2, 250)
    ttl = _pick(k, (rng.randint(37, 59), 64))
    t = net.t0
    done = 0
    while len(net.pkts) < budget:
        target = candidates[done % len(candidates)]
        t = _os_probe_target(net, t + rng.uniform(0.05, 1.0), scanner, target, rng.choice(OPEN_TCP),
                             rng.randint(30000, 60000), ttl)
        done += 1
    return (f"OS fingerprinting (nmap -O) from {ipstr(scanner)} over {min(done, len(candidates))} hosts of "
            f"{net.cidr}: a short SYN scan, then SEQ (6 SYNs with odd windows/options), IE (ICMP echo "
            f"code 9 / TOS 4), ECN (SYN+ECE+CWR), T2-T7 (null, SYN+FIN+URG+PSH, ACK, FIN+PSH+URG...) and U1 "
            f"(300-byte UDP to a closed port) probes with the targets' replies; ttl {ttl}")


def recon_host_discovery(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    scanner = _attacker(net)
    live = set(net.hosts(rng.randint(10, 60), 2, 254)) | {net.gw}
    rate = _rate(rng, 150, 1200)
    remote_nets = [((10 << 24) | (rng.randint(0, 255) << 16) | (rng.randint(0, 255) << 8)) for _ in range(3)] + \
                  [net.neighbour(i) for i in (1, 2)]
    remote_live = {n: set(rng.sample(range(1, 255), rng.randint(3, 40))) for n in remote_nets}
    rdns = _pick(k, (True, False))
    ident = rng.getrandbits(16)
    t = net.t0
    sweeps = 0
    first_local = _pick(k, (True, False))
    while len(net.pkts) < budget:
        local = (sweeps % 2 == 0) == first_local
        base = net.prefix if local else remote_nets[(sweeps // 2) % len(remote_nets)]
        order = list(range(1, min(net.size - 1, 1023) if local else 255))
        rng.shuffle(order)
        found = []
        for h in order:
            if len(net.pkts) >= budget:
                break
            ip = base | h
            if ip == scanner:
                continue
            t += rng.expovariate(rate)
            if local:  # ARP ping (nmap -sn on the local segment)
                net.arp(t, 1, scanner, ip)
                if ip in live:
                    net.arp(t + rng.uniform(0.0003, 0.005), 2, ip, scanner)
                    found.append(ip)
            else:  # ICMP echo, TCP SYN 443, TCP ACK 80, ICMP timestamp
                alive = h in remote_live[base]
                sp = _scanner_sport(rng)
                net.ping(t, scanner, ip, 8, ident, 0, b"", df=False)
                net.tcp(t + 0.00002, scanner, ip, sp, 443, SYN, rng.getrandbits(32), 0, b"", 1024, b"\x02\x04\x05\xb4",
                        df=False)
                ackn = rng.getrandbits(32)
                net.tcp(t + 0.00004, scanner, ip, sp, 80, ACK, 0, ackn, b"", 1024, df=False)
                net.ip(t + 0.00006, scanner, ip, wire.PROTO_ICMP, wire.icmp(13, 0, ident.to_bytes(2, "big") + b"\0\0",
                                                                          bytes(12)), df=False)
                if alive:
                    tr = t + rng.uniform(0.01, 0.06)
                    net.ping(tr, ip, scanner, 0, ident, 0, b"")
                    net.tcp(tr + 0.00003, ip, scanner, 443, sp, RA, 0, 1, b"", 0)
                    net.tcp(tr + 0.00005, ip, scanner, 80, sp, RST, ackn, 0, b"", 0)
                    found.append(ip)
        if rdns:
            for ip in found:
                if len(net.pkts) >= budget:
                    break
                t += rng.uniform(0.0005, 0.005)
                qid = rng.getrandbits(16)
                name = P.ptr_name(ip)
                sp = ephemeral(rng)
                net.udp(t, scanner, net.gw, sp, 53, P.dns_query(qid, name, 12))
                known = net.is_lan(ip)
                net.udp(t + rng.uniform(0.0005, 0.01), net.gw, scanner, 53, sp,
                        P.dns_response(qid, name, [ip] if known else [], qtype=12, rcode=0 if known else 3))
        sweeps += 1
        t += rng.uniform(0.5, 5)
    return (f"host discovery (nmap -sn) from {ipstr(scanner)}: ARP sweeps of {net.cidr} "
            f"({len(live)} hosts answer) alternating with ICMP echo + TCP SYN/443 + TCP ACK/80 + ICMP timestamp "
            f"sweeps of remote /24s, ~{rate:.0f} hosts/s{', reverse-DNS lookups of the hosts found' if rdns else ''}")


def recon_ping_sweep(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    scanner = _attacker(net)
    where = _pick(k, ("local", "remote"))
    rate = _rate(rng, 100, 1000)
    tool = rng.choice(("fping", "nmap -sn -PE"))
    nets = [net.prefix] if where == "local" else \
        [((10 << 24) | (rng.randint(0, 255) << 16) | (rng.randint(0, 255) << 8)) for _ in range(4)]
    live = {n: set(rng.sample(range(1, 255), rng.randint(8, 60))) for n in nets}
    ident = rng.getrandbits(16)
    pay = bytes(56) if tool == "fping" else b""
    t = net.t0
    seq = 0
    rounds = 0
    while len(net.pkts) < budget:
        base = nets[rounds % len(nets)]
        hosts = list(range(1, 255))
        if tool.startswith("nmap"):
            rng.shuffle(hosts)
        for h in hosts:
            if len(net.pkts) >= budget:
                break
            ip = base | h
            if ip == scanner:
                continue
            t += rng.expovariate(rate)
            seq += 1
            net.ping(t, scanner, ip, 8, ident, seq, pay, df=tool == "fping")
            if h in live[base]:
                net.ping(t + rng.uniform(0.0003, 0.004 if where == "local" else 0.05), ip, scanner, 0, ident, seq, pay)
        rounds += 1
        t += rng.uniform(0.5, 5)
    return (f"ICMP ping sweep ({tool}) from {ipstr(scanner)} over {len(nets)} {where} /24"
            f"{'s' if len(nets) > 1 else ''} at ~{rate:.0f} pings/s, echo replies from the live hosts")


# ---- Spoofing --------------------------------------------------------------------------------


def _poison_agent(net: Net, attacker: int, pairs: list[tuple[int, int]], t: float, period: float) -> Agent:
    """arpspoof/ettercap: unsolicited ARP replies telling each side the other's IP is at the attacker's MAC."""
    rng = net.rng
    amac = net.mac(attacker)
    yield t
    for h in dict.fromkeys(x for pair in pairs for x in pair):  # learn the real MACs first
        net.arp(t, 1, attacker, h)
        net.arp(t + rng.uniform(0.0002, 0.002), 2, h, attacker)
        t += 0.003
    for a, b in pairs:
        net.poison(attacker, a, b)
    while True:
        for a, b in pairs:
            net.arp(t, 2, b, a, sha=amac)  # "b is at <attacker>" to a
            net.arp(t + 0.0001, 2, a, b, sha=amac)
            t += 0.0002
        t += period * rng.uniform(0.98, 1.02)
        yield t


def _redirect_agent(net: Net, attacker: int, victim: int, t: float, period: float) -> Agent:
    """The attacker's kernel, forwarding out the interface a packet came in on, sends ICMP redirects."""
    rng = net.rng
    while True:
        yield t
        orig = wire.ipv4(victim, net.public(), wire.PROTO_TCP, wire.tcp(victim, 0, ephemeral(rng), 443, ACK), 64, 0)
        net.ip(t, attacker, victim, wire.PROTO_ICMP, wire.icmp(5, 1, net.gw.to_bytes(4, "big"), orig[:28]),
               df=False, tos=0xC0, l2src=net.mac(attacker), l2dst=net.mac(victim))
        t += period * rng.uniform(0.5, 2)


def _victims_traffic_benign(net: Net, attacker: int, cls: str) -> None:
    """Label as the real corpus does: the victims' own traffic, relayed through the attacker,
    is benign (an ARP-spoofing capture is ~1.5 % spoofed replies, the rest the victim's
    ordinary traffic); the windows of the attacker's address and the ARP windows (the
    poisoning) are the attack. The poisoning and the forged DNS answers are the ARP and
    DNS detectors' frames: the recipe's windows leave them out. Relayed traffic is every
    frame twice, as a gateway's ``tcpdump -i any`` shows forwarded traffic, so no window
    average can tell it apart."""
    net.rules = [{"label": "BenignTraffic"}, {"label": cls, "hosts": [ipstr(attacker)]}, {"label": cls, "arp": True}]


def mitm_arp_spoofing(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    attacker = _attacker(net)
    victims = net.hosts(rng.randint(1, 4), 10, 250)
    broker = net.host(2, 9)
    tool = _pick(k, ("arpspoof", "ettercap"))
    period = 2.0 if tool == "arpspoof" else rng.choice((1.0, 5.0, 10.0))
    pairs = [(v, net.gw) for v in victims] + ([(v, broker) for v in victims] if rng.random() < 0.5 else [])
    cloud = {name: net.public() for name in rng.sample(CLOUD_NAMES, 4)}
    t0 = net.t0
    agents: list[Agent] = [_poison_agent(net, attacker, pairs, t0, period)]
    for v in victims:
        agents.append(mqtt_agent(net, v, broker, t0 + rng.uniform(0.1, 3), rng.uniform(1, 10), 30, 0, False, 10_000))
        agents.append(cloud_agent(net, v, net.gw, cloud, t0 + rng.uniform(0.1, 5), rng.uniform(3, 20)))
        agents.append(ntp_agent(net, v, net.public(), t0 + rng.uniform(0.1, 30), rng.uniform(30, 120)))
        if rng.random() < 0.6:
            agents.append(_redirect_agent(net, attacker, v, t0 + rng.uniform(1, 5), rng.uniform(2, 15)))
    run_agents(net, agents, budget)
    _victims_traffic_benign(net, attacker, "MITM-ArpSpoofing")
    return (f"ARP spoofing ({tool}) by {ipstr(attacker)}: gratuitous ARP replies every {period:.0f} s poisoning "
            f"{len(victims)} victim{'s' if len(victims) > 1 else ''} and the gateway"
            f"{' and the MQTT broker' if len(pairs) > len(victims) else ''}; the victims' MQTT/DNS/HTTPS/NTP traffic "
            f"crosses the attacker (every packet seen twice, TTL - 1 on the forwarded copy), ICMP redirects")


def _dns_victim(net: Net, victim: int, attacker: int, names: list[str], spoofed: set[str], real: dict[str, int],
                t: float, period: float, follow: float) -> Agent:
    rng = net.rng
    amac = net.mac(attacker)
    while True:
        yield t
        name = rng.choice(names)
        qid = rng.getrandbits(16)
        sport = ephemeral(rng)
        qtype = 1 if rng.random() < 0.8 else 28
        net.udp(t, victim, net.gw, sport, 53, P.dns_query(qid, name, qtype))
        t_real = t + rng.uniform(0.002, 0.05)
        answer = real[name]
        if name in spoofed:  # ettercap dns_spoof answers first, from the resolver's address
            tf = t + rng.uniform(0.0002, 0.0015)
            forged = P.dns_response(qid, name, [attacker] if qtype == 1 else [], ttl=3600, qtype=qtype)
            net.udp(tf, net.gw, victim, 53, sport, forged, ttl=64, l2src=amac, l2dst=net.mac(victim))
            answer = attacker
        net.udp(t_real, net.gw, victim, 53, sport,
                P.dns_response(qid, name, [real[name]] if qtype == 1 else [], ttl=rng.choice((60, 300)), qtype=qtype))
        if qtype == 1 and rng.random() < follow:
            if answer == attacker:
                http_victim = Tcp(net, victim, attacker, ephemeral(rng), 80)
                tt = http_victim.connect(t_real + 0.001)
                tt = http_victim.exchange(tt + 0.0005, P.http_get(name, "/", rng.choice(P.USER_AGENTS)),
                                          P.http_response(rng, rng.randint(200, 3000), server="Apache/2.4.57 (Debian)"))
                http_victim.close(tt + 0.01, True)
            else:
                c = Tcp(net, victim, answer, ephemeral(rng), 443)
                tt = c.connect(t_real + 0.001)
                tt = c.exchange(tt, P.tls_client_hello(rng, 517), P.tls_record(rng, 22, rng.randint(2400, 4000)))
                c.close(tt + 0.05, True)
        t += period * rng.uniform(0.3, 1.7)


def dns_spoofing(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    attacker = _attacker(net)
    victims = net.hosts(rng.randint(2, 8), 10, 250)
    names = rng.sample(CLOUD_NAMES, rng.randint(4, 10)) + [f"www.{w}.com" for w in rng.sample(
        ("example", "bank", "news", "shop", "mail", "social", "video"), 3)]
    spoof_frac = _pick(k, (1.0, 0.5, 0.25))
    spoofed = set(rng.sample(names, max(1, round(len(names) * spoof_frac))))
    real = {n: net.public() for n in names}
    period = rng.uniform(0.2, 3)
    follow = rng.uniform(0.0, 0.3)
    t0 = net.t0
    agents: list[Agent] = [_poison_agent(net, attacker, [(v, net.gw) for v in victims], t0, rng.choice((5.0, 10.0)))]
    agents += [_dns_victim(net, v, attacker, names, spoofed, real, t0 + 0.1 + rng.uniform(0, 2), period, follow)
               for v in victims]
    run_agents(net, agents, budget)
    _victims_traffic_benign(net, attacker, "DNS_Spoofing")
    return (f"DNS spoofing (ettercap ARP MITM + dns_spoof) by {ipstr(attacker)} against {len(victims)} devices: "
            f"forged answers ({ipstr(attacker)}, TTL 3600) for {len(spoofed)}/{len(names)} names race the "
            f"resolver's real ones, one query every ~{period:.1f} s per device, queries forwarded through the "
            f"attacker, {follow:.0%} followed by a connection to the answer")


# ---- Brute force -----------------------------------------------------------------------------


def _telnet_session(net: Net, t: float, attacker: int, target: int, tries: int, banner: str) -> float:
    rng = net.rng
    c = Tcp(net, attacker, target, ephemeral(rng), 23, rtt=rng.uniform(0.0004, 0.004))
    t = c.connect(t)
    c.send(t + 0.003, False, P.TELNET_DO)
    t = c.exchange(t + 0.004, P.TELNET_WILL, P.TELNET_SB)
    t = c.exchange(t + 0.001, P.TELNET_SB_REPLY, P.TELNET_OPTS)
    c.send(t + 0.001, True, P.TELNET_OPTS)
    t = c.send(t + 0.01, False, f"\r\n{banner} login: ".encode())
    for i in range(tries):
        user, pw = rng.choice(P.USERNAMES), rng.choice(P.PASSWORDS)
        t = c.exchange(t + rng.uniform(0.005, 0.05), user.encode() + b"\r\n", b"Password: ")
        t = c.exchange(t + rng.uniform(0.005, 0.05), pw.encode() + b"\r\n", None)
        t += rng.uniform(0.5, 3.0)  # the failed-login delay
        msg = b"\r\nLogin incorrect\r\n" + (f"{banner} login: ".encode() if i < tries - 1 else b"")
        c.send(t, False, msg)
        t = c.ack(t + c.rtt / 2, True)
    if rng.random() < 0.6:
        return c.reset(t + 0.001, True)
    return c.close(t + 0.001, True)


def _ssh_session(net: Net, t: float, attacker: int, target: int, tries: int, server: str, client: str) -> float:
    rng = net.rng
    c = Tcp(net, attacker, target, ephemeral(rng), 22, rtt=rng.uniform(0.0004, 0.004), linux=True)
    t = c.connect(t)
    c.send(t + 0.004, False, server.encode())
    t = c.exchange(t + 0.005, client.encode(), None)
    t = c.exchange(t + 0.001, P.ssh_packet(rng, rng.randint(900, 1500)), P.ssh_packet(rng, rng.randint(300, 1100)))
    t = c.exchange(t + 0.002, P.ssh_packet(rng, 48), P.ssh_packet(rng, rng.randint(500, 1100)),
                   think=rng.uniform(0.005, 0.05))
    t = c.exchange(t + 0.001, P.ssh_packet(rng, 16) + P.ssh_packet(rng, 52), P.ssh_packet(rng, 52))
    for _ in range(tries):
        t = c.exchange(t + rng.uniform(0.001, 0.01), P.ssh_packet(rng, rng.randint(84, 148)),
                       P.ssh_packet(rng, rng.choice((52, 68, 84))), think=rng.uniform(0.2, 2.0))
    if rng.random() < 0.5:
        return c.reset(t + 0.001, True)
    return c.close(t + 0.001, True)


def _bruteforce_task(net: Net, attacker: int, targets: list[tuple[int, str]], t: float, gap: float,
                     tries: int) -> Agent:
    rng = net.rng
    client = rng.choice(P.SSH_CLIENTS)
    servers = {ip: rng.choice(P.SSH_SERVERS) for ip, _ in targets}
    banner = rng.choice(("(none)", "OpenWrt", "IPCamera", "dvrdvs", "raspberrypi"))
    while True:
        yield t
        ip, proto = rng.choice(targets)
        if proto == "telnet":
            t = _telnet_session(net, t, attacker, ip, tries, banner)
        else:
            t = _ssh_session(net, t, attacker, ip, tries, servers[ip], client)
        t += rng.uniform(0, gap)


def dictionary_brute_force(net: Net, budget: int, k: int) -> str:
    rng = net.rng
    attacker = _attacker(net)
    mix = _pick(k, ("telnet", "ssh", "telnet+ssh"))
    hosts = net.hosts(rng.randint(1, 4), 2, 250)
    protos = ("telnet", "ssh") if mix == "telnet+ssh" else (mix,)
    targets = [(h, p) for h in hosts for p in protos]
    tasks = rng.choice((4, 8, 16))
    tries = rng.randint(1, 3)
    gap = rng.uniform(0.01, 0.5)
    agents = [_bruteforce_task(net, attacker, targets, net.t0 + rng.uniform(0, 0.2), gap, tries) for _ in range(tasks)]
    run_agents(net, agents, budget)
    tool = "hydra" if tasks in (4, 16) else "medusa"
    return (f"dictionary brute force ({tool}, {tasks} parallel tasks) from {ipstr(attacker)} against {mix} on "
            f"{len(hosts)} host{'s' if len(hosts) > 1 else ''}: short login sessions (handshake, negotiation, "
            f"{tries} password tr{'ies' if tries > 1 else 'y'}, 'Login incorrect', RST or FIN), "
            f"~{len(net.pkts) / max(_dur(net), 1e-9):.0f} pkt/s")


ATTACKS: dict[str, Callable[[Net, int, int], str]] = {
    "DDoS-ICMP_Flood": ddos_icmp_flood,
    "DDoS-UDP_Flood": ddos_udp_flood,
    "DDoS-TCP_Flood": ddos_tcp_flood,
    "DDoS-PSHACK_Flood": ddos_pshack_flood,
    "DDoS-SYN_Flood": ddos_syn_flood,
    "DDoS-RSTFINFlood": ddos_rstfin_flood,
    "DDoS-SynonymousIP_Flood": ddos_synonymous_ip_flood,
    "DDoS-ICMP_Fragmentation": ddos_icmp_fragmentation,
    "DDoS-UDP_Fragmentation": ddos_udp_fragmentation,
    "DDoS-ACK_Fragmentation": ddos_ack_fragmentation,
    "DDoS-HTTP_Flood": ddos_http_flood,
    "DDoS-SlowLoris": ddos_slowloris,
    "DoS-UDP_Flood": dos_udp_flood,
    "DoS-TCP_Flood": dos_tcp_flood,
    "DoS-SYN_Flood": dos_syn_flood,
    "DoS-HTTP_Flood": dos_http_flood,
    "Mirai-greeth_flood": mirai_greeth_flood,
    "Mirai-udpplain": mirai_udpplain,
    "Mirai-greip_flood": mirai_greip_flood,
    "Recon-HostDiscovery": recon_host_discovery,
    "Recon-OSScan": recon_osscan,
    "Recon-PortScan": recon_portscan,
    "Recon-PingSweep": recon_ping_sweep,
    "MITM-ArpSpoofing": mitm_arp_spoofing,
    "DNS_Spoofing": dns_spoofing,
    "DictionaryBruteForce": dictionary_brute_force,
}
