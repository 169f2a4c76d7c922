"""Hostile capture files: each pcapng defect a reliability campaign found (issue 11, defect 5),
and a short fuzz run of mutated pcap/pcapng files through `features` and `replay`
(bench/fuzz.py runs the same with 2,000+ files)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.errors import CaptureError

from .pcapgen import ethernet, ipv4_udp, write_pcapng

ROOT = Path(__file__).resolve().parents[1]
from .helpers import EXE  # noqa: E402
sys.path.insert(0, str(ROOT / "bench"))

import fuzz  # noqa: E402


def _frames(n: int = 3, t0: float = 1.0) -> list[tuple[float, bytes]]:
    return [(t0 + k, ethernet(ipv4_udp(sport=1000 + k))) for k in range(n)]


def _read(path: Path) -> tuple[int, str]:
    """(packets read, the error that ended the file or '')."""
    n = 0
    src = PcapSource(path)
    try:
        src.open()
        while (b := src.next_batch()) is not None:
            n += len(b)
    except CaptureError as e:
        return n, str(e)
    finally:
        src.close()
    return n, ""


def test_tsresol_beyond_64_bit_ticks_is_a_named_error(tmp_path: Path) -> None:
    # 10**19 units per second overflowed the walker's int64 table (OverflowError)
    p = write_pcapng(tmp_path / "tsresol19.pcapng", _frames(n=1, t0=0.0), tsresol=19)  # tick 0 fits 64 bits
    n, err = _read(p)
    assert n == 0
    assert err.startswith(str(p) + ": ") and "if_tsresol" in err, err


def test_tsresol_at_the_limit_still_reads(tmp_path: Path) -> None:
    p = write_pcapng(tmp_path / "tsresol9.pcapng", _frames(), tsresol=9)
    assert _read(p) == (3, "")


def test_twelve_byte_interface_block_at_the_end(tmp_path: Path) -> None:
    # an IDB with no body: the link type was unpacked from 4 bytes (struct.error)
    p = write_pcapng(tmp_path / "idb12.pcapng", _frames())
    p.write_bytes(p.read_bytes() + struct.pack("<III", 1, 12, 12))
    n, err = _read(p)
    assert n == 3
    assert err.startswith(str(p) + ": ") and "interface block" in err, err


def test_simple_packet_block_of_twelve_bytes(tmp_path: Path) -> None:
    # length 12 has no original-length field: the captured length wrapped to ~0xFFFFFFFF
    p = write_pcapng(tmp_path / "spb12.pcapng", _frames())
    p.write_bytes(p.read_bytes() + struct.pack("<III", 3, 12, 12))
    src = PcapSource(p)
    src.open()
    caps = []
    with pytest.raises(CaptureError, match="corrupt pcapng block"):
        while (b := src.next_batch()) is not None:
            caps.extend(b.cap_len.tolist())
    assert caps == [len(_frames()[0][1])] * 3


def test_interface_option_running_past_the_block(tmp_path: Path) -> None:
    p = write_pcapng(tmp_path / "opt.pcapng", _frames())
    raw = bytearray(p.read_bytes())
    at = raw.index(struct.pack("<HH", 9, 1))  # if_tsresol, length 1 -> length 200
    raw[at + 2:at + 4] = struct.pack("<H", 200)
    p.write_bytes(bytes(raw))
    n, err = _read(p)
    assert err.startswith(str(p) + ": ") and "option 9" in err, err


def test_replay_names_the_file_in_its_one_error_line(tmp_path: Path) -> None:
    p = write_pcapng(tmp_path / "idb12.pcapng", _frames())
    p.write_bytes(p.read_bytes() + struct.pack("<III", 1, 12, 12))
    r = subprocess.run([EXE, "replay", "-r", str(p), "-o", str(tmp_path / "o.jsonl"),
                        "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ids-daemon: error:")]
    assert len(errors) == 1 and str(p) in errors[0], r.stderr


def test_fuzzed_captures_never_crash_or_hang(tmp_path: Path) -> None:
    """200 mutated files through features and replay (in-process, as the CLI runs them):
    no traceback, no hang, every rejected file named in its one error line."""
    res = fuzz.run(n_files=200, seed=11, out_dir=tmp_path, timeout_s=20.0, commands=("features", "replay"))
    assert res.runs == 400
    assert res.tracebacks == [], res.tracebacks[:3]
    assert res.hangs == [], res.hangs
    assert res.unnamed == [], res.unnamed[:3]
    # the mutations do reach the error paths, and most files still give packets
    assert res.rejected >= 20
    assert res.accepted >= 50
