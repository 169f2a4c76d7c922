"""The OS-scan detector's triage: one compiled pass over a batch's columns for the rows that
are probes (`osscan`'s rules), instead of a dozen whole-column compares per batch."""

from __future__ import annotations

import numba as nb
import numpy as np

_SYN, _RST, _ACK = 0x02, 0x04, 0x10


@nb.njit(cache=True, nogil=True)
def probe_rows(status, ipver, proto, l4_ok, frag_offset, icmp_type, icmp_code, tcp_flags, tcp_probes):
    """(rows, is a TCP probe) of the batch's probes: an ICMP timestamp, information or
    address-mask request, an ICMPv6 node-information query, an echo request with a code, and
    (``tcp_probes``) a first-fragment TCP segment without ACK that is neither a lone SYN nor a
    lone RST. ``status`` 0 is a frame decoded whole."""
    n = status.size
    rows = np.empty(n, np.int64)
    tcp = np.empty(n, np.bool_)
    k = 0
    for i in range(n):
        if status[i] != 0 or ipver[i] == 0:
            continue
        p = proto[i]
        hit = False
        on_tcp = False
        if p == 1 and ipver[i] == 4:
            t = icmp_type[i]
            hit = t == 13 or t == 15 or t == 17 or (t == 8 and icmp_code[i] != 0)
        elif p == 58 and ipver[i] == 6:
            t = icmp_type[i]
            hit = t == 139 or (t == 128 and icmp_code[i] != 0)
        elif p == 6 and tcp_probes and l4_ok[i] and frag_offset[i] == 0:
            f = tcp_flags[i] & 0x3F
            hit = (f & _ACK) == 0 and f != _SYN and f != _RST
            on_tcp = hit
        if hit:
            rows[k] = i
            tcp[k] = on_tcp
            k += 1
    return rows[:k], tcp[:k]


def warm_up() -> None:
    u8 = np.zeros(2, np.uint8)
    probe_rows(u8, u8 + 4, u8 + 6, np.ones(2, np.bool_), np.zeros(2, np.uint16), u8, u8, np.ones(2, np.uint16), True)
