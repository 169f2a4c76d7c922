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
batch has been read), and the ICMP redirects its MAC sends within ``hold_s`` of its last
spoofed claim: a man in the middle's kernel forwarding what it poisoned its victims into
sending it, out of the interface it came in on, tells each sender of a better first hop.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..capture.batch import PacketBatch, ipv4_str, mac_to_str
from ..config import ArpDetectorConfig
from . import _arp_kernel as _k
from . import _keys_kernel as _kk
from . import _scan_kernel as _sk
from .base import Finding, Table, isin_keys, mark, warm_once

CLS = "MITM-ArpSpoofing"


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
        self._by_ip: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

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

    def by_ip(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(IP, MAC, last, multi) of every entry, ordered by IP (stably): `_arp_kernel._holder` finds
        the one MAC that holds an IP at a time by its IPv4 packets there (it sourced the IP within
        ``hold_s`` and no other IP, and no other such MAC sourced it: two would mean one relays the
        other's packets)."""
        if self._by_ip is None:
            order = np.argsort(self.ip, kind="stable")
            self._by_ip = (self.ip[order], self.mac[order], self.last[order], self.multi[order])
        return self._by_ip

    def holder(self, ip: int, now: float) -> int | None:
        """The one MAC that holds ``ip`` at ``now`` by its IPv4 packets (see `by_ip`), or None."""
        ips, macs, last, multi = self.by_ip()
        c = _k._holder(ips, macs, last, multi, ip, now, self.hold_s) if ips.size else -1
        return None if c < 0 else int(macs[c])


def _warm_up() -> None:
    """Load (or compile) the kernel once per process: a detector's first batch should not pay for it."""
    b = PacketBatch.empty(4)
    b.ethertype[:] = (0x0800, 0x0800, 0x0806, 0x0800)
    b.ip_version[:] = (4, 4, 0, 4)
    b.eth_src[:] = (2, 2, 2, 4)
    b.src4[:] = (0x0A000001, 0x0A000002, 0x0A000001, 0x0A000001)
    b.ts[:] = (1.0, 2.0, 3.0, 0.5)
    _k.scan_batch(b.status, b.ip_version, b.ethertype, b.eth_src, b.src4, b.ts, b.proto, b.icmp_type, True)
    # and the rules' kernels, on a MAC that answers unasked for two addresses (a spoofer)
    b = PacketBatch.empty(4)
    b.ethertype[:] = 0x0806
    b.arp_op[:] = (1, 2, 2, 2)
    b.src4[:] = (0x0A000001, 0x0A000002, 0x0A000003, 0x0A000002)
    b.dst4[:] = (0x0A000002, 0x0A000001, 0x0A000001, 0x0A000001)
    b.eth_src[:] = b.arp_sha[:] = (2, 4, 4, 4)
    b.arp_tha[:] = (0, 2, 2, 2)
    b.ts[:] = (1.0, 2.0, 3.0, 4.0)
    ArpDetector().process(b, np.full(4, -1, np.int16))


# the dotted quads and MAC texts of the findings, cached: a spoofer's claims are worded batch after
# batch with the same few dozen addresses (~1 us each to format)
_ip_name = lru_cache(maxsize=1 << 14)(ipv4_str)
_mac_name = lru_cache(maxsize=1 << 12)(mac_to_str)

_HOW_NAME = {_k.HOW_TARGET: "ARP target", _k.HOW_SENDER: "ARP sender", _k.HOW_SOURCE: "IP source"}


class ArpDetector:
    name = "arp"

    def __init__(self, cfg: ArpDetectorConfig | None = None):
        warm_once(_warm_up)
        warm_once(_kk.warm_up)
        self.cfg = cfg or ArpDetectorConfig()
        self.counters: dict[str, int] = {"arp_frames": 0, "conflicts": 0, "redirects": 0}
        n = self.cfg.max_hosts
        # the per-frame rules run compiled (`_arp_kernel.claims`) over these tables:
        # ip -> the MACs that hold it (a held list in the pools below: mac, first, last, unsolicited
        # claims, 1 = ARP sender (a claim) / 0 = ARP target)
        self.bindings = Table(n, self.counters, "binding_evictions", 1)
        self.requests = Table(n, self.counters, "request_evictions", 1)  # (requester ip, asked ip) -> ts
        self.unsolicited = Table(n, self.counters, "claimant_evictions", 1)  # mac -> its IPs in unsolicited replies
        self.spoofers = Table(n, self.counters, "spoofer_evictions", 3)  # (mac, ip) -> since, last, evidence id
        self.sources = _SourceTable(n, self.cfg.hold_s, self.counters)  # mac -> the one IPv4 address it sources
        rows = 16  # (the pools grow with the tables' nodes)
        hm = _k.HELD_MAX
        self._held = (np.zeros(rows, np.int64), np.zeros((rows, hm), np.uint64), np.zeros((rows, hm)),
                      np.zeros((rows, hm)), np.zeros((rows, hm), np.int64), np.zeros((rows, hm), np.int64))
        self._claims = (np.zeros(rows, np.int64), np.zeros((rows, _k.CLAIMS_MAX + 1), np.int64),
                        np.zeros((rows, _k.CLAIMS_MAX + 1)))
        self._why: dict[int, str] = {}  # evidence id -> why the MAC is a spoofer
        self._next_why = 0

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        # one compiled pass: the ARP frames (decoded, sender IP set), the ICMP redirects, and the
        # IPv4 frames' sources reduced per unicast MAC (host source addresses only)
        learn = bool(self.cfg.learn_from_ip)
        idx, redirects, *sources = _k.scan_batch(batch.status, batch.ip_version, batch.ethertype, batch.eth_src,
                                                 batch.src4, batch.ts, batch.proto, batch.icmp_type, learn)
        if learn:
            self.sources.update(*sources)
        findings = self._rules(batch, verdict, idx) if idx.size else []
        if redirects.size and len(self.spoofers):
            findings += self._redirects(batch, verdict, redirects)
        return findings

    def _redirects(self, batch: PacketBatch, verdict: np.ndarray, rows: np.ndarray) -> list[Finding]:
        """The ICMP redirects (``rows``) a held spoofer's MAC sends: a man in the middle's kernel
        forwarding the traffic it poisoned its victims into sending it, out of the interface it came
        in on, tells each sender of a better first hop (Linux does by default). No host on a LAN
        needs another to reroute it while that one claims addresses it does not hold."""
        sp_mac, sp_ip, _, sp_last = _k.spoofer_keys(self.spoofers.t)
        rows = rows[isin_keys(batch.eth_src[rows], sp_mac)]
        if not rows.size:
            return []
        # held when sent: within hold_s of the MAC's last spoofed claim (earlier in the batch too, as
        # its ARP frames are)
        last: dict[int, float] = {}
        for m, t in zip(sp_mac.tolist(), sp_last.tolist()):
            last[m] = max(last.get(m, t), t)
        lim = np.array([last[m] for m in batch.eth_src[rows].tolist()]) + float(self.cfg.hold_s)
        rows = rows[batch.ts[rows] <= lim]
        if not rows.size:
            return []
        self.counters["redirects"] += int(rows.size)
        mask = np.zeros(len(batch), dtype=bool)
        mask[rows] = True
        mark(verdict, mask, CLS)
        findings = []
        macs = batch.eth_src[rows]
        for mac in np.unique(macs).tolist():
            r = rows[macs == mac]
            to = sorted({_ip_name(x) for x in batch.dst4[r].tolist()})
            spoofed = sorted({_ip_name(i) for m, i in zip(sp_mac.tolist(), sp_ip.tolist()) if m == mac})
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[r].min()), last_ts=float(batch.ts[r].max()),
                packets=int(r.size), attacker=_mac_name(mac), victim=to[0] if len(to) == 1 else None, protocol="icmp",
                evidence=f"{_mac_name(mac)} sends {r.size} ICMP redirect{'s' if r.size > 1 else ''} to {', '.join(to[:4])} while it spoofs "
                         f"{', '.join(spoofed[:4])}"))
        return findings

    def _rules(self, batch: PacketBatch, verdict: np.ndarray, idx: np.ndarray) -> list[Finding]:
        """The rules over the batch's ARP frames (``idx``), and the flagging of the spoofers' frames."""
        self.counters["arp_frames"] += int(idx.size)
        cfg = self.cfg
        # a frame sent by another station on the owner's behalf (a bridge, a relay, a spoofer
        # restoring tables) says nothing about whether the owner itself answers unasked
        relayed = (batch.eth_src[idx] != 0) & (batch.eth_src[idx] != batch.arp_sha[idx])
        src_cols = self.sources.by_ip()
        out = _k.claims(
            np.ascontiguousarray(batch.arp_op[idx]), np.ascontiguousarray(batch.src4[idx]),
            np.ascontiguousarray(batch.dst4[idx]), np.ascontiguousarray(batch.arp_sha[idx], dtype=np.uint64),
            np.ascontiguousarray(batch.arp_tha[idx], dtype=np.uint64), np.ascontiguousarray(batch.ts[idx], dtype=np.float64),
            relayed, self.bindings.t, self.requests.t, self.unsolicited.t, self.spoofers.t, *self._held,
            *self._claims, *src_cols, float(cfg.hold_s), float(cfg.solicit_s), int(cfg.max_ips_per_mac),
            self._next_why)
        self._held, self._claims = tuple(out[:6]), tuple(out[6:9])
        conflicts, rec_mac, rec_ip, rec_kind, rec_arg, hl_mac, hl_how = out[9:]
        self.counters["conflicts"] += int(conflicts)
        for tab in (self.bindings, self.requests, self.unsolicited, self.spoofers):
            tab.sync()
        self._record(rec_mac, rec_ip, rec_kind, rec_arg, hl_mac, hl_how)
        end = float(batch.ts[idx[-1]])
        # a spoofer whose last claim is more than hold_s before the batch's end is forgotten
        _sk.expire_before(self.spoofers.t, _k.S_LAST, end - float(cfg.hold_s))
        if not len(self.spoofers):
            return []
        # flag every frame of this batch in which a spoofer claims the IP it spoofs, and the
        # spoofer's other ARP frames (its probes for victims, claims of its own address)
        sha = batch.arp_sha[idx]
        pair = _pair(sha, batch.src4[idx])
        sp_mac, sp_ip, sp_why, _ = _k.spoofer_keys(self.spoofers.t)
        sp = list(zip(sp_mac.tolist(), sp_ip.tolist()))
        why_of = dict(zip(sp, sp_why.tolist()))
        bad = _pair(sp_mac, sp_ip)
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
            names = {x: _ip_name(x) for x in set(dst)}
            macs = {x: _mac_name(x) for x in set(g_mac)}
            for j, a in enumerate(starts.tolist()):
                e = ends[j]
                mac, ip = g_mac[j], g_ip[j]
                w = why_of.get((mac, ip))
                why = "" if w is None else self._why[w]
                targets = sorted({names[x] for x in dst[a:e]})
                findings.append(Finding(
                    detector=self.name, cls=CLS, first_ts=t_lo[j], last_ts=t_hi[j],
                    packets=e - a, attacker=macs[mac], victim=_ip_name(ip), protocol="arp",
                    evidence=f"{macs[mac]} {why}; {e - a} claims to {', '.join(targets[:4])}"))
        other_idx = idx[other]
        for mac in np.unique(batch.arp_sha[other_idx]).tolist():
            rows = other_idx[batch.arp_sha[other_idx] == mac]
            spoofed = sorted(_ip_name(i) for m, i in sp if m == mac)
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[rows].min()), last_ts=float(batch.ts[rows].max()),
                packets=int(rows.size), attacker=mac_to_str(mac), victim=None, protocol="arp",
                evidence=f"{rows.size} other ARP frames (requests, own addresses) of {mac_to_str(mac)}, "
                         f"which spoofs {', '.join(spoofed[:4])}"))
        return findings

    def _record(self, rec_mac: np.ndarray, rec_ip: np.ndarray, rec_kind: np.ndarray, rec_arg: np.ndarray,
                hl_mac: np.ndarray, hl_how: np.ndarray) -> None:
        """Word the evidence of the spoofers the kernel found (`_arp_kernel.claims`' records)."""
        n = int(rec_mac.size)
        if n:
            kinds, args = rec_kind.tolist(), rec_arg.tolist()
            held_at = [a for k, a in zip(kinds, args) if k == _k.WHY_HELD] + [int(hl_mac.size)]
            macs, hows = hl_mac.tolist(), hl_how.tolist()
            h = 0
            for r, (k, a, ip) in enumerate(zip(kinds, args, rec_ip.tolist())):
                if k == _k.WHY_MANY:
                    why = f"claims {a} IPs in unsolicited replies"
                else:
                    e = held_at[h + 1]
                    h += 1
                    prev = [f"{mac_to_str(macs[q])} ({_HOW_NAME[hows[q]]})" for q in range(a, e)]
                    why = f"claims {ipv4_str(ip)} held by {', '.join(prev)}"
                self._why[self._next_why + r] = why
            self._next_why += n
        if len(self._why) > 2 * len(self.spoofers) + 4096:  # drop the evidence of spoofers no longer held
            live = set(_k.spoofer_keys(self.spoofers.t)[2].tolist())
            self._why = {i: v for i, v in self._why.items() if i in live}
