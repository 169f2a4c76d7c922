"""bench/live.py: tcpreplay from a network namespace into `ids-daemon run` on a veth pair.

One low rate for a few seconds on a small generated capture: the table's row is checked
for its columns and for figures that must hold at any speed (frames went through,
the loss is what the other columns say); no timing is asserted. It needs root (a
namespace, a veth pair, a packet socket) and tcpreplay, which scripts/setup.sh --test
installs. About 15 s once the daemon's numba kernels are compiled (a fresh checkout's
first daemon compiles them first: about 2 minutes on the 2-core machine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIVE = ROOT / "bench" / "live.py"
COLUMNS = ["offered", "achieved", "sent", "received", "processed", "kernel drops", "queue drops", "coalesced",
           "findings dropped", "predictions", "lost %", "CPU %", "run-queue wait %", "load"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="network namespaces and AF_PACKET are Linux only")


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


def _namespaces() -> set[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in r.stdout.splitlines() if line.startswith("idsB")}


def _tcpreplay() -> None:
    """Present, or the test fails where it could be installed and skips where it cannot."""
    if shutil.which("tcpreplay"):
        return
    if shutil.which("apt-get"):
        pytest.fail("tcpreplay is not installed: scripts/setup.sh --test installs it (apt-get install tcpreplay)",
                    pytrace=False)
    pytest.skip("tcpreplay is not installed, and cannot be here (no apt-get)")


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


@pytest.mark.root
def test_one_low_rate_row(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("bench/live.py needs root (a network namespace, a veth pair, a packet socket)")
    _tcpreplay()
    sys.path.insert(0, str(ROOT / "bench"))
    import gen

    capture = gen.write_benign_pcap(tmp_path / "small.pcap", 2000, seed=3)
    before = _namespaces()
    r = subprocess.run([sys.executable, str(LIVE), "--rates", "2000", "--seconds", "3", "--capture", str(capture)],
                       capture_output=True, text=True, timeout=420, env=_env())
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("offered"))
    assert lines[at - 1] == f"small ({capture})"
    header = re.split(r"\s{2,}", lines[at].strip())
    assert header == COLUMNS
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[at + 1:] if line.strip()]
    assert len(rows) == 1 and len(rows[0]) == len(COLUMNS), rows
    row = dict(zip(COLUMNS, rows[0]))
    assert row["offered"] == "2,000"
    assert _number(row["achieved"]) > 0
    sent, processed = _number(row["sent"]), _number(row["processed"])
    assert sent > 0 and _number(row["received"]) > 0 and processed > 0
    assert _number(row["received"]) >= processed  # the kernel's count holds the frames it dropped too
    for col in ("kernel drops", "queue drops", "coalesced", "findings dropped", "predictions"):
        assert _number(row[col]) >= 0 and float(_number(row[col])).is_integer()
    assert _number(row["lost %"]) == pytest.approx(100 * (sent - processed) / sent, abs=0.006)
    assert _number(row["CPU %"]) > 0
    assert row["run-queue wait %"] == "-" or _number(row["run-queue wait %"]) >= 0  # "-": no schedstat
    assert _namespaces() <= before  # its namespace was removed


def test_missing_tool_is_one_line(tmp_path: Path) -> None:
    """Without root, or (as root) without tcpreplay on the PATH: exit 2 and one line saying so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ip = shutil.which("ip")
    if ip:
        (bin_dir / "ip").symlink_to(ip)  # iproute2 present, tcpreplay not
    r = subprocess.run([sys.executable, str(LIVE), "--rates", "2000", "--seconds", "1"], capture_output=True,
                       text=True, timeout=60, env=_env(PATH=str(bin_dir)))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    if os.geteuid() != 0:
        assert r.stderr.startswith("bench/live.py: error: needs root"), r.stderr
    elif ip:
        assert r.stderr.startswith("bench/live.py: error: tcpreplay is not installed"), r.stderr
    else:
        assert r.stderr.startswith("bench/live.py: error: iproute2's ip is not installed"), r.stderr
