"""ARP spoofing: an IP claimed by a MAC other than the one that holds it.

A claim is the (sender protocol address, sender hardware address) pair of an ARP
request or reply. Two MACs claiming one IP within ``hold_s`` is a conflict; the MAC
whose claims are unsolicited (replies nobody asked for, gratuitous announcements)
is the spoofer. Without such evidence the newer claimant is. A MAC that claims more
than ``max_ips_per_mac`` IPs in unsolicited replies is a spoofer for all of them
(poisoning both the victim and the gateway). Flagged: every frame in which a spoofer
MAC claims the IP it spoofs (the batch's earlier ones too: the verdict is given
when the batch has been read).
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import ETH_P_ARP, STATUS_OK, PacketBatch, ipv4_str, mac_to_str
from ..config import ArpDetectorConfig
from .base import LRU, Finding, mark

CLS = "MITM-ArpSpoofing"


def _pair(mac: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """One 64-bit key per (MAC, IP) claim."""
    with np.errstate(over="ignore"):
        return (mac.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ ip.astype(np.uint64)


class ArpDetector:
    name = "arp"

    def __init__(self, cfg: ArpDetectorConfig | None = None):
        self.cfg = cfg or ArpDetectorConfig()
        self.counters: dict[str, int] = {"arp_frames": 0, "conflicts": 0}
        n = self.cfg.max_hosts
        self.bindings = LRU(n, self.counters, "binding_evictions")  # ip -> {mac: [first, last, unsolicited]}
        self.requests = LRU(n, self.counters, "request_evictions")  # (requester ip, asked ip) -> ts
        self.unsolicited = LRU(n, self.counters, "claimant_evictions")  # mac -> {ip: last ts}
        self.spoofers = LRU(n, self.counters, "spoofer_evictions")  # (mac, ip) -> [since, last, why]

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        arp = (batch.ethertype == ETH_P_ARP) & (batch.status == STATUS_OK) & (batch.src4 != 0)
        idx = np.flatnonzero(arp)
        if idx.size == 0:
            return []
        self.counters["arp_frames"] += int(idx.size)
        cfg = self.cfg
        op = batch.arp_op[idx].tolist()
        spa = batch.src4[idx].tolist()
        tpa = batch.dst4[idx].tolist()
        sha = batch.arp_sha[idx].tolist()
        # a frame sent by another station on the owner's behalf (a bridge, a relay, a spoofer
        # restoring tables) says nothing about whether the owner itself answers unasked
        relayed = ((batch.eth_src[idx] != 0) & (batch.eth_src[idx] != batch.arp_sha[idx])).tolist()
        ts = batch.ts[idx].tolist()
        new: dict[tuple[int, int], str] = {}
        for o, s, t, m, now, rel in zip(op, spa, tpa, sha, ts, relayed):
            if o == 1:
                self.requests.touch((s, t), now)
            elif o != 2:
                continue
            gratuitous = s == t
            asked = self.requests.get((t, s))
            unsol = not rel and (gratuitous or (o == 2 and (asked is None or now - asked > cfg.solicit_s)))
            held = self.bindings.get_touch(s)
            if held is None:
                held = {}
                self.bindings.touch(s, held)
            for mac in [k for k, v in held.items() if now - v[1] > cfg.hold_s]:
                del held[mac]  # an old claim no longer holds the IP (renumbering)
            rec = held.get(m)
            if rec is None:
                if len(held) >= 8:  # bounded per IP
                    held.pop(min(held, key=lambda k: held[k][1]))
                rec = held[m] = [now, now, 0]
            rec[1] = now
            if unsol:
                rec[2] += 1
                ips = self.unsolicited.touch_new(m, dict)
                ips[s] = now
                for ip in [k for k, v in ips.items() if now - v > cfg.hold_s]:
                    del ips[ip]
                if len(ips) > 64:
                    ips.pop(next(iter(ips)))
                if len(ips) >= cfg.max_ips_per_mac:
                    for ip in ips:
                        self._spoof(m, ip, now, f"claims {len(ips)} IPs in unsolicited replies", new)
            if len(held) > 1:
                self.counters["conflicts"] += 1
                others = [k for k in held if k != m]
                if rec[2] > 0:
                    culprits = [m]
                else:
                    culprits = [k for k in others if held[k][2] > 0]
                    if not culprits and all(held[k][0] < rec[0] for k in others):
                        culprits = [m]  # no unsolicited claims either side: the newcomer
                for c in culprits:
                    prev = [mac_to_str(k) for k in held if k != c]
                    self._spoof(c, s, now, f"claims {ipv4_str(s)} held by {', '.join(prev)}", new)
            if (m, s) in self.spoofers:
                self.spoofers[(m, s)][1] = now
        end = float(batch.ts[idx[-1]])
        for k in [k for k, v in self.spoofers.items() if end - v[1] > cfg.hold_s]:
            del self.spoofers[k]
        if not self.spoofers:
            return []
        # flag every frame of this batch in which a spoofer claims the IP it spoofs
        pair = _pair(batch.arp_sha[idx], batch.src4[idx])
        sp = list(self.spoofers.keys())
        bad = _pair(np.array([m for m, _ in sp], dtype=np.uint64), np.array([i for _, i in sp], dtype=np.uint32))
        hit = np.isin(pair, bad)
        if not hit.any():
            return []
        mask = np.zeros(len(batch), dtype=bool)
        mask[idx[hit]] = True
        mark(verdict, mask, CLS)
        findings = []
        hit_idx = idx[hit]
        _, first, inverse = np.unique(pair[hit], return_index=True, return_inverse=True)
        for j, f0 in enumerate(first.tolist()):
            rows = hit_idx[inverse.ravel() == j]
            mac, ip = int(batch.arp_sha[hit_idx[f0]]), int(batch.src4[hit_idx[f0]])
            why = self.spoofers.get((mac, ip), [0, 0, ""])[2]
            targets = sorted({ipv4_str(x) for x in batch.dst4[rows].tolist()})
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[rows].min()), last_ts=float(batch.ts[rows].max()),
                packets=int(rows.size), attacker=mac_to_str(mac), victim=ipv4_str(ip), protocol="arp",
                evidence=f"{mac_to_str(mac)} {why}; {rows.size} claims to {', '.join(targets[:4])}"))
        return findings

    def _spoof(self, mac: int, ip: int, now: float, why: str, new: dict) -> None:
        if (mac, ip) not in self.spoofers:
            new[(mac, ip)] = why
            self.spoofers.touch((mac, ip), [now, now, why])
