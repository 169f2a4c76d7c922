"""What tcpdump, Suricata and Zeek users expect (issue 9, build item 2): a capture filter on
files too and given positionally, ``run --count/--duration``, compressed captures, and
``--version``. Real processes, real files, real loopback traffic."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zstandard
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, wrpcap

from ids_daemon import __version__
from ids_daemon.capture.pcap import PcapSource
from ids_daemon.errors import CaptureError

from .pcapgen import write_pcapng

from .helpers import EXE, TRAINER
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def _mixed(path: Path) -> Path:
    """40 UDP/53, 30 TCP/80 and 20 IPv6 TCP/443 frames, interleaved."""
    pkts = []
    for i in range(40):
        pkts.append(Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000 + i, dport=53) / Raw(b"q" * 20))
        if i < 30:
            pkts.append(Ether(**MAC) / IP(src="10.0.0.3", dst="10.0.0.4") / TCP(sport=50000 + i, dport=80, flags="S"))
        if i < 20:
            pkts.append(Ether(**MAC) / IPv6(src="2001:db8::3", dst="2001:db8::4") / TCP(sport=50000 + i, dport=443))
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    wrpcap(str(path), pkts)
    return path


def _features(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "features", *args], capture_output=True, text=True, timeout=timeout)


def _rows(csv_text: str) -> list[str]:
    return csv_text.splitlines()[1:]


def test_filter_applies_to_files_and_may_be_positional(tmp_path: Path) -> None:
    path = _mixed(tmp_path / "m.pcap")
    base = ["-r", str(path), "--per-packet"]
    r = _features(*base, "--filter", "tcp port 80")
    assert r.returncode == 0, r.stderr
    rows = _rows(r.stdout)
    assert len(rows) == 30 and all(",80," in row for row in rows)
    assert "30 frames: 30 metered" in r.stderr and "(60 more did not match the filter)" in r.stderr
    # as tcpdump takes it: the words after the options
    r2 = _features(*base, "tcp", "port", "80")
    assert r2.returncode == 0 and _rows(r2.stdout) == rows
    r3 = _features(*base, "ip6")
    assert len(_rows(r3.stdout)) == 20 and "(20 IPv6)" in r3.stderr
    # both ways at once, or an invalid expression: one line, nothing read
    r4 = _features(*base, "--filter", "udp", "tcp")
    assert r4.returncode == 1 and r4.stderr.count("ids-daemon: error:") == 1 and "two capture filters" in r4.stderr
    r5 = _features(*base, "port", "eighty")
    assert r5.returncode == 1 and "invalid capture filter 'port eighty'" in r5.stderr and "Traceback" not in r5.stderr


def test_filter_counts_what_it_dropped_and_works_per_pcapng_interface(tmp_path: Path) -> None:
    from .pcapgen import ethernet, ipv4_udp

    # interface 0 is Ethernet, interface 1 raw IP: the filter is compiled for each
    frames = [(1.0 + k, ethernet(ipv4_udp(dport=53)) if k % 2 == 0 else ipv4_udp(dport=123)) for k in range(10)]
    p = write_pcapng(tmp_path / "two.pcapng", frames, linktypes=(1, 101), iface_of=[k % 2 for k in range(10)])
    src = PcapSource(p, bpf_filter="udp port 123")
    src.open()
    b = src.next_batch()
    assert src.next_batch() is None
    assert b.dport.tolist() == [123] * 5 and src.stats.filtered == 5 and src.stats.frames == 5
    with pytest.raises(CaptureError, match="invalid capture filter"):
        PcapSource(p, bpf_filter="nonsense here").open()


def test_replay_takes_a_filter(tmp_path: Path) -> None:
    path = _mixed(tmp_path / "m.pcap")
    cfg = tmp_path / "c.yml"
    cfg.write_text("metrics:\n  listen: null\ndetectors:\n  enabled: false\n")
    out = tmp_path / "p.jsonl"
    r = subprocess.run([EXE, "replay", "-r", str(path), "-o", str(out), "--device", "cpu", "-c", str(cfg), "ip6"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("20 frames (70 more did not match the filter), 20 metered (20 IPv6)") == 1, r.stderr
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert preds and all(":" in p["flow"]["dst_ip"] for p in preds)


def _zstd(data: bytes) -> bytes:
    """zstd in 1 KiB blocks, as a streaming writer (``tcpdump -w - | zstd``) flushes them."""
    c = zstandard.ZstdCompressor().compressobj()
    parts = [c.compress(data[i:i + 1024]) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
             for i in range(0, len(data), 1024)]
    return b"".join(parts) + c.flush()


def test_compressed_stream_broken_before_the_header(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap.gz"
    p.write_bytes(gzip.compress(b"\xd4\xc3\xb2\xa1" + bytes(60))[:12])
    r = _features("-r", str(p))
    assert r.returncode == 1 and r.stderr.count("ids-daemon: error:") == 1
    assert f"{p}: corrupt gzip stream" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_zstd_data_is_one_named_error(tmp_path: Path) -> None:
    # zstandard raises its own ZstdError (not an OSError): it ended in a traceback
    data = bytearray(_zstd(_mixed(tmp_path / "m.pcap").read_bytes()))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xA5
    p = tmp_path / "bad.pcap.zst"
    p.write_bytes(bytes(data))
    r = _features("-r", str(p), "--per-packet")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("ids-daemon: error:")]
    assert len(errors) == 1 and str(p) in errors[0], r.stderr


@pytest.mark.parametrize("suffix", [".pcap.gz", ".pcapng.gz", ".pcap.zst", ".pcapng.zst"])
def test_compressed_captures_read_as_plain_ones(tmp_path: Path, suffix: str) -> None:
    plain = _mixed(tmp_path / "m.pcap")
    if ".pcapng" in suffix:
        from .pcapgen import ethernet, ipv4_udp

        plain = write_pcapng(tmp_path / "m.pcapng", [(1.0 + k, ethernet(ipv4_udp(sport=k + 1))) for k in range(50)])
    data = plain.read_bytes()
    packed = gzip.compress(data) if suffix.endswith(".gz") else _zstd(data)
    comp = tmp_path / ("c" + suffix)
    comp.write_bytes(packed)
    a = _features("-r", str(plain), "--per-packet")
    b = _features("-r", str(comp), "--per-packet")
    assert b.returncode == 0, b.stderr
    assert b.stdout == a.stdout and len(_rows(b.stdout)) >= 50
    # from stdin as well
    c = subprocess.run([EXE, "features", "-r", "-", "--per-packet"], input=packed, capture_output=True, timeout=120)
    assert c.returncode == 0 and c.stdout.decode() == a.stdout
    # a cut compressed file: the packets before the cut, then one line naming the file
    cut = tmp_path / ("cut" + suffix)
    cut.write_bytes(packed[: len(packed) // 2])
    d = _features("-r", str(cut), "--per-packet")
    assert d.returncode == 1 and "Traceback" not in d.stderr
    errors = [ln for ln in d.stderr.splitlines() if ln.startswith("ids-daemon: error:")]
    assert len(errors) == 1 and str(cut) in errors[0], d.stderr
    assert 0 < len(_rows(d.stdout)) < len(_rows(a.stdout))


def test_version_on_both_commands() -> None:
    for exe, name in ((EXE, "ids-daemon"), (TRAINER, "ids-trainer")):
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == f"{name} {__version__}", r


def _need_raw_socket() -> None:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (PermissionError, AttributeError):
        pytest.skip("live capture needs root or CAP_NET_RAW")


def _send_udp(port: int, other: int, stop: threading.Event) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while not stop.is_set():
        s.sendto(b"x" * 32, ("127.0.0.1", port))
        s.sendto(b"y" * 32, ("127.0.0.1", other))
        time.sleep(0.002)
    s.close()


def _run_live(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    cfg = tmp_path / "c.yml"
    cfg.write_text("metrics:\n  listen: null\n")
    port, other = 39000 + os.getpid() % 1000, 38000 + os.getpid() % 1000
    stop = threading.Event()
    t = threading.Thread(target=_send_udp, args=(port, other, stop), daemon=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "-o", str(tmp_path / "p.jsonl"), "--device", "cpu", "-c",
                             str(cfg), *[a.replace("PORT", str(port)) for a in args]],
                            stderr=subprocess.PIPE, text=True)
    try:
        t.start()
        _, err = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err), time.monotonic() - t0


def test_run_stops_after_count_with_a_positional_filter(tmp_path: Path) -> None:
    _need_raw_socket()
    r, _ = _run_live(tmp_path, "--count", "50", "udp", "dst", "port", "PORT")
    assert r.returncode == 0, r.stderr
    assert "(filter: udp dst port" in r.stderr
    assert "50 frames, 50 metered" in r.stderr, r.stderr


def test_run_stops_after_duration(tmp_path: Path) -> None:
    _need_raw_socket()
    r, took = _run_live(tmp_path, "--duration", "3")
    assert r.returncode == 0, r.stderr
    frames = int(r.stderr.split(" frames, ")[0].split()[-1])
    assert frames > 100  # the loopback traffic was captured
    # model loading comes before the capture starts: allow for it, but the run ended by itself
    assert took < 60
