"""The daemon end to end with the JSON-lines sink: replay, schema, signals, live capture."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ids_daemon.capture.pcap import PcapSource
from ids_daemon.config import MeterConfig
from ids_daemon.features.meter import Meter
from ids_daemon.model.artifacts import load_model
from ids_daemon.predictions import json_schema
from ids_daemon.sequence import SequenceBuffer
from ids_daemon.features.window import WindowBatch, REASON_IDLE, REASON_FULL
from trainer.synth import generate_corpus

from .helpers import EXE  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corpus")
    manifest = generate_corpus(d, seed=11, packets=12000,
                               classes=["BenignTraffic", "DDoS-SYN_Flood", "DDoS-ICMP_Flood", "Recon-PortScan"])
    files = json.loads(manifest.read_text())["files"]
    out = {}
    for f in files:
        out.setdefault(f["label"], d / f["path"])
    return out


def windows_of(path: Path, claims: bool = True) -> int:
    """Windows of a capture as the daemon meters it for the bundled model: without the
    frames the protocol-fact detectors claim (its metadata says detector_claims), unless
    the detectors are off (``claims`` False)."""
    from ids_daemon.detectors import DetectorSet

    m = Meter(MeterConfig(window=load_model().window, prealloc=False))
    ds = DetectorSet()
    n = 0
    with PcapSource(path) as src:
        while (b := src.next_batch()) is not None:
            if len(b) and claims:
                b = b.take(ds.process(b).frame_class < 0)
            n += len(m.process(b).windows)
    return n + len(m.flush().windows)


def claimed(stderr: str) -> int:
    """Frames the run's summary says it left to the detectors (not metered)."""
    import re

    m = re.search(r"\((\d+) left to them, not metered\)", stderr)
    return int(m.group(1)) if m else 0


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def classified_windows(err: str) -> int:
    """Windows the model classified, from the run summary (ARP windows go to the ARP detector)."""
    return int(err.split(" windows classified,")[0].split()[-1])


def model_predictions(preds: list[dict]) -> list[dict]:
    """The LSTM's predictions (the detectors publish theirs into the same stream)."""
    return [m for m in preds if not m["model"]["name"].startswith("detector:")]


def syns_then_sigterm(proc: subprocess.Popen, port: int, n: int, net: str) -> str:
    """Send ``n`` SYNs from distinct ``net``.x.y sources to 127.0.0.1:``port`` on lo, then
    SIGTERM the daemon; returns its stderr."""
    from scapy.all import IP, TCP, Ether, sendp

    pkts = [Ether() / IP(src=f"{net}.{i // 250}.{i % 250 + 1}", dst="127.0.0.1") /
            TCP(sport=1024 + i, dport=port, flags="S") for i in range(n)]
    sendp(pkts, iface="lo", verbose=False)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)[1]


def test_replay_gives_one_valid_prediction_per_window(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    pcap = corpus["DDoS-SYN_Flood"]
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    everything = read_jsonl(out)
    preds = [m for m in everything if m["flow"]["kind"] != "detector"]
    # a spoofed flood is mostly the flood detector's: the model gets what it leaves
    assert len(preds) == windows_of(pcap) and windows_of(pcap, claims=False) > 50
    schema = json_schema()
    for m in everything:
        jsonschema.validate(m, schema)
    assert len({m["id"] for m in everything}) == len(everything)
    # the flood is flagged: most of its packets are in windows predicted as an attack or left
    # to the flood detector, of the DDoS/DoS families
    attacks = [m for m in everything if m["is_attack"]]
    frames = int(p.stderr.split(" frames")[0].split()[-1])
    flagged = claimed(p.stderr) + sum(m["window"]["packets"] for m in attacks if m["flow"]["kind"] != "detector")
    assert flagged / frames > 0.8
    assert {m["family"] for m in attacks} & {"DDoS", "DoS"}
    assert all(m["risk_score"] > 0 for m in attacks)


def test_benign_capture_is_mostly_benign(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(corpus["BenignTraffic"]), "-o", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    preds = read_jsonl(out)
    fp = sum(m["is_attack"] for m in preds) / len(preds)
    assert fp < 0.3, fp


def test_stdout_sink_and_bad_arguments(corpus: dict[str, Path]) -> None:
    p = subprocess.run([EXE, "replay", "-r", str(corpus["DDoS-ICMP_Flood"])], capture_output=True, timeout=120)
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines and all(json.loads(x)["schema"] == "ids.prediction.v1" for x in lines)
    p = subprocess.run([EXE, "replay", "-r", str(corpus["DDoS-ICMP_Flood"]), "--sink", "kafka"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1 and "--kafka-bootstrap" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([EXE, "replay", "-r", str(corpus["DDoS-ICMP_Flood"]), "--model", "/nonexistent"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "no such model directory" in p.stderr and "Traceback" not in p.stderr


def test_sigterm_classifies_partial_windows_and_exits_0(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    pcap = corpus["BenignTraffic"]  # about 10 s of traffic: paced at real speed, it is still running at the signal
    proc = subprocess.Popen([EXE, "replay", "-r", str(pcap), "--speed", "1", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    assert "classifying" in proc.stderr.readline()
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    preds = read_jsonl(out)
    frames = int(err.split(" frames,")[0].split()[-1])
    windows = int(err.split(" windows,")[0].split()[-1])
    arp = int(err.split(" ARP windows left")[0].split()[-1])
    assert 0 < frames < 30000 and len(model_predictions(preds)) == classified_windows(err) == windows - arp
    # the keys still open at the stop were flushed: their partial windows were classified
    assert any(m["window"]["close_reason"] == "end" and m["window"]["packets"] < 10 for m in preds)


def test_sighup_reloads_the_model_without_losing_a_sequence(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "h.jsonl"
    pcap = corpus["BenignTraffic"]  # 14 s of packet time: at 2x it outlasts the signals below
    proc = subprocess.Popen([EXE, "replay", "-r", str(pcap), "--speed", "2", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    assert "classifying" in proc.stderr.readline()
    time.sleep(1)
    proc.send_signal(signal.SIGHUP)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "model reloaded" in err, err
    assert len(model_predictions(read_jsonl(out))) == classified_windows(err) > 0


def test_sequence_buffer_matches_the_training_rule() -> None:
    """Serving builds the same sequences as training (last T windows, first repeated)."""
    from ids_daemon.model.sequences import last_t_index

    rng = np.random.default_rng(0)
    n = 200
    wb = WindowBatch.empty(n)
    wb.features[:] = rng.normal(size=(n, 46))
    wb.key[:] = rng.integers(0, 7, n).astype(np.uint64)
    wb.first_ts[:] = np.arange(n)
    wb.reason[:] = REASON_FULL
    cols = np.arange(5)
    buf = SequenceBuffer(4, cols, 100)
    got = buf.push(wb.take(slice(0, 120)))
    got2 = buf.push(wb.take(slice(120, n)))
    x = np.concatenate([got.x, got2.x])
    idx = last_t_index(wb.key, wb.first_ts, 4)
    assert np.allclose(x, wb.features[:, :5][idx].astype(np.float32))
    # a final window forgets its key
    wb2 = wb.take(slice(0, 1))
    wb2.reason[:] = REASON_IDLE
    before = len(buf)
    buf.push(wb2)
    assert len(buf) == before - 1



def _reference_sequences(batches: list[WindowBatch], t: int, cols: np.ndarray, max_keys: int):
    """The sequence rule written plainly (an OrderedDict of each key's windows, least recently
    used first out): what the compiled buffer must give, sequence for sequence."""
    from collections import OrderedDict

    held: OrderedDict[int, list[np.ndarray]] = OrderedDict()
    evicted = 0
    outs, lens = [], []
    for wb in batches:
        for i in range(len(wb)):
            k = int(wb.key[i])
            if k in held:
                held.move_to_end(k)
            else:
                if len(held) >= max_keys:
                    held.popitem(last=False)
                    evicted += 1
                held[k] = []
            h = held[k]
            h.append(wb.features[i, cols].astype(np.float32))
            last = h[-t:]
            outs.append(np.stack([h[0]] * (t - len(last)) + last))
            lens.append(len(last))
            if wb.reason[i] != REASON_FULL:
                del held[k]
    return np.stack(outs), np.array(lens), evicted, len(held)


def test_sequence_buffer_evicts_and_forgets_as_the_plain_rule_does() -> None:
    """Under a full table (LRU evictions) and final windows mixed in, over several batches, the
    compiled buffer hands out exactly the plain rule's sequences, lengths, evictions and keys."""
    rng = np.random.default_rng(3)
    n, t, cap = 3000, 4, 24
    wb = WindowBatch.empty(n)
    wb.features[:] = rng.normal(size=wb.features.shape)
    # 60 keys over a 24-key table, some far more often than others: hits, misses and evictions
    wb.key[:] = (rng.zipf(1.3, n) % 60).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    wb.reason[:] = np.where(rng.random(n) < 0.05, REASON_IDLE, REASON_FULL)
    cols = np.array([3, 0, 7, 11])
    parts = [wb.take(slice(a, b)) for a, b in ((0, 1), (1, 700), (700, 700), (700, n))]
    buf = SequenceBuffer(t, cols, cap)
    got = [buf.push(p) for p in parts]
    want_x, want_len, want_evicted, want_keys = _reference_sequences(parts, t, cols, cap)
    assert want_evicted > 100  # the table was full for most of the run
    assert np.array_equal(np.concatenate([g.x for g in got]), want_x)
    assert np.array_equal(np.concatenate([g.lengths for g in got]), want_len)
    assert buf.evicted == want_evicted and len(buf) == want_keys
    assert buf.sequences == n

@pytest.mark.root
def test_live_run_on_loopback_predicts_what_it_captured(tmp_path: Path) -> None:
    import random

    port = random.randint(30000, 60000)
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "--filter", f"tcp and dst port {port}", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on lo" in proc.stderr.readline()
        assert "classifying" in proc.stderr.readline()
        err = syns_then_sigterm(proc, port, 300, "10.99")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    preds = read_jsonl(out)
    lstm = [m for m in preds if m["flow"]["kind"] != "detector"]
    # 300 one-packet flows pooled on the target: 300 packets in windows of the model's N, but
    # for those the flood detector claimed (300 distinct sources in a few seconds) and reported
    assert sum(m["window"]["packets"] for m in lstm) + claimed(err) == 300
    assert all(m["flow"]["key"] == "pool tcp 127.0.0.1/32" for m in lstm)
    assert all(m["model"]["name"] == "detector:flood" and m["flow"]["dst_ip"] == "127.0.0.1"
               for m in preds if m["flow"]["kind"] == "detector")


def test_spoofed_syn_flood_is_flagged_within_a_memory_bound(tmp_path: Path) -> None:
    """>= 100k packets, every one from a new source: flagged, and the daemon's peak memory
    stays under 1.5 GiB (model, torch, the preallocated 127 MiB key table included)."""
    from trainer.synth import generate_file

    pcap = tmp_path / "flood.pcap"
    n, desc = generate_file(pcap, "DDoS-SYN_Flood", 0, 120_000, seed=5)
    assert n >= 100_000 and "spoofed" in desc
    out = tmp_path / "f.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    peak_mib = float(p.stderr.split("peak memory ")[1].split()[0])
    preds = read_jsonl(out)
    attacks = [m for m in preds if m["is_attack"]]
    # by packets: what the detectors claimed (never metered) plus the attack windows' packets
    claimed = int(re.search(r"detectors: (\d+) frames flagged", p.stderr).group(1))
    in_attack_windows = sum(m["window"]["packets"] for m in attacks  # the model's windows (a finding counts its own)
                            if m.get("window") and m["window"].get("close_reason") != "detector")
    assert (claimed + in_attack_windows) / n > 0.9, p.stderr
    assert attacks and sum(m["family"] in ("DDoS", "DoS") for m in attacks) / len(attacks) > 0.8
    assert 100 < peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"
    print(f"spoofed flood: {n} packets, {len(preds)} predictions, peak RSS {peak_mib:.0f} MiB")


@pytest.mark.root
def test_privilege_drop_keeps_capturing_with_no_capabilities(tmp_path: Path) -> None:
    """Started as root with capture.user, the running daemon has that uid and no
    capability, and still captures."""
    import os
    import pwd
    import random

    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o777)  # the dropped daemon writes its predictions here
    port = random.randint(30000, 60000)
    cfg = tmp_path / "c.yml"
    cfg.write_text("capture:\n  user: nobody\nmetrics:\n  listen: null\n")
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "--filter", f"tcp and dst port {port}", "-o", str(out),
                             "--config", str(cfg)], stderr=subprocess.PIPE, text=True)
    try:
        assert "capturing on lo" in proc.stderr.readline()
        assert "classifying" in proc.stderr.readline()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == [str(nobody.pw_uid)] * 4
        for cap in ("CapEff", "CapPrm", "CapAmb"):
            assert int(fields[cap].strip(), 16) == 0, (cap, fields[cap])
        err = syns_then_sigterm(proc, port, 50, "10.98")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sum(m["window"]["packets"] for m in read_jsonl(out)) == 50, err


@pytest.mark.root
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_privilege_drop_from_a_checkout_only_root_can_read(tmp_path: Path, fmt: str) -> None:
    """The package in a directory only root can enter (a clone under ``mktemp -d``): with
    capture.user nobody, a replay imports and compiles all it needs before the drop (the
    walker of the file's format too) and ends as it does without the drop (it died at its
    first packet, or at its summary)."""
    import os
    import shutil
    import sys
    import tempfile

    import dpkt

    from .helpers import SAMPLE, free_port
    from .pcapgen import write_pcapng

    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    capture = SAMPLE
    if fmt == "pcapng":
        with open(SAMPLE, "rb") as fh:
            capture = write_pcapng(tmp_path / "sample.pcapng", [(ts, bytes(f)) for ts, f in dpkt.pcap.Reader(fh)])
    want_out = tmp_path / "want.jsonl"
    p = subprocess.run([EXE, "replay", "-r", str(capture), "-o", str(want_out), "--metrics-listen", "off"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    root_only = Path(tempfile.mkdtemp())  # mode 0700: nobody cannot read what is inside
    try:
        assert root_only.stat().st_mode & 0o777 == 0o700
        # numba's cache comes along (copy2 keeps the sources' times it is keyed on): loading
        # it reads the unreadable directory as compiling does, so the test needs no 45 s compile
        shutil.copytree(SAMPLE.parents[1], root_only / "ids_daemon")
        cfg = root_only / "c.yml"
        # the metrics endpoint opens after the drop (its address lookup loads a codec)
        cfg.write_text(f"capture:\n  user: nobody\nmetrics:\n  listen: 127.0.0.1:{free_port()}\n")
        out = root_only / "p.jsonl"  # opened before the drop, with root's rights
        env = dict(os.environ, PYTHONPATH=str(root_only))
        p = subprocess.run([sys.executable, "-c", "from ids_daemon.cli import main; main()", "replay",
                            "-r", str(capture), "-o", str(out), "--config", str(cfg)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "Permission denied" not in p.stderr and "Error" not in p.stderr, p.stderr
        got = read_jsonl(out)
    finally:
        shutil.rmtree(root_only)
    want = read_jsonl(want_out)
    assert len(got) == len(want) > 100
    assert f"{len(got)} predictions" in p.stderr
    assert [m["is_attack"] for m in got] == [m["is_attack"] for m in want]


def test_json_logs(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("meter:\n  window: 20\nlog_format: json\nmetrics:\n  listen: null\n")
    sample = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"
    p = subprocess.run([EXE, "replay", "-r", str(sample), "-o", str(tmp_path / "p.jsonl"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    logs = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    assert logs and logs[0]["level"] == "warning" and logs[0]["logger"] == "ids_daemon.builder"
    assert "differs from the model's window" in logs[0]["message"] and logs[0]["time"].endswith("Z")


def test_readiness_is_signalled_to_systemd(tmp_path: Path) -> None:
    """Under a Type=notify unit the daemon says READY=1 once it runs, STOPPING=1 at the end."""
    import os
    import socket as so

    path = str(tmp_path / "notify.sock")
    rx = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(60)
    sample = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"
    env = dict(os.environ, NOTIFY_SOCKET=path)
    p = subprocess.Popen([EXE, "replay", "-r", str(sample), "-o", str(tmp_path / "p.jsonl")], env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = rx.recv(4096).decode()
        second = rx.recv(4096).decode()
        p.communicate(timeout=60)
    finally:
        rx.close()
        if p.poll() is None:
            p.kill()
    assert "READY=1" in first and f"MAINPID={p.pid}" in first
    assert second == "STOPPING=1"
