"""Web attacks: HTTP requests that carry attack signatures (SQL injection, XSS, command
injection, path traversal / file inclusion, scanner fingerprints).

Decode marks each HTTP request (a TCP segment starting with a method, to any port) with
the code of the first signature its request line, headers and first body segment match
(``PacketBatch.http_sig``, `decode.HTTP_SIGNATURES`). Once a request of a (client,
server, server port) matches, that request, the rest of the connection in both
directions and further connections between that client and that server port are
flagged until ``hold_s`` after the last flagged frame: the server's responses belong to
the attack. A pair whose requests carried a scanner's fingerprint stays a
VulnerabilityScan (a scanner's probes carry every other signature too); otherwise the
pair takes the class of its latest matching request.
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import PacketBatch, address_ids
from ..capture.decode import HTTP_SIGNATURES
from ..config import WebDetectorConfig
from .base import Finding, HeldPairs, tcp_pairs

_SCANNER = {code for code, _cls, what in HTTP_SIGNATURES if what.startswith("scanner")}


class WebDetector:
    name = "web"

    def __init__(self, cfg: WebDetectorConfig | None = None):
        self.cfg = cfg or WebDetectorConfig()
        self.counters: dict[str, int] = {"requests_matched": 0, "pairs": 0}
        self.pairs = HeldPairs(self.name, self.cfg.hold_s, self.cfg.max_pairs, self.counters)
        self.scanners: set[int] = set()  # pair keys whose requests carried a scanner fingerprint (pruned with pairs)

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        tcp, fwd, rev = tcp_pairs(batch)
        src, dst = address_ids(batch)
        hits = np.flatnonzero(tcp & (batch.http_sig > 0))
        if hits.size:
            self.counters["requests_matched"] += int(hits.size)
            cols = (hits.tolist(), batch.http_sig[hits].tolist(), batch.ts[hits].tolist(), fwd[hits].tolist(),
                    src[hits].tolist(), dst[hits].tolist(), batch.dport[hits].tolist())
            for i, code, t, key, client, server, port in zip(*cols):
                _, cls, what = HTTP_SIGNATURES[code - 1]
                known = key in self.pairs.active
                st = self.pairs.hold(key, i, t, cls, client, server, port, what)
                if not known:
                    self.counters["pairs"] += 1
                    self.scanners.discard(key)
                if code in _SCANNER:
                    self.scanners.add(key)
                if key in self.scanners:
                    st[1], st[5] = "VulnerabilityScan", "scanner fingerprint in the User-Agent"
                else:
                    st[1], st[5] = cls, what
        findings = self.pairs.flag(batch, verdict, tcp, fwd, rev)
        if len(self.scanners) > len(self.pairs.active):
            self.scanners &= set(self.pairs.active.keys())
        return findings
