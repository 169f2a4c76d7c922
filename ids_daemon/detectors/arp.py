"""ARP spoofing: an IP claimed by a MAC other than the one that holds it.

A claim is the (sender protocol address, sender hardware address) pair of an ARP
request or reply. A MAC also holds an IP, without claiming it, when an ARP reply is
addressed to it at that IP (target hardware/protocol address), or when it is the only
MAC that sources IPv4 packets from that IP and sources no other IP (a router or a
relaying man in the middle sources many, and is ignored). Two MACs claiming one IP
within ``hold_s`` is a conflict; the MAC whose claims are unsolicited (replies nobody
asked for, gratuitous announcements) is the spoofer. Without such evidence the newer
claimant is. An unsolicited claim of an IP that another MAC holds by an ARP target or
its IP packets makes the claimant the spoofer. A MAC that claims ``max_ips_per_mac``
IPs or more in unsolicited replies (not announcements of its own addresses) is a
spoofer for all of them (poisoning both the victim and the gateway). Flagged: every
frame in which a spoofer MAC claims the IP it spoofs, and its other ARP frames while
it is held a spoofer (the batch's earlier ones too: the verdict is given when the
batch has been read).
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import PacketBatch, ipv4_str, mac_to_str
from ..config import ArpDetectorConfig
from . import _arp_kernel as _k
from . import _keys_kernel as _kk
from .base import LRU, Finding, isin_keys, mark, warm_once

CLS = "MITM-ArpSpoofing"
_BCAST_MAC = 0xFFFFFFFFFFFF
_HOW = {1: "ARP sender", 0: "ARP target"}


def _pair(mac: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """One 64-bit key per (MAC, IP) claim."""
    with np.errstate(over="ignore"):
        return (mac.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ ip.astype(np.uint64)


class _SourceTable:
    """Which single IPv4 address each MAC sources, as sorted numpy columns (at most ``cap``
    MACs, the least recently seen evicted and counted). A MAC seen sourcing a second IP is
    ``multi`` (a router, a relay) until ``hold_s`` passes without that evidence."""

    def __init__(self, cap: int, hold_s: float, counters: dict[str, int]):
        self.cap, self.hold_s, self.counters = cap, hold_s, counters
        counters.setdefault("source_evictions", 0)
        self.mac = np.zeros(0, np.uint64)
        self.ip = np.zeros(0, np.uint32)
        self.last = np.zeros(0, np.float64)  # last packet from (mac, ip)
        self.multi = np.zeros(0, np.float64)  # last time the MAC sourced another IP too (-inf: never)
        self._by_ip: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.mac.size)

    def update(self, bm: np.ndarray, bfirst: np.ndarray, blast: np.ndarray, blo: np.ndarray,
               bhi: np.ndarray) -> None:
        """Merge one batch's IPv4 sources, reduced per MAC (`_arp_kernel.scan_batch`): first and
        last time, lowest and highest source IP (they differ: the MAC sourced several)."""
        self._by_ip = None
        if bm.size == 0:
            return
        order = np.argsort(bm)
        bm, bfirst, blast, blo, bhi = bm[order], bfirst[order], blast[order], blo[order], bhi[order]
        bip = blo  # one IP per MAC (its only one when it sourced one)
        bmulti = np.where(blo != bhi, blast, -np.inf)
        pos = np.searchsorted(self.mac, bm)
        found = pos < self.mac.size
        found[found] = self.mac[pos[found]] == bm[found]
        fi, bi = pos[found], np.flatnonzero(found)
        if fi.size:
            # an entry not refreshed for hold_s says nothing any more (the MAC may have renumbered)
            stale = bfirst[bi] - np.maximum(self.last[fi], self.multi[fi]) > self.hold_s
            changed = (self.ip[fi] != bip[bi]) & ~stale
            multi = np.where(stale, bmulti[bi], np.maximum(self.multi[fi], bmulti[bi]))
            multi = np.where(changed, np.maximum(multi, blast[bi]), multi)
            self.multi[fi] = multi
            self.ip[fi] = bip[bi]
            self.last[fi] = blast[bi]
        nb = np.flatnonzero(~found)
        if nb.size:
            mac_all = np.concatenate([self.mac, bm[nb]])
            order = np.argsort(mac_all, kind="stable")
            self.mac = mac_all[order]
            self.ip = np.concatenate([self.ip, bip[nb]])[order]
            self.last = np.concatenate([self.last, blast[nb]])[order]
            self.multi = np.concatenate([self.multi, bmulti[nb]])[order]
            over = self.mac.size - self.cap
            if over > 0:
                recent = np.maximum(self.last, self.multi)
                keep = np.sort(np.argpartition(recent, over)[over:])
                self.mac, self.ip, self.last, self.multi = (self.mac[keep], self.ip[keep], self.last[keep],
                                                            self.multi[keep])
                self.counters["source_evictions"] += int(over)

    def holder(self, ip: int, now: float) -> int | None:
        """The one MAC that holds ``ip`` at ``now`` by its IPv4 packets: it sourced ``ip``
        within ``hold_s`` and no other IP, and no other such MAC sourced ``ip`` (two would
        mean one relays the other's packets)."""
        if self._by_ip is None:
            order = np.argsort(self.ip, kind="stable")
            self._by_ip = (order, self.ip[order])
        order, ips = self._by_ip
        lo = int(ips.searchsorted(ip, "left"))
        if lo == ips.size or ips[lo] != ip:
            return None
        hi = int(ips.searchsorted(ip, "right"))
        found = None
        for c in order[lo:hi].tolist():
            if now - self.last[c] <= self.hold_s and now - self.multi[c] > self.hold_s:
                if found is not None:
                    return None  # two MACs source it: one relays the other's packets
                found = c
        return None if found is None else int(self.mac[found])


def _warm_up() -> None:
    """Load (or compile) the kernel once per process: a detector's first batch should not pay for it."""
    b = PacketBatch.empty(4)
    b.ethertype[:] = (0x0800, 0x0800, 0x0806, 0x0800)
    b.ip_version[:] = (4, 4, 0, 4)
    b.eth_src[:] = (2, 2, 2, 4)
    b.src4[:] = (0x0A000001, 0x0A000002, 0x0A000001, 0x0A000001)
    b.ts[:] = (1.0, 2.0, 3.0, 0.5)
    _k.scan_batch(b.status, b.ip_version, b.ethertype, b.eth_src, b.src4, b.ts, True)


class ArpDetector:
    name = "arp"

    def __init__(self, cfg: ArpDetectorConfig | None = None):
        warm_once(_warm_up)
        warm_once(_kk.warm_up)
        self.cfg = cfg or ArpDetectorConfig()
        self.counters: dict[str, int] = {"arp_frames": 0, "conflicts": 0}
        n = self.cfg.max_hosts
        # ip -> {mac: [first, last, unsolicited claims, 1 = ARP sender (a claim) / 0 = ARP target]}
        self.bindings = LRU(n, self.counters, "binding_evictions")
        self.requests = LRU(n, self.counters, "request_evictions")  # (requester ip, asked ip) -> ts
        self.unsolicited = LRU(n, self.counters, "claimant_evictions")  # mac -> {ip: last ts} (unsolicited replies)
        self.spoofers = LRU(n, self.counters, "spoofer_evictions")  # (mac, ip) -> [since, last, why]
        self.sources = _SourceTable(n, self.cfg.hold_s, self.counters)  # mac -> the one IPv4 address it sources

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        # one compiled pass: the ARP frames (decoded, sender IP set), and the IPv4 frames' sources
        # reduced per unicast MAC (host source addresses only)
        learn = bool(self.cfg.learn_from_ip)
        idx, *sources = _k.scan_batch(batch.status, batch.ip_version, batch.ethertype, batch.eth_src, batch.src4,
                                      batch.ts, learn)
        if learn:
            self.sources.update(*sources)
        if idx.size == 0:
            return []
        self.counters["arp_frames"] += int(idx.size)
        cfg = self.cfg
        op = batch.arp_op[idx].tolist()
        spa = batch.src4[idx].tolist()
        tpa = batch.dst4[idx].tolist()
        sha = batch.arp_sha[idx].tolist()
        tha = batch.arp_tha[idx].tolist()
        # a frame sent by another station on the owner's behalf (a bridge, a relay, a spoofer
        # restoring tables) says nothing about whether the owner itself answers unasked
        relayed = ((batch.eth_src[idx] != 0) & (batch.eth_src[idx] != batch.arp_sha[idx])).tolist()
        ts = batch.ts[idx].tolist()
        new: dict[tuple[int, int], str] = {}
        # MACs whose IPs in unsolicited replies were all held spoofers after their last frame
        # (this batch), with the spoofer eviction count then
        covered: dict[int, int] = {}
        for o, s, t, m, th, now, rel in zip(op, spa, tpa, sha, tha, ts, relayed):
            if o == 1:
                self.requests.touch((s, t), now)
            elif o != 2:
                continue
            gratuitous = s == t
            if o == 2 and not gratuitous and t != 0 and th not in (0, _BCAST_MAC, m) and not th >> 40 & 1:
                tgt = self._held(t, now)  # the reply's target: the requester's binding, as the replier knows it
                if th not in tgt:
                    if len(tgt) >= 8:
                        tgt.pop(min(tgt, key=lambda k: tgt[k][1]))
                    tgt[th] = [now, now, 0, 0]
                tgt[th][1] = now
            asked = self.requests.get((t, s))
            unsol = not rel and (gratuitous or (o == 2 and (asked is None or now - asked > cfg.solicit_s)))
            held = self._held(s, now)
            rec = held.get(m)
            if rec is None:
                if len(held) >= 8:  # bounded per IP
                    held.pop(min(held, key=lambda k: held[k][1]))
                rec = held[m] = [now, now, 0, 1]
            rec[1] = now
            rec[3] = 1
            if unsol:
                rec[2] += 1
            if unsol and o == 2 and not gratuitous:  # an answer nobody asked for, about another's address
                ips = self.unsolicited.touch_new(m, dict)
                ips[s] = now
                if now - min(ips.values()) > cfg.hold_s:  # (now - v falls as v rises: else none is old)
                    for ip in [k for k, v in ips.items() if now - v > cfg.hold_s]:
                        del ips[ip]
                if len(ips) > 64:
                    ips.pop(next(iter(ips)))
                was_covered = covered.pop(m, None) == self.counters["spoofer_evictions"]
                if len(ips) >= cfg.max_ips_per_mac:
                    evictions = self.counters["spoofer_evictions"]
                    # after the last pass over m's IPs all were held spoofers, and none has been
                    # evicted since: only s can be new
                    todo = ((s,) if s in ips else ()) if was_covered else ips
                    why = None
                    for ip in todo:
                        if (m, ip) not in self.spoofers:  # (as _spoof: a known spoofer is left as it is)
                            why = why or f"claims {len(ips)} IPs in unsolicited replies"
                            self._spoof(m, ip, now, why, new)
                    if self.counters["spoofer_evictions"] == evictions:
                        covered[m] = evictions
            if len(held) > 1:
                claimants = [k for k in held if k != m and held[k][3]]
                holders = {k: _HOW[held[k][3]] for k in held if k != m}
            else:  # m alone holds s
                claimants, holders = [], {}
            if unsol and (src := self.sources.holder(s, now)) is not None and src != m:
                holders.setdefault(src, "IP source")
            if holders:
                self.counters["conflicts"] += 1
                culprits = []
                if rec[2] > 0 and (claimants or unsol):
                    culprits = [m]  # unsolicited claims of an IP another MAC holds
                elif claimants:
                    culprits = [k for k in claimants if held[k][2] > 0]
                    if not culprits and all(held[k][0] < rec[0] for k in claimants):
                        culprits = [m]  # no unsolicited claims either side: the newcomer
                for c in culprits:
                    if (c, s) in self.spoofers:
                        continue  # already held a spoofer of s: _spoof would change nothing
                    others = holders if c == m else {m: "ARP sender", **holders}
                    prev = [f"{mac_to_str(k)} ({how})" for k, how in others.items() if k != c]
                    self._spoof(c, s, now, f"claims {ipv4_str(s)} held by {', '.join(prev)}", new)
            if (m, s) in self.spoofers:
                self.spoofers[(m, s)][1] = now
        end = float(batch.ts[idx[-1]])
        for k in [k for k, v in self.spoofers.items() if end - v[1] > cfg.hold_s]:
            del self.spoofers[k]
        if not self.spoofers:
            return []
        # flag every frame of this batch in which a spoofer claims the IP it spoofs, and the
        # spoofer's other ARP frames (its probes for victims, claims of its own address)
        sha = batch.arp_sha[idx]
        pair = _pair(sha, batch.src4[idx])
        sp = list(self.spoofers.keys())
        sp_mac = np.array([m for m, _ in sp], dtype=np.uint64)
        bad = _pair(sp_mac, np.array([i for _, i in sp], dtype=np.uint32))
        hit = isin_keys(pair, bad)
        other = ~hit & isin_keys(sha, sp_mac)
        if not hit.any() and not other.any():
            return []
        mask = np.zeros(len(batch), dtype=bool)
        mask[idx[hit | other]] = True
        mark(verdict, mask, CLS)
        findings = []
        # the hits grouped by (MAC, IP) claim, in key order; a stable sort keeps each group's frames
        # in capture order
        if hit.any():
            hit_idx = idx[hit]
            hp = pair[hit]
            perm = np.argsort(hp, kind="stable")
            hp = hp[perm]
            rows = hit_idx[perm]
            starts = np.flatnonzero(np.r_[True, hp[1:] != hp[:-1]])
            ends = np.r_[starts[1:], hp.size].tolist()
            hts = batch.ts[rows]
            t_lo, t_hi = np.minimum.reduceat(hts, starts).tolist(), np.maximum.reduceat(hts, starts).tolist()
            g_mac, g_ip = batch.arp_sha[rows[starts]].tolist(), batch.src4[rows[starts]].tolist()
            dst = batch.dst4[rows].tolist()
            names = {x: ipv4_str(x) for x in set(dst)}
            macs = {x: mac_to_str(x) for x in set(g_mac)}
            for j, a in enumerate(starts.tolist()):
                e = ends[j]
                mac, ip = g_mac[j], g_ip[j]
                why = self.spoofers.get((mac, ip), [0, 0, ""])[2]
                targets = sorted({names[x] for x in dst[a:e]})
                findings.append(Finding(
                    detector=self.name, cls=CLS, first_ts=t_lo[j], last_ts=t_hi[j],
                    packets=e - a, attacker=macs[mac], victim=ipv4_str(ip), protocol="arp",
                    evidence=f"{macs[mac]} {why}; {e - a} claims to {', '.join(targets[:4])}"))
        other_idx = idx[other]
        for mac in np.unique(batch.arp_sha[other_idx]).tolist():
            rows = other_idx[batch.arp_sha[other_idx] == mac]
            spoofed = sorted(ipv4_str(i) for m, i in sp if m == mac)
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[rows].min()), last_ts=float(batch.ts[rows].max()),
                packets=int(rows.size), attacker=mac_to_str(mac), victim=None, protocol="arp",
                evidence=f"{rows.size} other ARP frames (requests, own addresses) of {mac_to_str(mac)}, "
                         f"which spoofs {', '.join(spoofed[:4])}"))
        return findings

    def _held(self, ip: int, now: float) -> dict:
        """The MACs that hold ``ip`` by ARP fields at ``now`` (older claims dropped: renumbering)."""
        held = self.bindings.get_touch(ip)
        if held is None:
            held = {}
            self.bindings.touch(ip, held)
        for mac in [k for k, v in held.items() if now - v[1] > self.cfg.hold_s]:
            del held[mac]  # an old claim no longer holds the IP (renumbering)
        return held

    def _spoof(self, mac: int, ip: int, now: float, why: str, new: dict) -> None:
        if (mac, ip) not in self.spoofers:
            new[(mac, ip)] = why
            self.spoofers.touch((mac, ip), [now, now, why])
