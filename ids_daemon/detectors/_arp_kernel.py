"""Compiled per-batch pass of the ARP detector: which frames are ARP claims, and per MAC that
sources IPv4 packets, what the batch shows of it (first and last time, lowest and highest
source address), in one pass over the batch instead of a sort of its IPv4 frames.

A MAC sources more than one IP in the batch exactly when its lowest and highest source
addresses differ, so the (MAC, IP) pairs never need to be formed: a per-batch
open-addressing hash table of the MACs seen (linear probing) is all the state.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_ETH_P_ARP = 0x0806
_STATUS_OK = 0
_GROUP_BIT = np.uint64(1 << 40)  # I/G bit of the first octet: multicast/broadcast MACs
_MIX = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, nogil=True)
def scan_batch(status, ip_version, ethertype, eth_src, src4, ts, learn):
    """(ARP frame indices (decoded, sender IP set), and for the IPv4 frames a MAC can be learnt
    from (unicast Ethernet source, host source address): per distinct MAC its address, first and
    last time, lowest and highest source IP, in order of first appearance)."""
    n = status.size
    arp = np.empty(n, np.int64)
    na = 0
    m, bits = 16, 4
    if learn:
        while m < 2 * n:
            m <<= 1
            bits += 1
    shift = np.uint64(64 - bits)
    slot = np.full(m, -1, np.int32)
    mask = np.uint64(m - 1)
    bm = np.empty(n if learn else 0, np.uint64)
    bfirst = np.empty(n if learn else 0, np.float64)
    blast = np.empty(n if learn else 0, np.float64)
    blo = np.empty(n if learn else 0, np.uint32)
    bhi = np.empty(n if learn else 0, np.uint32)
    nu = 0
    for i in range(n):
        if status[i] != _STATUS_OK:
            continue
        if ethertype[i] == _ETH_P_ARP:
            if src4[i] != 0:
                arp[na] = i
                na += 1
            continue
        if not learn or ip_version[i] != 4:
            continue
        mac = eth_src[i]
        if mac == 0 or (mac & _GROUP_BIT) != 0:
            continue
        ip = src4[i]
        first = ip >> np.uint32(24)
        if first == 0 or first == 127 or first >= 224:
            continue
        t = ts[i]
        h = (mac * _MIX) >> shift
        while True:
            j = slot[h]
            if j < 0:
                slot[h] = nu
                bm[nu] = mac
                bfirst[nu] = t
                blast[nu] = t
                blo[nu] = ip
                bhi[nu] = ip
                nu += 1
                break
            if bm[j] == mac:
                if t < bfirst[j]:
                    bfirst[j] = t
                if t > blast[j]:
                    blast[j] = t
                if ip < blo[j]:
                    blo[j] = ip
                if ip > bhi[j]:
                    bhi[j] = ip
                break
            h = (h + np.uint64(1)) & mask
    return arp[:na], bm[:nu], bfirst[:nu], blast[:nu], blo[:nu], bhi[:nu]
