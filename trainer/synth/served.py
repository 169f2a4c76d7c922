"""Floods on a host that serves benign clients meanwhile: the response policies' hard case.

A policy that answers a flood by acting on its target (a spoofed flood leaves no other
host to act on) pays for the target's benign traffic when it blocks, and not when it
drops only the flood's packet class inbound. The main corpus's flood scenarios carry no
benign traffic to the victim (its scenarios are one attack each, for the detector), so
nothing there rewards telling the two apart: these do. Each capture: the victim is a
server (web on 80/443, SSH, NTP) with two to five LAN clients that use it before,
during and after a flood of one kind (SYNs to its web port, or UDP datagrams to random
ports; from one host or from spoofed sources) at a moderate rate for several seconds
(an SSH client's first login waits a random while, and may fall after the capture).
The flood arrives unanswered: the victim's host firewall drops it (no SYN-ACK, RST or
ICMP unreachable back), as in the real corpus's floods on hosts with benign traffic, so
the flood is the victim's inbound packets of one class. Labels as the real corpus labels
a flood capture: the flood's packets are the attack, every packet to or from a client is
benign (the file's label and a ``hosts`` rule, `trainer.policy.rule_labeller`).

Kept out of `generate_corpus`'s plan: the model's corpus does not change by them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from .attacks import SYN, _attacker, _bots, _tcp_flood, _tool_ttl, _udp_flood
from .benign import ntp_agent, ssh_agent, webpoll_agent
from .generator import MANIFEST, _hash
from .net import Agent, Net, run_agents
from .wire import ipstr, write_pcap

# (label, kind) of the floods, in the order the files take them
SERVED_FLOODS: tuple[tuple[str, str], ...] = (("DoS-SYN_Flood", "syn"), ("DDoS-SYN_Flood", "syn_spoofed"),
                                              ("DoS-UDP_Flood", "udp"), ("DDoS-UDP_Flood", "udp_spoofed"))
PREFIX = "served-"  # the file names' start: apart from `generate_corpus`'s, so both corpora's episodes can mix


def _until(agent: Agent, end: float) -> Iterator[float]:
    """An agent that stops at packet time ``end`` (the benign agents run forever)."""
    for t in agent:
        if t > end:
            return
        yield t


def served_flood(net: Net, kind: str, k: int) -> str:
    """One capture: benign clients of a server, and a flood of ``kind`` on that server
    from ``lead`` seconds in; sets ``net.rules`` (the clients' packets are benign)."""
    rng = net.rng
    victim = net.host(2, 250)
    net.set_stack(victim, "server")
    clients = net.hosts(rng.randint(2, 5), 2, 250)
    lead, tail = rng.uniform(5, 20), rng.uniform(5, 20)
    rate = round(rng.uniform(300, 1500), -1)
    seconds = rng.uniform(6, 15)
    t0 = net.t0
    net.t0 = t0 + lead  # the flood helpers start at net.t0
    budget = int(rate * seconds)
    dport = rng.choice((80, 443))
    if kind in ("syn", "udp"):
        attacker = _attacker(net)
        ttl = _tool_ttl(net, attacker)
        base = [rng.randint(1024, 60000)]

        def sport() -> int:
            base[0] = base[0] + 1 if base[0] < 65535 else 1024
            return base[0]
        if kind == "syn":
            _tcp_flood(net, budget, victim=victim, dport_of=lambda: dport, src_of=lambda: attacker, sport_of=sport,
                       flags_of=lambda: SYN, ttl_of=lambda: ttl, rate=rate, macs=[net.mac(attacker)],
                       win=rng.choice((64, 512, 1024)), payload_len=lambda: 0, reply=0.0)
        else:
            size = rng.choice((0, 8, 64, 512))
            _udp_flood(net, budget, victim=victim, src_of=lambda: attacker, sport_of=sport,
                       dport_of=lambda: rng.randint(1, 65535), size_of=lambda: size, rate=rate,
                       macs=[net.mac(attacker)], ttl=ttl, closed=False)
        who = f"from {ipstr(attacker)}"
    elif kind == "syn_spoofed":
        bots = _bots(net, 2, 6)
        _tcp_flood(net, budget, victim=victim, dport_of=lambda: dport, src_of=net.spoofed,
                   sport_of=lambda: rng.randint(1024, 65535), flags_of=lambda: SYN,
                   ttl_of=lambda: _tool_ttl(net, bots[0]), rate=rate, macs=[net.mac(b) for b in bots],
                   win=rng.choice((64, 512, 65535)), payload_len=lambda: 0, reply=0.0)
        who = "from spoofed sources"
    elif kind == "udp_spoofed":
        bots = _bots(net, 2, 6)
        _udp_flood(net, budget, victim=victim, src_of=net.spoofed, sport_of=lambda: rng.randint(1024, 65535),
                   dport_of=lambda: rng.randint(1, 65535), size_of=lambda: rng.randint(0, 512), rate=rate,
                   macs=[net.mac(b) for b in bots], ttl=_tool_ttl(net, bots[0]), closed=False)
        who = "from spoofed sources"
    else:
        raise ValueError(f"unknown served flood kind {kind!r}")
    end = max(t for t, _ in net.pkts) + tail
    net.t0 = t0
    agents: list[Agent] = []
    for i, c in enumerate(clients):
        # the first client polls the web server, the others too or hold an SSH session or ask NTP
        role = "web" if i == 0 else rng.choice(("web", "web", "ssh", "ntp"))
        start = t0 + rng.uniform(0, 2)
        if role == "web":
            a = webpoll_agent(net, c, victim, start, rng.uniform(0.5, 3.0), port=dport)
        elif role == "ssh":
            a = ssh_agent(net, c, victim, start - 1, 22)
        else:
            a = ntp_agent(net, c, victim, start, rng.uniform(1.0, 4.0))
        agents.append(_until(a, end))
    run_agents(net, agents, len(net.pkts) + 200_000)
    net.rules = [{"label": "BenignTraffic", "hosts": [ipstr(c) for c in clients]}]
    return (f"{kind} flood on {ipstr(victim)} {who} at ~{rate:.0f} pkt/s for ~{seconds:.0f} s, "
            f"{lead:.0f} s in; {len(clients)} benign clients of the victim (web, SSH, NTP) throughout")


def generate_served_floods(out_dir: Path, seed: int = 0, per_kind: int = 3) -> Path:
    """Write ``per_kind`` captures of each `SERVED_FLOODS` kind into ``out_dir`` and list them
    in its manifest (the `generate_corpus` format: appended to one that is there, in place of
    any served floods it listed); returns the manifest's path. Reproducible: each file
    depends on (seed, kind, file number) only."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"version": 1, "generator": "ids-trainer synth",
                                                                    "seed": seed, "files": []}
    files = [f for f in manifest["files"] if not str(f["path"]).startswith(PREFIX)]
    for label, kind in SERVED_FLOODS:
        for k in range(per_kind):
            net = Net(random.Random(_hash(seed, PREFIX + kind, k)))
            desc = served_flood(net, kind, k)
            name = f"{PREFIX}{label}-{k:03d}.pcap"
            n = write_pcap(out_dir / name, net.pkts)
            files.append({"path": name, "label": label, "packets": n, "description": desc, "rules": net.rules})
    manifest["files"] = files
    manifest["served_floods"] = {"seed": seed, "per_kind": per_kind}
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path
