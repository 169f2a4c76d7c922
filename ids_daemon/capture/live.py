"""Live capture: an AF_PACKET socket with a TPACKET_V3 ring → `PacketBatch`es.

The kernel filters (classic BPF) and truncates (the filter's return value is the snap
length) every frame, then writes it into a memory-mapped ring of blocks; a block is
handed to user space when it is full or ``block_timeout_ms`` after its first frame.
One wake-up therefore yields hundreds or thousands of frames, and no frame is copied
or turned into a Python object: a small compiled loop walks the frame headers of the
ready blocks, and `decode_frames` reads the headers straight out of the ring memory.
A block goes back to the kernel only after the batch built from it has been decoded.

Linux only (AF_PACKET, TPACKET_V3: kernel 3.2 or later; PACKET_IGNORE_OUTGOING is
used when the kernel has it, 4.20 or later). Needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import select
import socket
import struct

import numpy as np
from numba import njit

from ..errors import CaptureError
from .base import SourceStats
from .batch import LINKTYPE_ETHERNET, LINKTYPE_RAW, PacketBatch
from .bpf import MAX_SNAPLEN, BpfProgram, attach_filter, compile_filter, snaplen_program
from .decode import decode_frames
from .rawframes import keep_raw

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>, <linux/sockios.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SIOCGIFHWADDR = 0x8927

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4

ARPHRD_ETHER = 1
ARPHRD_RAWIP = 519
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
_ARPHRD_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,  # lo carries (all-zero) Ethernet headers
    ARPHRD_NONE: LINKTYPE_RAW,  # tun devices and WireGuard: frames start at the IP header
    ARPHRD_RAWIP: LINKTYPE_RAW,
}

# Ring geometry. In TPACKET_V3 frames are packed back to back inside a block, so the
# frame size only matters for the kernel's bookkeeping (tp_frame_nr must match).
_BLOCK_SIZE = 1 << 20
_MIN_BLOCKS = 8  # enough that the kernel keeps filling while a batch is being decoded
_FRAME_SIZE = 2048
# Offsets inside the ring (x86-64 and every other Linux ABI: the structs are fixed-size).
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
_BD_STATUS = 8  # block_status
_BD_NUM_PKTS = 12
_BD_FIRST = 16  # offset_to_first_pkt
# struct tpacket3_hdr: next_offset 0, sec 4, nsec 8, snaplen 12, len 16, status 20, mac 24;
# sizeof is 48, so struct sockaddr_ll starts at TPACKET_ALIGN(48) = 48 and its
# sll_pkttype (after family u16, protocol u16, ifindex i32, hatype u16) at 48 + 10.
_PKTTYPE = 58
_STATS = struct.Struct("=III")  # struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt


@njit(cache=True, nogil=True)
def _walk_ring(ring8, ring16, ring32, block_size, block_nr, cursor, max_n, drop_outgoing,
               off, cap, wire, ts, vlan, done):  # pragma: no cover - compiled
    """Collect up to ``max_n`` frames from the user-owned blocks, starting at ``cursor``.

    ``cursor`` = [block, frames already taken from it, offset of its next frame header]
    and is updated in place, so a block larger than the batch is continued next call.
    Fully walked blocks are listed in ``done``; they stay user-owned until the caller
    has decoded the batch and releases them. Returns (frames, blocks done, frames
    skipped as outgoing).
    """
    n = 0
    nd = 0
    skipped = 0
    blk = cursor[0]
    idx = cursor[1]
    pos = cursor[2]
    while n < max_n and nd < block_nr:
        base = blk * block_size
        if (ring32[(base + _BD_STATUS) >> 2] & TP_STATUS_USER) == 0:
            break
        num = ring32[(base + _BD_NUM_PKTS) >> 2]
        if idx == 0:
            pos = base + ring32[(base + _BD_FIRST) >> 2]
        while idx < num and n < max_n:
            w = pos >> 2  # headers are TPACKET_ALIGNMENT (16) aligned
            if drop_outgoing and ring8[pos + _PKTTYPE] == PACKET_OUTGOING:
                skipped += 1
            else:
                off[n] = pos + ring16[(pos + 24) >> 1]
                cap[n] = ring32[w + 3]
                wire[n] = ring32[w + 4]
                ts[n] = np.float64(ring32[w + 1]) + np.float64(ring32[w + 2]) * 1e-9
                vlan[n] = (ring32[w + 5] & TP_STATUS_VLAN_VALID) != 0
                n += 1
            pos += ring32[w]  # tp_next_offset
            idx += 1
        if idx < num:
            break  # batch full in the middle of this block
        done[nd] = blk
        nd += 1
        blk = (blk + 1) % block_nr
        idx = 0
    cursor[0] = blk
    cursor[1] = idx
    cursor[2] = pos
    return n, nd, skipped


def _ring_geometry(ring_mb: int, snaplen: int) -> tuple[int, int]:
    """(block size, block count) for a ring of about ``ring_mb`` MiB."""
    total = max(int(ring_mb), 1) << 20
    block = _BLOCK_SIZE
    # Small rings: smaller blocks, so there are still several to rotate through ...
    while block > (64 << 10) and total // block < _MIN_BLOCKS:
        block //= 2
    # ... but a whole frame (header + snap length) must fit in one block.
    while block < snaplen + 4096:
        block *= 2
    return block, max(total // block, 2)


class LiveSource:
    """Frames from a network interface, read through a TPACKET_V3 ring.

    ``bpf_filter`` is a tcpdump-style expression run in the kernel; ``snaplen`` bytes
    of each frame are kept (headers fit in 256). ``next_batch`` waits at most
    ``block_timeout_ms`` and returns an empty batch when nothing arrived, so callers
    can advance their timers. ``ignore_outgoing`` drops frames the host itself sends;
    None (the default) drops them on loopback only, where every frame would otherwise
    be seen twice (once leaving, once arriving); elsewhere outgoing frames are the
    host's half of its conversations and are kept.
    """

    def __init__(self, interface: str, bpf_filter: str | None = None, snaplen: int = 256, ring_mb: int = 64,
                 block_timeout_ms: int = 100, promiscuous: bool = True, batch_size: int = 65536,
                 ignore_outgoing: bool | None = None, keep_raw: bool = False):
        self.interface = interface
        self.keep_raw = keep_raw  # copy each batch's frame bytes out of the ring (the alert pcap's ring)
        self.name = interface
        self.bpf_filter = bpf_filter.strip() if bpf_filter and bpf_filter.strip() else None
        self.snaplen = max(64, min(int(snaplen), MAX_SNAPLEN))
        self.ring_mb = int(ring_mb)
        self.block_timeout_ms = max(1, int(block_timeout_ms))
        self.promiscuous = bool(promiscuous)
        self.batch_size = max(1, int(batch_size))
        self.ignore_outgoing = ignore_outgoing
        self.stats = SourceStats()
        self.linktype = 0
        self.ifindex = 0
        self.program: BpfProgram | None = None
        self.outgoing_skipped = 0  # frames dropped in user space as PACKET_OUTGOING
        self.kernel_ignores_outgoing = False  # PACKET_IGNORE_OUTGOING accepted by the kernel
        self._drop_outgoing = False
        self._sock: socket.socket | None = None
        self._mm: mmap.mmap | None = None
        self._ring8: np.ndarray | None = None
        self._ring16: np.ndarray | None = None
        self._ring32: np.ndarray | None = None
        self._poll: select.poll | None = None
        self._block_size = 0
        self._block_nr = 0
        self._cursor = np.zeros(3, dtype=np.int64)
        self._scratch: tuple[np.ndarray, ...] = ()
        self._closed = False
        self._frames = 0

    # ---- interface -------------------------------------------------------------------------
    def open(self) -> None:
        """Create the socket, filter and ring, then start capturing.

        Raises `CaptureError` (one line) for an unknown interface, missing privileges,
        an unsupported link type, an invalid filter or a ring the kernel cannot allocate.
        """
        if self._sock is not None:
            return
        iface = self.interface
        try:
            self.ifindex = socket.if_nametoindex(iface)
        except (OSError, ValueError):
            raise CaptureError(f"{iface}: no such network interface") from None
        try:
            # Protocol 0: the socket receives nothing until bind() names ETH_P_ALL, so no
            # frame can slip in before the filter and the ring are in place.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureError(
                f"{iface}: permission denied opening a packet socket "
                "(live capture needs root or the CAP_NET_RAW capability)") from None
        except OSError as e:
            raise CaptureError(f"{iface}: cannot open a packet socket: {e.strerror}") from None
        try:
            self._setup(sock)
        except BaseException:
            self._sock = sock
            self._teardown()
            raise
        self._closed = False

    def _setup(self, sock: socket.socket) -> None:
        iface = self.interface
        try:
            ifr = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", iface.encode()))
        except OSError as e:
            raise CaptureError(f"{iface}: cannot read the link type: {e.strerror}") from None
        hatype = struct.unpack_from("=H", ifr, 16)[0]
        if hatype not in _ARPHRD_LINKTYPE:
            raise CaptureError(f"{iface}: unsupported link (ARPHRD type {hatype}); "
                               "supported: Ethernet, loopback, raw IP (tun)")
        self.linktype = _ARPHRD_LINKTYPE[hatype]
        loopback = hatype == ARPHRD_LOOPBACK

        if self.bpf_filter:
            self.program = compile_filter(self.bpf_filter, self.linktype, self.snaplen)
        else:
            self.program = snaplen_program(self.snaplen)
        attach_filter(sock, self.program)

        self._drop_outgoing = loopback if self.ignore_outgoing is None else bool(self.ignore_outgoing)
        if self._drop_outgoing:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                self.kernel_ignores_outgoing = True
            except OSError:
                # Kernels before 4.20: the walker still drops PACKET_OUTGOING frames.
                self.kernel_ignores_outgoing = False

        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        except OSError as e:
            raise CaptureError(f"{iface}: the kernel has no TPACKET_V3 capture ring: {e.strerror}") from None
        block, nr = _ring_geometry(self.ring_mb, self.snaplen)
        req = struct.pack("=7I", block, nr, _FRAME_SIZE, (block // _FRAME_SIZE) * nr,
                          self.block_timeout_ms, 0, 0)  # retire_blk_tov, sizeof_priv, feature_req_word
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as e:
            raise CaptureError(f"{iface}: cannot allocate a {block * nr >> 20} MiB capture ring "
                               f"({e.strerror}); lower capture.ring_mb") from None
        self._sock = sock
        self._block_size, self._block_nr = block, nr
        self._mm = mmap.mmap(sock.fileno(), block * nr, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._ring8 = np.frombuffer(self._mm, dtype=np.uint8)
        self._ring16 = self._ring8.view(np.uint16)
        self._ring32 = self._ring8.view(np.uint32)
        self._cursor[:] = 0
        # Reused by every batch: decode_frames copies what it needs out of them.
        n = self.batch_size
        self._scratch = (np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.uint32),
                         np.empty(n, np.float64), np.empty(n, np.bool_), np.empty(nr, np.int64))

        try:
            sock.bind((iface, ETH_P_ALL))
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise CaptureError(f"{iface}: no such network interface") from None
            raise CaptureError(f"{iface}: cannot bind the packet socket: {e.strerror}") from None
        if self.promiscuous and not loopback:
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            try:
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            except OSError as e:
                raise CaptureError(f"{iface}: cannot enable promiscuous mode: {e.strerror}") from None
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self.read_kernel_stats()  # start the kernel's counters from zero

    def next_batch(self) -> PacketBatch | None:
        """Frames that arrived since the last call (up to ``batch_size``).

        Waits at most ``block_timeout_ms`` for a block; returns an empty batch when
        none came, and None only once the source is closed.
        """
        if self._sock is None:
            if self._closed:
                return None
            raise CaptureError(f"{self.name}: source not opened")
        polled = False
        while True:
            batch = self._collect()
            if batch is not None:
                self.read_kernel_stats()
                return batch
            if polled:
                self.read_kernel_stats()
                return PacketBatch.empty(source=self.name, first_index=self._frames)
            self._wait()
            polled = True

    def close(self) -> None:
        """Stop capturing: unmap the ring and close the socket (safe to call twice)."""
        if self._sock is not None:
            try:
                self.read_kernel_stats()
            except OSError:
                pass
        self._teardown()
        self._closed = True

    def fileno(self) -> int:
        """The socket's descriptor (readable when a block is ready), for event loops."""
        if self._sock is None:
            raise CaptureError(f"{self.name}: source not opened")
        return self._sock.fileno()

    def read_kernel_stats(self) -> SourceStats:
        """Add the kernel's counters (which reading resets) to ``stats`` and return it.

        ``kernel_packets`` counts every frame that passed the filter, dropped ones too.
        """
        if self._sock is not None:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
            packets, drops, freeze = _STATS.unpack(raw[:_STATS.size])
            self.stats.kernel_packets += packets
            self.stats.kernel_drops += drops
            self.stats.kernel_freeze += freeze
        return self.stats

    def __enter__(self) -> "LiveSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten source must not keep a ring pinned
        try:
            self._teardown()
        except Exception:
            pass

    # ---- ring ------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compile the ring walker and the decoder for this ring's array types now, before
        a privilege drop: numba compiles on first call and caches beside the code, which
        the dropped user may not write (a fresh checkout owned by root: the first packet
        would fail). Walks nothing (no block is the user's yet) and decodes one throwaway
        frame from the ring's first bytes."""
        assert self._ring8 is not None and self._ring16 is not None and self._ring32 is not None
        off, cap, wire, ts, vlan, done = self._scratch
        cursor = self._cursor.copy()
        _walk_ring(self._ring8, self._ring16, self._ring32, self._block_size, self._block_nr, cursor, 0,
                   self._drop_outgoing, off, cap, wire, ts, vlan, done)
        o, c, w, t = off[:1].copy(), cap[:1].copy(), wire[:1].copy(), ts[:1].copy()
        o[0], c[0], w[0], t[0] = 0, 64, 64, 0.0
        b = decode_frames(self._ring8, o, c, w, t, self.linktype, first_index=0, source=self.name)
        if self.keep_raw:
            keep_raw(b, self._ring8, o, c)

    def _collect(self) -> PacketBatch | None:
        """Decode the frames of the ready blocks, or None when no block is ready."""
        assert self._ring8 is not None and self._ring16 is not None and self._ring32 is not None
        n_max = self.batch_size
        off, cap, wire, ts, vlan, done = self._scratch
        while True:
            n, nd, skipped = _walk_ring(self._ring8, self._ring16, self._ring32, self._block_size, self._block_nr,
                                        self._cursor, n_max, self._drop_outgoing, off, cap, wire, ts, vlan, done)
            self.outgoing_skipped += skipped
            if n == 0:
                self._release(done[:nd])
                if nd:
                    continue  # the blocks held only outgoing frames: look at the next ones
                return None
            # decode_frames copies every field out of the ring: only after it returns may
            # the blocks go back to the kernel, which overwrites them at once.
            batch = decode_frames(self._ring8, off[:n], cap[:n], wire[:n], ts[:n], self.linktype,
                                  first_index=self._frames, source=self.name)
            if self.keep_raw:
                keep_raw(batch, self._ring8, off[:n], cap[:n])
            self._release(done[:nd])
            self._restore_vlan(batch, vlan[:n])
            self._frames += n
            self.stats.frames += n
            self.stats.bytes += int(batch.cap_len.sum())
            return batch

    def _release(self, blocks: np.ndarray) -> None:
        """Hand blocks back to the kernel (block_status = TP_STATUS_KERNEL)."""
        if blocks.shape[0]:
            assert self._ring32 is not None
            self._ring32[(blocks * self._block_size + _BD_STATUS) >> 2] = TP_STATUS_KERNEL

    @staticmethod
    def _restore_vlan(batch: PacketBatch, vlan: np.ndarray) -> None:
        """Count the 802.1Q tag that the NIC or driver stripped (offload) as if it were
        in the frame, as libpcap re-inserts it: the ring holds the frame without it."""
        if not vlan.any():
            return
        batch.vlan_count[vlan] += 1
        batch.cap_len[vlan] += 4
        batch.wire_len[vlan] += 4
        batch.frame_len[vlan & (batch.frame_len > 0)] += 4

    def _wait(self) -> None:
        """Sleep until a block is ready or the block timeout passes."""
        assert self._poll is not None and self._sock is not None
        try:
            events = self._poll.poll(self.block_timeout_ms)
        except InterruptedError:
            return
        if any(ev & select.POLLERR for _, ev in events):
            # The socket error must be read, or every later poll returns at once.
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.ENETDOWN:
                try:
                    same = socket.if_nametoindex(self.interface) == self.ifindex
                except OSError:
                    same = False
                if not same:
                    raise CaptureError(f"{self.interface}: the interface was removed")
                # Only down: the kernel resumes delivery when it comes back up.
            elif err:
                raise CaptureError(f"{self.interface}: capture socket error: {errno.errorcode.get(err, err)}")

    def _teardown(self) -> None:
        # The numpy views must go before the mapping: mmap.close() refuses while
        # buffers exported from it are alive.
        self._ring8 = self._ring16 = self._ring32 = None
        self._poll = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # a view escaped; the mapping is freed with it
            self._mm = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
