"""Dictionary brute force: one source opening many connections to a login service, or
collecting repeated authentication failures from it.

* connections: ``connections`` SYNs (distinct source ports) from one client to the same
  server and authentication port within ``window_s``. Authentication ports are the
  configured ``ports`` plus any (server, port) seen announcing an SSH banner;
* failures: ``failures`` refused logins seen in cleartext replies (FTP ``530``, POP
  ``-ERR``, IMAP ``NO``, SMTP ``535``, telnet "Login incorrect": ``PacketBatch.auth_sig``)
  from one server port to one client within ``window_s``.

Once either is crossed, the client's frames to and from that server port (both
directions) are flagged from the first counted SYN (failure) when it lies in the same
batch, else from the frame that crossed it, until ``hold_s`` after the last
flagged frame.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import TH_ACK, TH_SYN, PacketBatch, address_ids
from ..capture.decode import AUTH_FAILURE, AUTH_SSH_BANNER
from ..config import BruteForceDetectorConfig
from .base import LRU, Finding, HeldPairs, held_keys, isin_keys, pair_key, tcp_mask, tcp_pairs

CLS = "DictionaryBruteForce"


class BruteForceDetector:
    name = "bruteforce"

    def __init__(self, cfg: BruteForceDetectorConfig | None = None):
        self.cfg = cfg or BruteForceDetectorConfig()
        self.counters: dict[str, int] = {"syns": 0, "failures": 0, "attackers": 0}
        self.ports = np.array(sorted(set(self.cfg.ports)), dtype=np.uint16)
        self._is_port = np.zeros(1 << 16, dtype=bool)  # port -> a login port (a gather, not np.isin)
        self._is_port[self.ports] = True
        self.ssh = LRU(self.cfg.max_keys, self.counters, "ssh_evictions")  # pair_key(server, server, port) -> True
        self.syns = LRU(self.cfg.max_keys, self.counters, "syn_evictions")  # pair key -> [(ts, sport)]
        self.fails = LRU(self.cfg.max_keys, self.counters, "failure_evictions")  # pair key -> [ts]
        self.pairs = HeldPairs(self.name, self.cfg.hold_s, self.cfg.max_keys, self.counters)

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        cfg = self.cfg
        tcp = tcp_mask(batch)
        src, dst = address_ids(batch)
        # SSH servers announce themselves: their port is a login service whatever its number
        ban = np.flatnonzero(tcp & (batch.auth_sig == AUTH_SSH_BANNER))
        if ban.size:
            for sp in np.unique(pair_key(src[ban], src[ban], batch.sport[ban])).tolist():
                self.ssh.touch(sp, True)
        syn = tcp & ((batch.tcp_flags & (TH_SYN | TH_ACK)) == TH_SYN)
        if syn.any():
            auth = self._is_port[batch.dport]
            if self.ssh:
                sp = pair_key(dst, dst, batch.dport)
                auth |= isin_keys(sp, held_keys(self.ssh))
            syn &= auth
        events: list[tuple[int, int]] = []  # (frame, 1 if a refused login else 0 for a SYN), in capture order
        for at in np.flatnonzero(syn).tolist():
            events.append((at, 0))
        for at in np.flatnonzero(tcp & (batch.auth_sig == AUTH_FAILURE)).tolist():
            events.append((at, 1))
        if not events and not self.pairs.active:
            return []  # the usual batch: no login attempt, nobody held (no pair keys built)
        _, fwd, rev = tcp_pairs(batch)
        events.sort()
        ts, sport, dport = batch.ts, batch.sport, batch.dport
        for at, fail in events:
            t = float(ts[at])
            if fail:  # the server's reply: client = destination
                self.counters["failures"] += 1
                key, client, server, port = int(rev[at]), int(dst[at]), int(src[at]), int(sport[at])
                lst = self.fails.touch_new(key, list)
                lst.append(t)
                del lst[:-cfg.failures]
                crossed = len(lst) >= cfg.failures and t - lst[0] <= cfg.window_s
                t_first = lst[0]
                why = f"{len(lst)} refused logins in {t - lst[0]:.1f} s"
            else:
                self.counters["syns"] += 1
                key, client, server, port = int(fwd[at]), int(src[at]), int(dst[at]), int(dport[at])
                lst = self.syns.touch_new(key, list)
                cp = int(sport[at])
                if any(p == cp for _, p in lst):
                    continue  # a retransmitted SYN: the same connection
                lst.append((t, cp))
                del lst[:-cfg.connections]
                crossed = len(lst) >= cfg.connections and t - lst[0][0] <= cfg.window_s
                t_first = lst[0][0]
                why = f"{len(lst)} connections in {t - lst[0][0]:.1f} s"
            if crossed:
                if key not in self.pairs.active or self.pairs.active[key][0] < t:
                    self.counters["attackers"] += 1
                # the connections (failures) that crossed it are the attack too: flagged from the
                # first of them when it is in this batch
                first = int(np.searchsorted(ts, t_first)) if t_first >= ts[0] else 0
                self.pairs.hold(key, min(first, at), t, CLS, client, server, port, why)
        return self.pairs.flag(batch, verdict, tcp, fwd, rev)

