"""Backdoors: a remote command shell at work in a TCP connection.

Decode marks a TCP segment (any port, not an HTTP request: those are the web detector's) that
shows a shell being driven (``PacketBatch.shell_sig``, `decode.SHELL_SIGNATURES`): a Windows
command shell's banner or the output of ``id`` (not from a telnet or rlogin server, which give
their users a shell by design), or a command line that fetches a program and runs it (an FTP or
tftp script, ``wget``/``curl`` made executable or piped to a shell, a botnet loader's busybox
probe or echo-written binary, certutil or PowerShell downloads), in a segment of a few short
lines. These are the traces Suricata's ATTACK_RESPONSE rules look for: an exploit's bind or
reverse shell, a worm's dropper, a Mirai-style loader on a telnet session.

A segment counts when its receiver acknowledges its bytes (a segment back on the connection,
not a reset, whose ack covers it, within ``confirm_s``): only a sender that holds the
connection gets its bytes acknowledged, so one spoofed segment names nobody. Then the two hosts
(whatever the ports: the exploit before the shell, the download after it) are flagged
Backdoor_Malware from ``LOOKBACK_S`` before the segment when that is in the same batch, until
``hold_s`` after their last flagged frame. The attacker is the shell's controller: the receiver
of a banner or ``id`` output, the sender of a command line.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import STATUS_OK, TH_ACK, TH_RST, PacketBatch, address_ids
from ..capture.decode import SHELL_DROPPER, SHELL_SIGNATURES
from ..config import ShellDetectorConfig
from .base import _M32, LRU, Finding, HeldPairs, acknowledged, conn_pairs, isin_keys, pair_key, tcp_mask

CLS = "Backdoor_Malware"
_WHAT = dict(SHELL_SIGNATURES)


class ShellDetector:
    name = "shell"

    def __init__(self, cfg: ShellDetectorConfig | None = None):
        self.cfg = cfg or ShellDetectorConfig()
        self.counters: dict[str, int] = {"segments_matched": 0, "segments_confirmed": 0, "pairs": 0}
        # matching segments waiting for their receiver's ACK, keyed by the connection as the
        # receiver sends on it: key -> (batch number, row, ts, seq + payload, code, attacker, victim)
        self.pending = LRU(4096, self.counters, "pending_evictions")
        self.pairs = HeldPairs(self.name, self.cfg.hold_s, self.cfg.max_pairs, self.counters)
        self.batches = 0

    def process(self, b: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        self.batches += 1
        hits = np.flatnonzero(b.shell_sig > 0)
        if not hits.size and not self.pending and not self.pairs.active:
            return []  # the usual batch: one column compare
        src, dst = address_ids(b)
        if hits.size or self.pending:
            tcp = tcp_mask(b)
            fwd, rev = conn_pairs(b)
            if hits.size:
                self.counters["segments_matched"] += int(hits.size)
                pay = (b.ip_len[hits].astype(np.int64) - b.ip_hdr_len[hits] - b.l4_hdr_len[hits]).tolist()
                for i, key, code, t, seq, s_, d_, n in zip(hits.tolist(), rev[hits].tolist(), b.shell_sig[hits].tolist(),
                                                         b.ts[hits].tolist(), b.tcp_seq[hits].tolist(),
                                                         src[hits].tolist(), dst[hits].tolist(), pay):
                    attacker, victim = (s_, d_) if code == SHELL_DROPPER else (d_, s_)
                    self.pending.touch(key, (self.batches, i, t, (seq + max(n, 0)) & _M32, code, attacker, victim))
            self._confirm(b, tcp, fwd)
        if not self.pairs.active:
            return []
        ok = (b.status == STATUS_OK) & (b.ip_version > 0)
        zero = np.zeros(len(b), dtype=np.uint16)
        return self.pairs.flag(b, verdict, ok, pair_key(src, dst, zero), pair_key(dst, src, zero))

    def _confirm(self, b: PacketBatch, tcp: np.ndarray, fwd: np.ndarray) -> None:
        """Pending segments their receiver acknowledged (held), and those that waited too long (dropped)."""
        keys = np.fromiter(self.pending.keys(), dtype=np.uint64, count=len(self.pending))
        acks = np.flatnonzero(tcp & (b.tcp_flags & (TH_ACK | TH_RST) == TH_ACK) & isin_keys(fwd, keys))
        for _, p, t in acknowledged(b, self.pending, acks, fwd[acks], self.batches, self.cfg.confirm_s):
            self.counters["segments_confirmed"] += 1
            batch_no, row, _, _, code, attacker, victim = p
            k2 = int(pair_key(np.array([attacker], np.uint64), np.array([victim], np.uint64), np.zeros(1, np.uint16))[0])
            if k2 not in self.pairs.active:
                self.counters["pairs"] += 1
            self.pairs.hold(k2, row if batch_no == self.batches else 0, t, CLS, attacker, victim, -1,
                            f"remote shell: {_WHAT[code]}")
