"""DNS spoofing: conflicting responses to one query.

A query is (client, client port, transaction id, question). Two responses to it from
the same server address with different answers (A/AAAA records and rcode, in any
order) within ``window_s`` are a conflict: the one that differs from the first is
spoofed, and so is every later copy of it (an on-path spoofer's frames are often
seen twice). A response to a query from an address other than the server that was
asked is spoofed too. Flagged: the spoofed responses.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import PacketBatch, ipv4_str, mac_to_str
from ..config import DnsDetectorConfig
from .base import LRU, Finding, mark

CLS = "DNS_Spoofing"


def _multicast(ip: int) -> bool:
    return ip >> 28 == 0xE or ip == 0xFFFFFFFF


class DnsDetector:
    name = "dns"

    def __init__(self, cfg: DnsDetectorConfig | None = None):
        self.cfg = cfg or DnsDetectorConfig()
        self.counters: dict[str, int] = {"dns_frames": 0, "conflicts": 0}
        self.queries = LRU(self.cfg.max_queries, self.counters, "query_evictions")  # qkey -> (server, ts)
        self.responses = LRU(self.cfg.max_queries, self.counters, "response_evictions")  # rkey -> [ahash, ts, bad]

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        sel = batch.dns_ok & (batch.ip_version == 4)
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            return []
        self.counters["dns_frames"] += int(idx.size)
        win = self.cfg.window_s
        cols = zip(idx.tolist(), batch.ts[idx].tolist(), batch.src4[idx].tolist(), batch.dst4[idx].tolist(),
                   batch.sport[idx].tolist(), batch.dport[idx].tolist(), batch.dns_txid[idx].tolist(),
                   batch.dns_qr[idx].tolist(), batch.dns_qhash[idx].tolist(), batch.dns_ahash[idx].tolist())
        flagged: dict[tuple[int, int, int], list] = {}  # (mac, client, server) -> [rows, why]
        for i, now, src, dst, sp, dp, txid, qr, qh, ah in cols:
            if not qr:
                if dp == 53:
                    self.queries.touch((src, sp, txid, qh), (dst, now))
                continue
            if sp != 53:
                continue
            why = None
            q = self.queries.get((dst, dp, txid, qh))
            if q is not None and q[0] != src and not _multicast(q[0]) and now - q[1] <= win:
                why = f"response from {ipv4_str(src)} to a query sent to {ipv4_str(q[0])}"
            rkey = (dst, dp, src, txid, qh)
            r = self.responses.get_touch(rkey)
            if r is None or now - r[1] > win:
                self.responses.touch(rkey, [ah, now, set()])
            elif ah in r[2] or ah != r[0]:
                if ah not in r[2]:
                    self.counters["conflicts"] += 1
                    if len(r[2]) < 8:
                        r[2].add(ah)
                why = why or "two responses with different answers to one query"
            if why is not None:
                mac = int(batch.eth_src[i])
                f = flagged.setdefault((mac, dst, src), [[], why])
                f[0].append(i)
        if not flagged:
            return []
        findings = []
        mask = np.zeros(len(batch), dtype=bool)
        for (mac, client, server), (rows, why) in flagged.items():
            r = np.asarray(rows)
            mask[r] = True
            who = mac_to_str(mac) if mac else ipv4_str(server)
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[r].min()), last_ts=float(batch.ts[r].max()),
                packets=int(r.size), attacker=who, victim=ipv4_str(client), protocol="udp",
                evidence=f"{why} (server address {ipv4_str(server)}, sender {who})"))
        mark(verdict, mask, CLS)
        return findings
