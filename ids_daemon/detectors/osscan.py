"""Probes that no ordinary stack or application sends: ICMP fingerprinting queries, and TCP
segments with a flag set no stack emits.

xprobe2, nmap -O and ICMP fingerprinting tools tell operating systems apart by how they
answer ICMP messages that ping and the network stack never emit: timestamp (type 13),
information (15) and address-mask (17) requests, and echo requests with a non-zero code
(xprobe2 sends code 123, nmap's IE probes code 9; ``ping`` always sends 0). ICMPv6 has
the node-information query (139) and coded echo requests. In the real corpus, none of
the 199,642 benign packets is one of these; every ICMP fingerprinting capture holds
several.

TCP (``tcp_probes``): every segment after a connection's opening SYN carries ACK, and the
only segment sent without ACK besides that SYN is a RST answering a segment that had none
(RFC 9293, 3.10.7). A segment without ACK that is neither a lone SYN nor a lone RST is a
crafted probe: nmap's FIN, NULL and Xmas (FIN+PSH+URG) scans, hping3's and unicornscan's, and
the SYN+FIN and FIN+PSH+URG probes of OS detection (Suricata and Snort rules look for the
same flag sets). In the development corpus none of the 53,783 benign TCP segments is one;
three attack captures hold them, from 3 (a 7-port scan, too small for the scan detector's
distinct-port rule) to 6,084.

One such probe makes its (prober, host) pair a scan for ``hold_s`` after the last probe:
the probe, and everything the two exchange from ``LOOKBACK_S`` before it on in either
direction (the host's replies, and the other probes a run sends to the same host), is
flagged Recon-OSScan (ICMP) or Recon-PortScan (TCP).
"""

from __future__ import annotations

import numpy as np

from ..capture.batch import STATUS_OK, PacketBatch, address_ids
from ..config import OsScanDetectorConfig
from . import _osscan_kernel as _ok
from .base import Finding, HeldPairs, pair_key, warm_once

_WHAT = {13: "ICMP timestamp request", 15: "ICMP information request", 17: "ICMP address-mask request",
         139: "ICMPv6 node-information query"}
_FIN, _SYN, _RST, _PSH, _URG = 0x01, 0x02, 0x04, 0x08, 0x20
_FLAG_NAMES = ((_SYN, "SYN"), (_FIN, "FIN"), (_RST, "RST"), (_PSH, "PSH"), (_URG, "URG"))


def _tcp_what(flags: int) -> str:
    """A crafted segment's flags, as the evidence names them."""
    set_ = [n for bit, n in _FLAG_NAMES if flags & bit]
    return "TCP segment with no flags (NULL scan)" if not set_ else f"TCP {'+'.join(set_)} without ACK"


class OsScanDetector:
    name = "osscan"

    def __init__(self, cfg: OsScanDetectorConfig | None = None):
        self.cfg = cfg or OsScanDetectorConfig()
        self.counters: dict[str, int] = {"probes": 0, "pairs": 0}
        self.pairs = HeldPairs(self.name, self.cfg.hold_s, self.cfg.max_pairs, self.counters, protocol="icmp")
        warm_once(_ok.warm_up)

    def process(self, batch: PacketBatch, verdict: np.ndarray) -> list[Finding]:
        hits, is_tcp = _ok.probe_rows(batch.status, batch.ip_version, batch.proto, batch.l4_ok, batch.frag_offset,
                                      batch.icmp_type, batch.icmp_code, batch.tcp_flags, self.cfg.tcp_probes)
        if not hits.size and not self.pairs.active:
            return []  # the usual batch: no probe, nobody held (one compiled pass)
        ok = (batch.status == STATUS_OK) & (batch.ip_version > 0)
        src, dst = address_ids(batch)
        zero = np.zeros(len(batch), dtype=np.uint16)
        fwd, rev = pair_key(src, dst, zero), pair_key(dst, src, zero)
        if hits.size:
            self.counters["probes"] += int(hits.size)
            cols = (hits.tolist(), batch.ts[hits].tolist(), fwd[hits].tolist(), src[hits].tolist(),
                    dst[hits].tolist(), batch.icmp_type[hits].tolist(), batch.icmp_code[hits].tolist(),
                    is_tcp.tolist(), batch.tcp_flags[hits].tolist())
            for i, ts, key, prober, host, typ, code, on_tcp, flags in zip(*cols):
                if key not in self.pairs.active:
                    self.counters["pairs"] += 1
                if on_tcp:
                    self.pairs.hold(key, i, ts, "Recon-PortScan", prober, host, -1,
                                    f"scan probe ({_tcp_what(flags & 0x3F)}: no stack sends it)")
                    continue
                what = _WHAT.get(typ) or f"ICMP{'v6' if typ == 128 else ''} echo request with code {code}"
                self.pairs.hold(key, i, ts, "Recon-OSScan", prober, host, -1, f"fingerprinting probe ({what})")
        return self.pairs.flag(batch, verdict, ok, fwd, rev)
