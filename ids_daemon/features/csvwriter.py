"""CSV output of windows or per-packet rows: the 46 CICIoT2023 columns, then identity columns."""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from ..capture.batch import ip_strings
from .ciciot import COLUMNS, IDENTITY_COLUMNS
from .window import KIND_FLOW, REASON_NAMES, WindowBatch, proto_name


def _csv_field(name: str) -> str:
    return f'"{name}"' if ("," in name or '"' in name) else name


class CsvWindowWriter:
    """Writes `WindowBatch`es as CSV rows (``open`` / ``write_batch`` / ``flush`` / ``close``).

    Floats are written with Python's shortest round-trip repr, so a value read back is
    the value computed.
    """

    def __init__(self, path: str | None, per_packet: bool = False):
        self.path = path
        self.per_packet = per_packet
        self.rows = 0
        self._fh: TextIO | None = None

    def open(self) -> None:
        """Open the file (``None`` or ``-``: stdout) and write the header."""
        if self.path in (None, "-"):
            self._fh = sys.stdout
        else:
            self._fh = open(self.path, "w", newline="")
        self._fh.write(",".join(_csv_field(c) for c in COLUMNS + IDENTITY_COLUMNS) + "\n")

    def write_batch(self, wb: WindowBatch) -> None:
        """Append one batch of rows."""
        n = len(wb)
        if n == 0:
            return
        assert self._fh is not None, "open() first"
        keys = wb.key_strings()
        # per-packet rows name their own packet; a pool window has only its host
        flow = np.full(n, True) if self.per_packet else wb.kind == KIND_FLOW
        if self.per_packet:  # a row names its own packet's addresses
            v6 = wb.ip_version == 6
            src, dst = ip_strings(wb.src, wb.src6, v6), ip_strings(wb.dst, wb.dst6, v6)
        else:
            src, dst = wb.endpoint_strings()
        sport = np.where(flow, wb.sport.astype(str), "")
        dport = np.where(flow, wb.dport.astype(str), "")
        protos = [proto_name(p) for p in wb.proto.tolist()]
        reasons = [REASON_NAMES[r] for r in wb.reason.tolist()]
        feats = wb.features.tolist()
        first = wb.first_ts.tolist()
        last = wb.last_ts.tolist()
        packets = wb.packets.tolist()
        lines = []
        for i in range(n):  # output formatting; the metering path never comes here
            lines.append(",".join(map(repr, feats[i])) + f",{first[i]!r},{last[i]!r},{keys[i]},{protos[i]},"
                         f"{src[i]},{sport[i]},{dst[i]},{dport[i]},{packets[i]},{reasons[i]}\n")
        self._fh.write("".join(lines))
        self.rows += n

    def flush(self) -> None:
        """Push buffered rows to the file."""
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        """Flush and close (stdout stays open)."""
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout:
                self._fh.close()
        self._fh = None
