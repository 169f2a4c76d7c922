"""The packets of what alerted: a bounded ring of recent packets, and for every flagged flow
or detector finding its packets (those still in the ring, and the following ones for
``follow_s`` seconds of packet time) written to rotated, size-capped pcap files, as
Suricata's pcap-log does in conditional mode (docs/daemon.md, "Alert pcap").

Three parties, none waiting on another:

- the capture thread hands each batch (its frame bytes, `PacketBatch.raw`, and the few
  columns a key needs) to `AlertPcap.add`: one append to a ring bounded by bytes, the
  oldest batches leave it;
- whoever raises an alert (the capture thread for detector findings, the model worker for
  predictions) registers a trigger, `flag_findings` / `flag_windows`: a key (the flow's
  5-tuple, a host pair, a host, an ARP sender's MAC) and a deadline, appended to a
  bounded list. It gets back the file the alert's packets go to, named in the prediction;
- a writer thread matches the ring against the triggers (numpy over whole batches: a
  bitmap of the trigger keys' low bits rules most frames out, ``searchsorted`` in the
  sorted keys settles the rest) and appends what matches to the current file. A new
  trigger is matched against the whole ring once (the packets before the alert), then
  every later batch against the live triggers. A packet is written at most once. A
  writer that falls behind loses batches from the ring (counted), never stalls capture.

Files: ``alerts-NNNNNN.pcap`` (classic pcap, microsecond timestamps, numbered on across
restarts); a file ends at the first write past ``file_mb`` once the alerts it was named
to have had their earlier packets written (so the file a prediction names holds them;
past twice ``file_mb`` it ends anyway), and beyond ``max_files`` the oldest is deleted. A write that
fails (directory missing or read-only, disk full) drops those packets, counted and
logged; on a full disk the oldest file is deleted first and the write tried again.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from ..capture.batch import ETH_P_ARP, PacketBatch, plain_ids, v6_ids
from ..capture.rawframes import warm_up as warm_up_sources
from ..features.window import KIND_FLOW, KIND_POOL, POOL_PROTO_ARP

log = logging.getLogger("ids_daemon.alertpcap")

_MAGIC_US = 0xA1B2C3D4
_SNAPLEN = 262144
_NAME = re.compile(r"alerts-(\d{6,})\.pcap")
_LOG_EVERY_S = 10.0
_RETRY_S = 1.0  # after a failed write, the next try waits this long (the packets meanwhile are dropped, counted)
_STEP_S = 0.05  # the writer gathers the triggers of this long into one pass over the ring
_LOW = 0xFFFF  # the key bits of the tables' bitmaps

# trigger kinds; a packet's key of each kind is computed the same way as a trigger's
K_FLOW, K_PAIR, K_HOST, K_MAC = 1, 2, 3, 4
_ARP = 0x100  # "protocol" of ARP frames (as the meter's pools: POOL_PROTO_ARP)
_PROTO_OF = {"tcp": (6,), "udp": (17,), "icmp": (1,), "arp": (_ARP,), "ip": (6, 17, 1)}
_M0, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
assert POOL_PROTO_ARP == _ARP


def _mix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def _key(kind: int, a: Any, b: Any, c: Any) -> np.ndarray:
    """One 64-bit key per row; collisions only cost a stray packet in the file."""
    with np.errstate(over="ignore"):
        a, b, c = (np.asarray(x, dtype=np.uint64) for x in (a, b, c))
        return _mix(_mix(_mix((np.uint64(kind) * _M0) ^ a) ^ b) ^ c)


def _flow_keys(sid: np.ndarray, did: np.ndarray, pc: np.ndarray, sport: Any, dport: Any) -> np.ndarray:
    """The 5-tuple key of either direction alike: ports only for TCP and UDP."""
    ported = (pc == 6) | (pc == 17)
    sp = np.where(ported, sport, 0).astype(np.uint64)
    dp = np.where(ported, dport, 0).astype(np.uint64)
    swap = (sid > did) | ((sid == did) & (sp > dp))
    lo, hi = np.where(swap, did, sid), np.where(swap, sid, did)
    plo, phi = np.where(swap, dp, sp), np.where(swap, sp, dp)
    return _key(K_FLOW, lo, hi, (pc.astype(np.uint64) << np.uint64(32)) | (plo << np.uint64(16)) | phi)


def _pair_keys(a: np.ndarray, b: np.ndarray, pc: np.ndarray) -> np.ndarray:
    return _key(K_PAIR, np.minimum(a, b), np.maximum(a, b), pc)


def _proto_class(proto: np.ndarray, arp: np.ndarray) -> np.ndarray:
    """The IP protocol, ICMPv6 counted as ICMP, ARP as 0x100 (findings say "icmp", "arp")."""
    pc = proto.astype(np.uint64)
    pc[pc == 58] = 1
    pc[arp] = _ARP
    return pc


@njit(cache=True, nogil=True)
def _records(raw, raw_off, idx, ts, extra, out):  # pragma: no cover - compiled
    """pcap records (16-byte header, then the frame) of frames ``idx``, into ``out``."""
    pos = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        a = raw_off[i]
        n = raw_off[i + 1] - a
        t = max(ts[i], 0.0)
        sec = np.int64(t)
        usec = np.int64((t - sec) * 1e6 + 0.5)
        if usec >= 1000000:
            sec += 1
            usec -= 1000000
        head = (sec, usec, n, n + extra[i])
        for k in range(4):
            v = np.uint32(head[k])
            for b in range(4):
                out[pos + 4 * k + b] = (v >> np.uint32(8 * b)) & np.uint32(0xFF)
        out[pos + 16:pos + 16 + n] = raw[a:a + n]
        pos += 16 + n
    return pos


@dataclass
class AlertPcapStats:
    """What the alert pcap did (the summary and /metrics print it)."""

    triggers: int = 0  # alerts whose packets were asked for
    triggers_dropped: int = 0  # more alerts at once than max_triggers: not recorded
    follow_dropped: int = 0  # alerts whose later packets were not followed: max_triggers keys live already
    packets: int = 0  # packets written
    bytes: int = 0  # bytes written (record headers included)
    files: int = 0  # files opened
    files_deleted: int = 0  # oldest files deleted (max_files, or a full disk)
    packets_dropped: int = 0  # packets of alerts not written: the write failed
    write_errors: int = 0
    lagged_batches: int = 0  # batches that left the ring before the writer looked at them, alerts live
    disk_full: bool = False
    last_error: str = ""


class _Rec:
    """One batch in the ring: its bytes and the columns a key needs (no copies)."""

    __slots__ = ("seq", "raw", "raw_off", "ts", "extra", "linktype", "cols", "nbytes", "keys", "ids", "written")

    def __init__(self, seq: int, b: PacketBatch):
        self.seq = seq
        self.raw, self.raw_off, self.ts = b.raw, b.raw_off, b.ts
        self.extra = b.wire_len - np.minimum(b.wire_len, b.cap_len)  # bytes the capture cut off
        self.linktype = b.linktype
        self.cols = (b.ethertype, b.ip_version, b.proto, b.src4, b.dst4, b.src6, b.dst6, b.sport, b.dport, b.eth_src)
        self.nbytes = b.raw.nbytes + b.raw_off.nbytes + self.extra.nbytes + sum(c.nbytes for c in self.cols) \
            + b.ts.nbytes + b.linktype.nbytes
        self.keys: dict[int, tuple[tuple[np.ndarray, np.ndarray], ...]] = {}  # (key, its low bits) per kind
        self.ids: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # source, destination, protocol class
        self.written: np.ndarray | None = None

    def packet_keys(self, kind: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Each frame's key of one kind, with its low bits (writer thread; made once, when a
        trigger of that kind first looks at this batch)."""
        got = self.keys.get(kind)
        if got is None:
            et, ipv, proto, s4, d4, s6, d6, sport, dport, mac = self.cols
            arp = et == ETH_P_ARP
            if kind == K_MAC:
                hs: tuple[np.ndarray, ...] = (np.where(arp, _key(K_MAC, mac, 0, 0), np.uint64(0)),)
            else:
                if self.ids is None:
                    is6 = ipv == 6
                    self.ids = (plain_ids(s4, s6, is6), plain_ids(d4, d6, is6), _proto_class(proto, arp))
                sid, did, pc = self.ids
                hs = ((_flow_keys(sid, did, pc, sport, dport),) if kind == K_FLOW else
                      (_pair_keys(sid, did, pc),) if kind == K_PAIR else
                      (_key(K_HOST, sid, 0, pc), _key(K_HOST, did, 0, pc)))
            got = self.keys[kind] = tuple((h, (h & np.uint64(_LOW)).astype(np.uint16)) for h in hs)
        return got


class _Table:
    """Triggers as one sorted key array per kind, with their deadlines, and a bitmap of
    their keys' low bits: most frames match no trigger, and one lookup in 8 KiB tells."""

    def __init__(self, triggers: dict[int, tuple[int, float]]):
        self.kinds: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        by: dict[int, list[tuple[int, float]]] = {}
        for h, (kind, dl) in triggers.items():
            by.setdefault(kind, []).append((h, dl))
        for kind, rows in by.items():
            rows.sort()
            tk = np.array([r[0] for r in rows], dtype=np.uint64)
            bits = np.zeros(_LOW + 1, dtype=bool)
            bits[tk & np.uint64(_LOW)] = True
            self.kinds[kind] = (tk, np.array([r[1] for r in rows], dtype=np.float64), bits)

    def match(self, rec: _Rec) -> np.ndarray:
        """Frames of ``rec`` some trigger wants (its key, at or before its deadline)."""
        hit = np.zeros(len(rec.ts), dtype=bool)
        for kind, (tk, dl, bits) in self.kinds.items():
            for pk, low in rec.packet_keys(kind):
                cand = np.flatnonzero(bits[low])
                if len(cand):
                    sub = pk[cand]
                    i = np.minimum(np.searchsorted(tk, sub), len(tk) - 1)
                    hit[cand[(tk[i] == sub) & (rec.ts[cand] <= dl[i])]] = True
        return hit


def _address_id(text: str | None) -> int | None:
    """The id (`ids_daemon.capture.batch.address_ids`) of an address as text, None if it is not one."""
    if not text:
        return None
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    if a.version == 4:
        return int(a)
    return int(v6_ids(np.frombuffer(a.packed, dtype=np.uint8).reshape(1, 16))[0])


class AlertPcap:
    """The ring, the triggers and the writer thread (made by the builder from ``alert_pcap``)."""

    def __init__(self, cfg: Any, owner: str | None = None):
        self.cfg = cfg
        self.dir = Path(cfg.dir).expanduser().absolute()
        self.ring_bytes = int(cfg.ring_mb * (1 << 20))
        self.file_bytes = int(cfg.file_mb * (1 << 20))
        self.follow_s = float(cfg.follow_s)
        self.owner = owner  # capture.user: started as root, the files are written after the privilege drop
        self.stats = AlertPcapStats()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: deque[_Rec] = deque()
        self._ring_size = 0
        self._seq = 0  # sequence number of the next batch added
        self._newest_ts = 0.0  # packet time of the newest frame added (an alert's "now")
        self._new: list[tuple[int, int, float]] = []  # (kind, key, deadline) registered, not yet seen by the writer
        self._pending = 0  # triggers registered whose earlier packets are not yet written: no rotation
        self._alive = False  # some trigger is live: wake the writer on each batch
        self._no_bytes_logged = False
        # writer thread only
        self._active: dict[int, tuple[int, float]] = {}
        self._table: _Table | None = None
        self._next_seq = 0
        self._fd: int | None = None
        self._size = 0
        self._linktype = -1
        self._file_seq = 0
        self._files: deque[Path] = deque()
        self._retry_at = 0.0
        self._last_log = 0.0
        self._logged_dropped = 0

    # ---- lifetime ----------------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory (before a privilege drop: owned by capture.user), find the files
        of earlier runs, compile the writer and start it. A directory that cannot be made is
        logged; the packets are then dropped and counted, the run goes on."""
        if self._thread is not None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.owner and os.geteuid() == 0:
                import pwd

                pw = pwd.getpwnam(self.owner)
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            found = sorted((int(m.group(1)), p) for p in self.dir.iterdir() if (m := _NAME.fullmatch(p.name)))
        except (OSError, KeyError) as e:
            self._failed(e, 0, f"cannot use the directory {self.dir}")
            found = []
        self._files = deque(p for _, p in found)
        self._file_seq = found[-1][0] + 1 if found else 0
        # compiled now: after a privilege drop numba's cache beside the code may be unwritable
        warm_up_sources()
        _records(np.zeros(1, np.uint8), np.array([0, 1]), np.array([0]), np.zeros(1), np.zeros(1, np.uint32),
                 np.zeros(17, np.uint8))
        self._thread = threading.Thread(target=self._run, name="ids-alert-pcap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what the triggers still want from the ring, then close the file."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._close_file()
        self._log_drops(force=True)

    def current_file(self) -> str:
        """The file being written (or the next one to be): what a new alert names."""
        return str(self.dir / f"alerts-{self._file_seq:06d}.pcap")

    # ---- capture thread ----------------------------------------------------------------------
    def add(self, batch: PacketBatch) -> None:
        """Put a batch (read with its frame bytes) in the ring; the oldest leave it. O(1)."""
        if batch.raw is None or not len(batch):
            if len(batch) and not self._no_bytes_logged:
                self._no_bytes_logged = True
                log.warning("alert pcap: the packet source keeps no frame bytes (made without keep_raw): "
                            "nothing can be written")
            return
        rec = _Rec(self._seq, batch)
        with self._lock:
            self._ring.append(rec)
            self._ring_size += rec.nbytes
            while self._ring_size > self.ring_bytes and len(self._ring) > 1:
                self._ring_size -= self._ring.popleft().nbytes
            self._seq += 1
            self._newest_ts = max(self._newest_ts, float(batch.ts[-1]))
        if self._alive:
            self._wake.set()

    def flag_findings(self, findings: list[Any]) -> list[str | None]:
        """Triggers for detector findings: the attacker and victim (the victim alone for a
        crowd, the MAC of an ARP spoofer), the finding's protocol; the file for each."""
        rows: dict[int, tuple[list, list, list, list, list]] = {K_PAIR: ([], [], [], [], []),
                                                                K_HOST: ([], [], [], [], []),
                                                                K_MAC: ([], [], [], [], [])}
        for j, f in enumerate(findings):  # (a, b, protocol, owner, end) per kind; the keys in one go below
            a, v = _address_id(f.attacker), _address_id(f.victim)
            if f.protocol == "arp" and f.attacker and _MAC.fullmatch(f.attacker):
                for col, x in zip(rows[K_MAC], (int(f.attacker.replace(":", ""), 16), 0, 0, j, f.last_ts)):
                    col.append(x)
            if a is None and v is None:
                continue
            kind = K_PAIR if a is not None and v is not None else K_HOST
            for p in _PROTO_OF.get(f.protocol, ()):
                for col, x in zip(rows[kind], (a if a is not None else v, v if kind == K_PAIR else 0, p, j, f.last_ts)):
                    col.append(x)
        kinds: list[int] = []
        keys: list[int] = []
        dls: list[float] = []
        owner: list[int] = []
        for kind, (a_, b_, p_, o_, t_) in rows.items():
            if o_:
                a_arr, b_arr, p_arr = (np.array(x, dtype=np.uint64) for x in (a_, b_, p_))
                h = _pair_keys(a_arr, b_arr, p_arr) if kind == K_PAIR else _key(kind, a_arr, b_arr, p_arr)
                kinds += [kind] * len(o_)
                keys += h.tolist()
                dls += t_
                owner += o_
        return self._register(kinds, keys, dls, owner, len(findings))

    # ---- model worker thread -----------------------------------------------------------------
    def flag_windows(self, w: Any, flagged: np.ndarray) -> list[str | None] | None:
        """Triggers for the flagged rows of a `WindowBatch`: a flow's 5-tuple, a pool's host
        (one host: /32 or /128 pools; a wider prefix is not recorded); the file for each row
        (None: not flagged or not recorded). None when no row is."""
        is6 = w.ip_version == 6
        flow = flagged & (w.kind == KIND_FLOW)
        pool = flagged & (w.kind == KIND_POOL) & (w.prefix == np.where(is6, 128, 32))
        if not (flow.any() or pool.any()):
            return None
        arp = w.proto == POOL_PROTO_ARP
        pc = _proto_class(np.where(arp, 0, w.proto), arp)
        kinds: list[int] = []
        keys: list[int] = []
        dls: list[float] = []
        f = np.flatnonzero(flow)
        p = np.flatnonzero(pool)
        if len(f):
            h = _flow_keys(plain_ids(w.src[f], w.src6[f], is6[f]), plain_ids(w.dst[f], w.dst6[f], is6[f]), pc[f],
                           w.sport[f], w.dport[f])
            kinds += [K_FLOW] * len(f)
            keys += h.tolist()
            dls += w.last_ts[f].tolist()
        if len(p):
            hid = plain_ids(w.host[p], w.host6[p], is6[p])
            kinds += [K_HOST] * len(p)
            keys += _key(K_HOST, hid, np.zeros(len(p), np.uint64), pc[p]).tolist()
            dls += w.last_ts[p].tolist()
        return self._register(kinds, keys, dls, f.tolist() + p.tolist(), len(w))

    # ---- triggers ----------------------------------------------------------------------------
    def _register(self, kinds: list[int], keys: list[int], deadlines: list[float], owner: list[int],
                  n: int) -> list[str | None]:
        """Queue triggers (deadline: follow_s after the later of their own end and the newest
        packet read); ``owner``: the alert (of ``n``) each is for. Returns, per alert, the
        file its packets start in (None: no trigger queued for it). Never blocks."""
        out: list[str | None] = [None] * n
        if not keys:
            return out
        with self._lock:
            room = max(self.cfg.max_triggers - len(self._new), 0)
            take = min(room, len(keys))
            now = self._newest_ts
            self._new += [(k, h, max(d, now) + self.follow_s)
                          for k, h, d in zip(kinds[:take], keys[:take], deadlines[:take])]
            self._pending += take
            self.stats.triggers += take
            self.stats.triggers_dropped += len(keys) - take
            name = self.current_file()
            self._alive = True
        self._wake.set()
        for j in owner[:take]:
            out[j] = name
        return out

    # ---- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        last = 0.0
        while True:
            self._wake.wait(0.5)
            # each pass matches the whole ring against the triggers that came since the last:
            # alerts in quick succession (one per model micro-batch) share one pass
            self._stop.wait(last + _STEP_S - time.monotonic())
            self._wake.clear()
            last = time.monotonic()
            stopping = self._stop.is_set()
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the alert pcap must never stop the daemon
                log.exception("alert pcap writer failed; its packets are no longer written")
                return
            if stopping:
                return

    def _step(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            if not new and not self._active:
                self._next_seq = self._seq  # nothing wanted: skip what came meanwhile
                return
            recs = list(self._ring)
        if recs and recs[0].seq > self._next_seq and self._active:
            self.stats.lagged_batches += recs[0].seq - self._next_seq
        fresh_from = max(self._next_seq, recs[0].seq) if recs else self._next_seq
        if new:
            wanted: dict[int, tuple[int, float]] = {}
            for kind, h, dl in new:
                if h not in wanted or wanted[h][1] < dl:
                    wanted[h] = (kind, dl)
                if h in self._active:
                    if self._active[h][1] < dl:
                        self._active[h] = (kind, dl)
                elif len(self._active) < self.cfg.max_triggers:
                    self._active[h] = (kind, dl)
                else:  # as many alerts live as max_triggers: this one gets its earlier packets only
                    self.stats.follow_dropped += 1
            earlier = _Table(wanted)
            for rec in recs:
                if rec.seq < fresh_from:
                    self._write_matches(rec, earlier)
            self._table = _Table(self._active)
            with self._lock:
                self._pending -= len(new)
        for rec in recs:
            if rec.seq >= fresh_from:
                if self._table is not None:
                    self._write_matches(rec, self._table)
                self._expire(float(rec.ts[-1]))
        self._next_seq = recs[-1].seq + 1 if recs else self._next_seq
        if not self._active:
            with self._lock:
                self._alive = bool(self._new)

    def _expire(self, ts: float) -> None:
        """Forget the triggers whose deadline packet time has passed."""
        if any(dl < ts for _, dl in self._active.values()):
            self._active = {h: v for h, v in self._active.items() if v[1] >= ts}
            self._table = _Table(self._active) if self._active else None

    def _write_matches(self, rec: _Rec, table: _Table) -> None:
        hit = table.match(rec)
        if rec.written is not None:
            hit &= ~rec.written
        if not hit.any():
            return
        if rec.written is None:
            rec.written = np.zeros(len(rec.ts), dtype=bool)
        rec.written |= hit
        idx = np.flatnonzero(hit)
        lt = np.broadcast_to(rec.linktype, rec.ts.shape)[idx]
        for code in np.unique(lt).tolist():  # one link type per file; pcapng input may mix them
            sel = idx[lt == code] if len(idx) and not (lt == code).all() else idx
            size = int((rec.raw_off[sel + 1] - rec.raw_off[sel]).sum()) + 16 * len(sel)
            out = np.empty(size, dtype=np.uint8)
            _records(rec.raw, rec.raw_off, sel, rec.ts, rec.extra, out)
            self._write(out, int(code), len(sel))

    # ---- files -------------------------------------------------------------------------------
    def _write(self, data: np.ndarray, linktype: int, packets: int) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            self.stats.packets_dropped += packets
            self._log_drops()
            return
        for attempt in (0, 1):
            try:
                self._ready(linktype)
                assert self._fd is not None
                self._write_all(data)
                self.stats.packets += packets
                self.stats.bytes += len(data)
                return
            except OSError as e:
                full = e.errno in (errno.ENOSPC, errno.EDQUOT)
                if full:
                    self.stats.disk_full = True
                if attempt == 0 and full and self._delete_oldest(keep_current=True):
                    continue  # room made: try once more
                self._failed(e, packets, f"cannot write {self.current_file()}")
                self._retry_at = now + _RETRY_S
                return

    def _write_all(self, data: np.ndarray) -> None:
        """Append whole records; a write cut short is undone (a reader must never see half a record)."""
        assert self._fd is not None
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._close_file()  # its tail may be cut: the next write starts a new file
                with self._lock:
                    self._file_seq += 1
            raise
        self._size += done

    def _ready(self, linktype: int) -> None:
        """An open file for this link type, rotated past the size cap."""
        if self._fd is not None:
            with self._lock:
                full = self._size >= self.file_bytes and (self._pending == 0 or self._size >= 2 * self.file_bytes)
                if full or linktype != self._linktype:
                    self._close_file()
                    self._file_seq += 1
        if self._fd is None:
            path = Path(self.current_file())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                head = struct.pack("<IHHiIII", _MAGIC_US, 2, 4, 0, 0, _SNAPLEN, linktype)
                if os.write(fd, head) != len(head):
                    raise OSError(errno.ENOSPC, "short write of the pcap header")
            except OSError:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            self._fd, self._size, self._linktype = fd, len(head), linktype
            self._files.append(path)
            self.stats.files += 1
            while len(self._files) > self.cfg.max_files:
                self._delete_oldest(keep_current=True)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _delete_oldest(self, keep_current: bool) -> bool:
        if len(self._files) <= (1 if keep_current and self._fd is not None else 0):
            return False
        self._files.popleft().unlink(missing_ok=True)
        self.stats.files_deleted += 1
        return True

    # ---- trouble -----------------------------------------------------------------------------
    def _failed(self, e: BaseException, packets: int, what: str) -> None:
        self.stats.write_errors += 1
        self.stats.packets_dropped += packets
        why = f"{what}: {getattr(e, 'strerror', None) or e}"
        first = not self.stats.last_error
        self.stats.last_error = why
        if first:
            log.error("alert pcap: %s; the packets of alerts are dropped (counted) until it can be written", why)
            self._last_log = time.monotonic()
            self._logged_dropped = self.stats.packets_dropped
        else:
            self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        more = self.stats.packets_dropped - self._logged_dropped
        if more and (force or now - self._last_log >= _LOG_EVERY_S):
            log.warning("alert pcap: %d packets of alerts dropped (%d in all, %d write errors; last: %s)", more,
                        self.stats.packets_dropped, self.stats.write_errors, self.stats.last_error)
            self._last_log = now
            self._logged_dropped = self.stats.packets_dropped

    def losses(self) -> list[str]:
        """What was not recorded, one phrase per cause (empty: nothing)."""
        s = self.stats
        lost = []
        if s.packets_dropped:
            lost.append(f"{s.packets_dropped} packets dropped ({s.write_errors} write errors: {s.last_error})")
        if s.triggers_dropped:
            lost.append(f"{s.triggers_dropped} alerts not recorded (more than max_triggers at once)")
        if s.follow_dropped:
            lost.append(f"{s.follow_dropped} alerts recorded without their later packets (max_triggers live)")
        if s.lagged_batches:
            lost.append(f"{s.lagged_batches} batches left the ring before the writer saw them")
        return lost

    def summary(self) -> str:
        """One line for the end of a run."""
        s = self.stats
        text = (f"alert pcap: {s.packets} packets of {s.triggers} alerts in {s.files} files under {self.dir}"
                + (f", {s.files_deleted} oldest deleted" if s.files_deleted else ""))
        lost = self.losses()
        return text + ("; " + "; ".join(lost) if lost else "")
