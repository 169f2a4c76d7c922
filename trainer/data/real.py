"""Labelled real captures (a ``MANIFEST.tsv``): per-packet labels, windows by their packets.

A manifest row names a capture, the repository it came from, its label and an
``attack_filter``: a tcpdump expression that selects the capture's attack packets
(empty: every packet is the attack; a benign capture has none). Labels are given per
packet by running that filter with libpcap's own interpreter, then the capture goes
through the daemon's meter with per-packet rows, so each metered packet is tied to the
window it was averaged into. A window is the attack when at least half of its packets
are; the figures of the by-source evaluation count packets, not windows, so a window
that mixes both kinds weighs by what it holds.

Matching windows by attacker address would mislabel pool windows, which are keyed by
the victim; labelling packets first avoids that.

With ``claim``, the frames a protocol-fact detector flagged are not metered (as the
daemon does for a model whose metadata says ``detector_claims``): their rows keep
their labels and detector verdicts, with window -1.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ids_daemon.capture.batch import PacketBatch
from ids_daemon.capture.bpf import BpfProgram, compile_filter, match_frames
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import MeterConfig
from ids_daemon.errors import IdsError
from ids_daemon.features.meter import Meter
from ids_daemon.features.window import WindowBatch
from ids_daemon.model.classes import BENIGN, canonical_class

# A detector hook: per-frame verdicts of a batch (-1: nothing, else a class index into
# the names it was built with). The evaluation passes `ids_daemon.detectors` here.
FrameDetector = Callable[[PacketBatch], np.ndarray]


# Filters of the shipped manifest that do not select what its evidence describes, with
# the correction and why. Keyed by file name.
FILTER_CORRECTIONS: dict[str, tuple[str, str]] = {
    "SniperDZ-Pro_Cyber-Forensics-Workshop__arp_spoofing.pcap": (
        "arp and arp[8:4] = 0xb4b686fb and arp[12:2] = 0xdb07",
        "the spoofed replies carry the foreign MAC as ARP sender hardware address; their "
        "Ethernet source is 00:00:00:00:00:00, so 'ether src' selects none of them"),
    "shrutikulkar_ADF-Project__dns_spoofing.pcap": (
        "arp or host 192.168.20.9 or (ether src 08:00:27:96:18:a9 and udp src port 53)",
        "the attacker (MAC 08:00:27:96:18:a9, as the evidence says) forges the DNS server's address "
        "on its spoofed answers, so 'host 192.168.20.9' misses them; the victims' traffic it relays "
        "stays benign, as the corpus labels a man in the middle's victims"),
    # The two loopback floods: the manifest's empty filter labels every packet attack, but the
    # evidence counts ~4,185 flood datagrams of 4,715 packets; the rest is the machine's own
    # loopback chatter (127.0.0.1 to 127.0.0.1, local services polling each other), which
    # runs for two minutes before the SYN flood starts. The flood is what the scripts send
    # (spoofed sources to 127.0.0.1, port 80 or 53) and the stack's answers to those sources.
    "thekrishnanand_Assignment1_NetworkSecurity_Ddos_Simulation__syn_flood.pcapng": (
        "(tcp dst port 80 and not src host 127.0.0.1) or (src host 127.0.0.1 and not dst host 127.0.0.1)",
        "attack1_syn.py sends spoofed sources to 127.0.0.1:80; 127.0.0.1's talk to itself is not the attack"),
    "thekrishnanand_Assignment1_NetworkSecurity_Ddos_Simulation__udp_flood.pcapng": (
        "(udp dst port 53 and not src host 127.0.0.1) or (src host 127.0.0.1 and not dst host 127.0.0.1)",
        "attack2_udp.py sends spoofed sources to 127.0.0.1:53 (~4,185 datagrams, as the evidence counts); "
        "127.0.0.1's talk to itself is not the attack"),
}


class ManifestError(IdsError):
    """A manifest row that cannot be used (one line, naming the row)."""


@dataclass(frozen=True)
class CaptureEntry:
    """One row of a real-capture manifest."""

    path: Path
    repo: str
    label: str  # 34-class name (BenignTraffic for benign captures)
    attack_filter: str  # tcpdump expression selecting the attack packets; "" = all of them

    @property
    def benign(self) -> bool:
        return self.label == BENIGN

    @property
    def name(self) -> str:
        return self.path.name


def read_tsv_manifest(path: str | Path, lockbox: str = "include") -> list[CaptureEntry]:
    """Rows of ``MANIFEST.tsv`` (columns file, repo, label, attack_filter, ...), paths resolved;
    ``lockbox`` (include, exclude, only) keeps or drops the lockbox's repositories
    (`trainer.data.lockbox`)."""
    from .lockbox import keep

    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e.strerror}") from None
    out = []
    for k, r in enumerate(rows, start=2):
        if not r.get("file") or not r.get("repo") or not r.get("label"):
            raise ManifestError(f"{path}: line {k}: needs file, repo and label")
        label = canonical_class(r["label"])
        if label is None:
            raise ManifestError(f"{path}: line {k}: {r['label']!r} is not a CICIoT2023 class")
        p = (path.parent / r["file"]).resolve()
        if not p.is_file():
            raise ManifestError(f"{path}: line {k}: {r['file']} does not exist")
        flt = (r.get("attack_filter") or "").strip()
        flt = FILTER_CORRECTIONS.get(p.name, (flt, ""))[0]
        if keep(r["repo"], lockbox):
            out.append(CaptureEntry(path=p, repo=r["repo"], label=label, attack_filter=flt))
    if not out:
        raise ManifestError(f"{path}: no captures listed")
    return out


@dataclass
class LabelledCapture:
    """A capture through the meter: its windows and, per metered packet, its window and label."""

    entry: CaptureEntry
    windows: WindowBatch
    window_attack: np.ndarray  # (k,) attack packets in each window
    row_window: np.ndarray  # (m,) window index of each metered packet, capture order (-1: claimed by a detector)
    row_attack: np.ndarray  # (m,) bool
    row_detector: np.ndarray  # (m,) int16: the detector class that flagged the packet, -1 none
    frames: int

    @property
    def window_labels(self) -> np.ndarray:
        """The capture's class for windows that are mostly attack packets, else benign."""
        attack = self.window_attack * 2 >= np.maximum(self.windows.packets, 1)
        attack &= self.window_attack > 0
        return np.where(attack, self.entry.label, BENIGN).astype(object)


def frame_labeller(entry: CaptureEntry) -> Callable[..., np.ndarray]:
    """A `PcapSource.frame_hook`-shaped function giving each raw frame's label (True: the
    attack) by the entry's ``attack_filter``, run by libpcap's own interpreter."""
    programs: dict[int, BpfProgram] = {}

    def label(buf: np.ndarray, off: np.ndarray, cap: np.ndarray, wire: np.ndarray, linktype: object) -> np.ndarray:
        if entry.benign or not entry.attack_filter:
            return np.full(len(off), not entry.benign, dtype=bool)
        lts = np.broadcast_to(np.asarray(linktype), off.shape)
        out = np.zeros(len(off), dtype=bool)
        for lt in np.unique(lts).tolist():
            prog = programs.get(lt)
            if prog is None:
                prog = programs[lt] = compile_filter(entry.attack_filter, linktype=lt)
            m = lts == lt
            out[m] = match_frames(prog, buf, off[m], cap[m], wire[m])
        return out
    return label


def meter_labelled(entry: CaptureEntry, meter_cfg: MeterConfig, detector: FrameDetector | None = None,
                   batch_size: int = 65536, claim: bool = False) -> LabelledCapture:
    """Meter one capture with per-packet labels (and detector verdicts when given); with
    ``claim``, frames a detector flagged stay out of the windows."""
    meter = Meter(meter_cfg.model_copy(update={"prealloc": False}), per_packet=True)
    labels: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    label_frames = frame_labeller(entry)

    def on_frames(buf: np.ndarray, off: np.ndarray, cap: np.ndarray, wire: np.ndarray, linktype: object) -> None:
        pending.append(label_frames(buf, off, cap, wire, linktype))

    row_keys: list[np.ndarray] = []
    wparts: list[WindowBatch] = []
    frames = 0
    det_rows: list[np.ndarray] = []
    src = PcapSource(entry.path, batch_size=batch_size)
    src.frame_hook = on_frames
    with src:
        while (b := src.next_batch()) is not None:
            if not len(b):
                continue
            frame_attack = pending.pop(0) if pending else np.zeros(len(b), dtype=bool)
            frames += len(b)
            sel = meter.metered_mask(b)  # the frames that get a row (IPv4, IPv6, ARP)
            labels.append(frame_attack[sel])
            if detector is not None:
                det = np.asarray(detector(b), dtype=np.int16)
                det_rows.append(det[sel])
                if claim and (det >= 0).any():
                    b = b.take(det < 0)
            out = meter.process(b)
            wparts.append(out.windows)
            assert out.rows is not None
            row_keys.append(out.rows.key)
    wparts.append(meter.flush().windows)
    wb = WindowBatch.concat(wparts)
    rk = np.concatenate(row_keys) if row_keys else np.zeros(0, np.uint64)
    row_attack = np.concatenate(labels) if labels else np.zeros(0, bool)
    row_det = np.concatenate(det_rows) if det_rows else np.full(len(row_attack), -1, np.int16)
    in_window = row_det < 0 if claim else np.ones(len(row_attack), dtype=bool)
    if int(in_window.sum()) != len(rk) or int(wb.packets.sum()) != len(rk):
        raise ManifestError(f"{entry.path.name}: {len(rk)} metered rows, {int(in_window.sum())} labels and "
                            f"{int(wb.packets.sum())} packets in windows do not agree")
    row_window = np.full(len(row_attack), -1, np.int64)
    row_window[in_window] = _rows_to_windows(rk, wb.key, wb.packets)
    window_attack = np.bincount(row_window[in_window], weights=row_attack[in_window],
                                minlength=len(wb)).astype(np.int64)
    return LabelledCapture(entry=entry, windows=wb, window_attack=window_attack, row_window=row_window,
                           row_attack=row_attack, row_detector=row_det, frames=frames)


def _rows_to_windows(row_key: np.ndarray, win_key: np.ndarray, win_packets: np.ndarray) -> np.ndarray:
    """Window index of each per-packet row.

    A key's windows leave the meter in order and each takes the key's next
    ``packets`` rows (no row is lost, partial windows included), so after sorting
    rows and windows by key (stably) the cumulative packet counts are the boundaries.
    """
    ro = np.argsort(row_key, kind="stable")
    wo = np.argsort(win_key, kind="stable")
    ends = np.cumsum(win_packets[wo].astype(np.int64))
    pos = np.searchsorted(ends, np.arange(len(ro)), side="right")
    out = np.empty(len(ro), dtype=np.int64)
    out[ro] = wo[pos]
    if len(ro) and not np.array_equal(win_key[out], row_key):
        raise ManifestError("per-packet rows do not match the windows' keys")
    return out
