"""`ids-daemon features` and `ids-daemon demo` as a user runs them (real processes, real files)."""

from __future__ import annotations

import csv
import io
import struct
import subprocess
from pathlib import Path

import pytest

from ids_daemon.features.ciciot import COLUMNS, IDENTITY_COLUMNS

from .pcapgen import ethernet, ipv4_udp, write_pcap

ROOT = Path(__file__).resolve().parents[1]
from .paths import PCAPS as SHARED  # noqa: E402
from .helpers import EXE  # noqa: E402


def run(*args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, timeout=timeout)


def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    r = csv.reader(io.StringIO(text))
    header = next(r)
    rows = [dict(zip(header, line)) for line in r]
    return header, rows


def assert_one_line_error(p: subprocess.CompletedProcess, words: str, code: int = 1) -> None:
    err = p.stderr.decode()
    assert p.returncode == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("ids-daemon: error:")]
    assert len(lines) == 1 and words in lines[0], err


def test_csv_header_is_the_dataset_columns_then_identity(tmp_path: Path) -> None:
    out = tmp_path / "w.csv"
    p = run("features", "-r", str(SHARED / "coap_mqtt.pcap"), "-o", str(out))
    assert p.returncode == 0, p.stderr.decode()
    header, rows = read_csv(out.read_text())
    assert header == list(COLUMNS) + list(IDENTITY_COLUMNS)
    assert header[:46][12] == "ece_flag_number" and header[45] == "Weight"
    # every metered packet is in exactly one window
    assert sum(int(r["packets"]) for r in rows) == 8516  # IPv4, IPv6 (19) and ARP: every frame
    assert all(1 <= int(r["packets"]) <= 10 for r in rows)
    assert "8516 frames: 8516 metered (19 IPv6), 0 skipped" in p.stderr.decode()


def test_per_packet_rows_in_capture_order_and_window_option(tmp_path: Path) -> None:
    out = tmp_path / "pp.csv"
    p = run("features", "-r", str(SHARED / "modbus.pcap"), "--per-packet", "-o", str(out))
    assert p.returncode == 0
    _, rows = read_csv(out.read_text())
    assert len(rows) == 102 and all(r["packets"] == "1" for r in rows)
    ts = [float(r["first_ts"]) for r in rows]
    assert ts == sorted(ts)
    w = tmp_path / "w5.csv"
    assert run("features", "-r", str(SHARED / "modbus.pcap"), "--window", "5", "-o", str(w)).returncode == 0
    _, wins = read_csv(w.read_text())
    full = [r for r in wins if r["close_reason"] == "full"]
    assert full and all(r["packets"] == "5" for r in full)
    assert sum(int(r["packets"]) for r in wins) == 102


def test_features_runs_without_loading_torch(tmp_path: Path) -> None:
    """`features` has no model: it must not import torch (two seconds of every start)."""
    import sys

    code = ("import sys; from ids_daemon.cli import main; sys.argv = ['ids-daemon'] + sys.argv[1:]\n"
            "try:\n    main()\nfinally:\n    print('torch loaded' if 'torch' in sys.modules else 'no torch', "
            "file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, "features", "-r", str(SHARED / "modbus.pcap"), "-o",
                        str(tmp_path / "w.csv")], capture_output=True, text=True, timeout=120)
    assert "102 frames: 102 metered" in p.stderr, p.stderr
    assert p.stderr.rstrip().endswith("no torch"), p.stderr


def test_stdin_gives_the_same_output_as_the_file(tmp_path: Path) -> None:
    f = SHARED / "nats.pcap"
    a = run("features", "-r", str(f), "-q")
    b = run("features", "-r", "-", "-q", stdin=f.read_bytes())
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and a.stdout.count(b"\n") > 1


@pytest.mark.parametrize("name", sorted(p.name for p in SHARED.glob("*")) if SHARED.exists() else [])
def test_every_shared_capture_runs(name: str, tmp_path: Path) -> None:
    p = run("features", "-r", str(SHARED / name), "-o", str(tmp_path / "o.csv"))
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    if name.startswith(("fuzz", "malformed")):
        assert "malformed frame" in err and "first: packet #1" in err
        assert "1 malformed" in err


def test_malformed_frame_is_skipped_and_the_rest_processed(tmp_path: Path) -> None:
    good = ipv4_udp()
    bad = bytearray(good)
    bad[0] = 0x43  # IHL 12 bytes
    frames = [(1.0 + i, ethernet(good)) for i in range(5)] + [(7.0, ethernet(bytes(bad)))] + \
             [(8.0 + i, ethernet(good)) for i in range(4)]
    pc = write_pcap(tmp_path / "m.pcap", frames)
    p = run("features", "-r", str(pc), "--per-packet", "-o", str(tmp_path / "o.csv"))
    assert p.returncode == 0
    assert "skipped 1 malformed frame" in p.stderr.decode() and "packet #6" in p.stderr.decode()
    _, rows = read_csv((tmp_path / "o.csv").read_text())
    assert len(rows) == 9


def test_truncated_file_writes_what_it_read_then_fails(tmp_path: Path) -> None:
    frames = [(1.0 + i, ethernet(ipv4_udp(sport=100 + i))) for i in range(12)]
    pc = write_pcap(tmp_path / "t.pcap", frames)
    pc.write_bytes(pc.read_bytes()[:-10])
    out = tmp_path / "o.csv"
    p = run("features", "-r", str(pc), "--per-packet", "-o", str(out))
    assert_one_line_error(p, "truncated")
    _, rows = read_csv(out.read_text())
    assert [int(r["src_port"]) for r in rows] == list(range(100, 111))


def test_not_a_capture_unknown_link_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("just text\n")
    assert_one_line_error(run("features", "-r", str(tmp_path / "notes.txt")), "not a pcap")
    wifi = write_pcap(tmp_path / "wifi.pcap", [(1.0, bytes(40))], linktype=105)
    assert_one_line_error(run("features", "-r", str(wifi)), "unsupported link type 105")
    assert_one_line_error(run("features", "-r", str(tmp_path / "nope.pcap")), "cannot open")
    assert_one_line_error(run("features"), "nothing to read")


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("meter:\n  window: -3\n  idle_timout: 5\n")
    p = run("features", "-r", str(SHARED / "nats.pcap"), "--config", str(cfg))
    assert_one_line_error(p, "meter.window", code=2)  # 2: a configuration error, nothing ran
    assert "meter.idle_timout" in p.stderr.decode()  # the misspelt key is named too
    p = run("features", "-r", str(SHARED / "nats.pcap"), "--window", "0")
    assert_one_line_error(p, "meter.window", code=2)


def test_demo_runs_on_the_bundled_capture() -> None:
    p = run("demo", "--no-kafka")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr.decode()
    assert "sample.pcap" in out and "predictions" in out
    # the bundled capture holds a spoofed SYN flood on 192.168.39.65 (telnet): the most
    # flagged key, by packets, named by the flood detector (947 sources in 0.3 s)
    flagged = out.split("most flagged keys (packets):")[1].splitlines()[1]
    assert "flood * 192.168.39.65" in flagged and "DDoS-SYN_Flood" in flagged and "1500 in 1 prediction" in flagged
    # the port scan is established by the scan detector
    assert "Recon-PortScan" in out.split("most flagged keys (packets):")[1]
    assert "0 false alarms" in out


def _syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1024, 0, 0)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes(map(int, src.split("."))),
                     bytes(map(int, dst.split("."))))
    return ip + tcp


def test_capture_key_mode_pools_everything_like_the_dataset(tmp_path: Path) -> None:
    frames = [(1.0 + i * 0.01, ethernet(_syn(f"10.1.{i // 250}.{i % 250 + 1}", "10.0.0.5", 1000 + i, 80)))
              for i in range(30)]
    pc = write_pcap(tmp_path / "f.pcap", frames)
    p = run("features", "-r", str(pc), "--key-mode", "capture", "-o", str(tmp_path / "o.csv"))
    assert p.returncode == 0
    _, rows = read_csv((tmp_path / "o.csv").read_text())
    assert [r["window_key"] for r in rows] == ["capture"] * 3
    assert [r["packets"] for r in rows] == ["10", "10", "10"]


@pytest.mark.root
def test_live_capture_on_loopback_finds_every_packet_once(tmp_path: Path) -> None:
    """features -i lo: known packets sent with scapy each appear once in the CSV; SIGTERM
    ends the capture cleanly (exit 0) after writing everything."""
    import random
    import signal

    from scapy.all import IP, UDP, Ether, Raw, sendp

    port = random.randint(30000, 60000)
    out = tmp_path / "live.csv"
    proc = subprocess.Popen([EXE, "features", "-i", "lo", "--filter", f"udp and dst port {port}",
                             "--per-packet", "-o", str(out)], stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert "capturing on lo" in line, line
        pkts = [Ether() / IP(src="127.0.0.1", dst="127.0.0.1", ttl=40 + i) / UDP(sport=20000 + i, dport=port) /
                Raw(bytes(i)) for i in range(40)]
        noise = [Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=1, dport=port + 1)] * 5
        sendp(pkts + noise, iface="lo", verbose=False)
        # no wait: what is still in a partly filled ring block must be drained on SIGTERM
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    _, rows = read_csv(out.read_text())
    sports = sorted(int(r["src_port"]) for r in rows)
    assert sports == [20000 + i for i in range(40)]  # all of them, once each, nothing else
    by_port = {int(r["src_port"]): r for r in rows}
    assert float(by_port[20007]["Duration"]) == 47  # TTL
    assert float(by_port[20007]["Tot size"]) == 14 + 20 + 8 + 7
    assert all(r["UDP"] == "1.0" for r in rows)


def test_count_stops_after_exactly_n_frames(tmp_path: Path) -> None:
    out = tmp_path / "n.csv"
    p = run("features", "-r", str(SHARED / "coap_mqtt.pcap"), "--per-packet", "--count", "100", "-o", str(out))
    assert p.returncode == 0
    assert "100 frames: 100 metered (19 IPv6)" in p.stderr.decode()  # the capture opens with 19 IPv6 frames
    _, rows = read_csv(out.read_text())
    assert len(rows) == 100
