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

from ..capture.batch import PacketBatch, address_ids, address_name, mac_to_str, multicast_dst
from ..config import DnsDetectorConfig
from .base import LRU, Finding, mark

CLS = "DNS_Spoofing"


class DnsDetector:
    name = "dns"

    def __init__(self, cfg: DnsDetectorConfig | None = None):
        self.cfg = cfg or DnsDetectorConfig()
        self.counters: dict[str, int] = {"dns_frames": 0, "conflicts": 0}
        self.queries = LRU(self.cfg.max_queries, self.counters, "query_evictions")  # qkey -> (server, ts, multicast)
        self.responses = LRU(self.cfg.max_queries, self.counters, "response_evictions")  # rkey -> [ahash, ts, bad]

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        sel = batch.dns_ok & (batch.ip_version > 0)  # over IPv4 or IPv6
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            return []
        self.counters["dns_frames"] += int(idx.size)
        win = self.cfg.window_s
        s_id, d_id = address_ids(batch)
        mc = multicast_dst(batch)
        cols = zip(idx.tolist(), batch.ts[idx].tolist(), s_id[idx].tolist(), d_id[idx].tolist(), mc[idx].tolist(),
                   batch.sport[idx].tolist(), batch.dport[idx].tolist(), batch.dns_txid[idx].tolist(),
                   batch.dns_qr[idx].tolist(), batch.dns_qhash[idx].tolist(), batch.dns_ahash[idx].tolist())
        flagged: dict[tuple[int, int, int], list] = {}  # (mac, client, server) -> [rows, why]
        for i, now, src, dst, dst_mc, sp, dp, txid, qr, qh, ah in cols:
            if not qr:
                if dp == 53:
                    self.queries.touch((src, sp, txid, qh), (dst, now, dst_mc))
                continue
            if sp != 53:
                continue
            why = None
            q = self.queries.get((dst, dp, txid, qh))
            if q is not None and q[0] != src and not q[2] and now - q[1] <= win:
                why = f"response from {address_name(src)} to a query sent to {address_name(q[0])}"
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
            who = mac_to_str(mac) if mac else address_name(server)
            findings.append(Finding(
                detector=self.name, cls=CLS, first_ts=float(batch.ts[r].min()), last_ts=float(batch.ts[r].max()),
                packets=int(r.size), attacker=who, victim=address_name(client), protocol="udp",
                evidence=f"{why} (server address {address_name(server)}, sender {who})"))
        mark(verdict, mask, CLS)
        return findings
