"""The pipeline core (issue 11): one builder for every run, the model reload off the
capture thread, kernel and queue drops in the summary and the status line."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from ids_daemon.builder import SINKS, build_pipeline, make_sinks, windows_of_file
from ids_daemon.config import load_config
from ids_daemon.errors import IdsError
from ids_daemon.model.artifacts import bundled_model_dir

from .helpers import EXE
from .test_live import veth_ns  # noqa: F401 - the fixture: a veth pair into a fresh namespace

SAMPLE = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"


def cfg_(**overrides):
    return load_config(None, {"metrics.listen": None, "inference.device": "cpu", **overrides})


def model_copy(tmp_path: Path) -> Path:
    d = tmp_path / f"model-{uuid.uuid4().hex[:6]}"
    shutil.copytree(bundled_model_dir(), d)
    return d


def edit_meta(d: Path, **changes) -> None:
    meta = json.loads((d / "metadata.json").read_text())
    meta.update(changes)
    (d / "metadata.json").write_text(json.dumps(meta))


# ---- one builder -----------------------------------------------------------------------------

def paced_udp_sender(host: str, port: int, rate: int, n: int, flows: int) -> str:
    """Python source that sends ``n`` 40-byte UDP datagrams to host:port from ``flows``
    sockets at ``rate`` per second (run in the test's namespace with ``python -c``)."""
    return ("import socket, time\n"
            f"socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({flows})]\n"
            "t0 = time.monotonic()\n"
            f"for i in range({n}):\n"
            f"    socks[i % {flows}].sendto(b'r' * 40, ({host!r}, {port}))\n"
            "    if i % 100 == 99:\n"
            f"        lag = t0 + (i + 1) / {rate} - time.monotonic()\n"
            "        if lag > 0: time.sleep(lag)\n")


def test_sinks_are_looked_up_by_name() -> None:
    cfg = cfg_()
    assert set(SINKS) == {"jsonl", "kafka", "csv"}
    with pytest.raises(IdsError, match="unknown sink 'csv' \\(jsonl or kafka\\)"):
        make_sinks(cfg, ["csv"], None)  # the CSV sink takes windows, not predictions
    with pytest.raises(IdsError, match="--kafka-bootstrap"):
        make_sinks(cfg, ["kafka"], None)
    with pytest.raises(IdsError, match="unknown sink 'jsonl' \\(csv\\)"):
        make_sinks(cfg, ["jsonl"], None, takes="windows")


def test_features_and_replay_are_one_pipeline(tmp_path: Path) -> None:
    """features is the replay pipeline with the CSV sink: the same frames and windows, and
    one CSV row per window the model was given (plus the ARP windows it leaves to a detector).
    The detectors are off here: the bundled model leaves the frames they flag out of its
    windows (detector_claims), which features, a plain extractor, never does."""
    cfg = cfg_(**{"detectors.enabled": False})
    feats = build_pipeline(cfg, read=str(SAMPLE), output=str(tmp_path / "w.csv"), features=True)
    try:
        fs = feats.run()
    finally:
        feats.source.close()
    pred = build_pipeline(cfg, read=str(SAMPLE), output=str(tmp_path / "p.jsonl"))
    try:
        ps = pred.run()
    finally:
        pred.source.close()
    rows = (tmp_path / "w.csv").read_text().count("\n") - 1
    assert fs.frames == ps.frames == 5401
    assert fs.windows == ps.windows == fs.rows_written == rows > 500
    assert ps.sequences + ps.arp_windows == ps.windows and fs.predictions == 0
    assert ps.predictions == ps.sequences + ps.detector_predictions
    assert ps.batches >= 1 and ps.mean_batch == ps.batched_sequences / ps.batches
    assert not hasattr(ps, "batch_sizes")  # a count and a sum, not a list growing per batch
    wb = windows_of_file(cfg, str(SAMPLE))  # the same pipeline, windows kept in memory (benchmarks)
    assert len(wb) == fs.windows and int(wb.packets.sum()) == feats.meter.counters.packets


def test_detectors_made_beside_the_model_are_the_ones_run(tmp_path: Path, monkeypatch) -> None:
    """The detectors are made (and their kernels loaded) on a thread while the worker loads
    (start-up: ids_daemon.builder); the pipeline runs that set, and an error made there is
    the builder's error, not a thread's traceback with a half-built pipeline."""
    import ids_daemon.detectors as det

    made: list[tuple[object, str]] = []
    real = det.DetectorSet

    class Recorded(real):  # type: ignore[misc, valid-type]
        def __init__(self, cfg=None):
            super().__init__(cfg)
            made.append((self, threading.current_thread().name))

    monkeypatch.setattr(det, "DetectorSet", Recorded)
    pipe = build_pipeline(cfg_(), read=str(SAMPLE), output=str(tmp_path / "p.jsonl"))
    try:
        st = pipe.run()
    finally:
        pipe.source.close()
    assert [name for _, name in made] == ["ids-kernels"]  # one set, made off the main thread
    assert pipe.detectors is made[0][0] and st.frames == 5401

    class Broken(real):  # type: ignore[misc, valid-type]
        def __init__(self, cfg=None):
            raise IdsError("detectors: no room for the scan tables")

    monkeypatch.setattr(det, "DetectorSet", Broken)
    with pytest.raises(IdsError, match="no room for the scan tables"):
        build_pipeline(cfg_(), read=str(SAMPLE), output=str(tmp_path / "q.jsonl"))


def test_status_line_shows_queue_drops(tmp_path: Path, capfd) -> None:
    pipe = build_pipeline(cfg_(), read=str(SAMPLE), output=str(tmp_path / "p.jsonl"), status=True)
    try:
        pipe.run()
    finally:
        pipe.source.close()
    err = capfd.readouterr().err
    final = err.rsplit("\r", 1)[1]
    assert re.search(r"queue drops 0 batch \d+", final), final
    assert "kernel drops" not in final  # not capturing live


def test_replay_has_no_fast_flag(tmp_path: Path) -> None:
    p = subprocess.run([EXE, "replay", "-r", str(SAMPLE), "--fast"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "No such option" in p.stderr


# ---- reload --------------------------------------------------------------------------------------

def test_reload_refuses_a_model_whose_window_differs_from_the_meter(tmp_path: Path, caplog) -> None:
    model = model_copy(tmp_path)
    pipe = build_pipeline(cfg_(), read=str(SAMPLE), output=str(tmp_path / "p.jsonl"), model=str(model), speed=200)
    edit_meta(model, window=20)  # on disk now: the next load reads this
    pipe.request_reload()
    with caplog.at_level(logging.ERROR, logger="ids_daemon.pipeline"):
        try:
            st = pipe.run()
        finally:
            pipe.source.close()
    assert st.reload_failures == 1 and st.reloads == 0
    assert any("window N 20 differs from the meter's 10" in r.getMessage() for r in caplog.records)
    assert st.predictions == st.sequences + st.detector_predictions  # kept running on the old model


def test_reload_switches_between_batches_to_a_longer_sequence_without_losing_one(tmp_path: Path) -> None:
    """The new model wants T=6 (the old T=4): sequences queued before the switch run on the
    old model, the ones after it on the new buffer; every window is predicted once."""
    model = model_copy(tmp_path)
    out = tmp_path / "p.jsonl"
    # 90 s of packet time at 30x: ~3 s, time for the loader to finish mid-run
    pipe = build_pipeline(cfg_(), read=str(SAMPLE), output=str(out), model=str(model), speed=30)
    edit_meta(model, seq_len=6)
    timer = threading.Timer(0.8, pipe.request_reload)
    timer.start()
    try:
        st = pipe.run()
    finally:
        timer.cancel()
        pipe.source.close()
    assert st.reloads == 1 and st.reload_failures == 0 and pipe.worker.seq_len == 6
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    model_preds = [p for p in preds if not p["model"]["name"].startswith("detector:")]
    assert len(model_preds) == st.sequences == st.windows - st.arp_windows
    hist = [p["window"]["history"] for p in model_preds]
    first_long = next(i for i, h in enumerate(hist) if h > 4)
    assert max(hist[:first_long]) <= 4 and max(hist) <= 6 and 0 < first_long < len(hist)


# ---- kernel and queue drops ----------------------------------------------------------------------

class PtyReader:
    """The daemon's stderr on a terminal (so it prints its status line), read in a thread."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.text = ""
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.text += data.decode(errors="replace")

    def wait_for(self, words: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.text:
            assert time.monotonic() < deadline, f"no {words!r} in {self.text!r}"
            time.sleep(0.05)


@pytest.mark.root
def test_kernel_drops_are_in_the_summary_and_the_status_line(tmp_path: Path) -> None:
    """A stopped daemon's 1 MiB ring overflows: the kernel drops frames, and both the
    status line and the summary say how many (the metrics were the only place before)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    port = 40000 + os.getpid() % 20000
    cfg = tmp_path / "c.yml"
    cfg.write_text("capture:\n  ring_mb: 1\nmetrics:\n  listen: null\ndetectors:\n  enabled: false\n")
    tty = PtyReader()
    proc = subprocess.Popen([EXE, "run", "-i", "lo", "--filter", f"udp and dst port {port}", "-o",
                             str(tmp_path / "p.jsonl"), "--config", str(cfg)], stderr=tty.slave)
    try:
        tty.wait_for("classifying")
        proc.send_signal(signal.SIGSTOP)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(30000):
                s.sendto(b"x" * 64, ("127.0.0.1", port))
        proc.send_signal(signal.SIGCONT)
        tty.wait_for("kernel drops", timeout=30)
        time.sleep(1.5)  # a status line after the ring was read
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(tty.slave)
    err = tty.text
    assert proc.returncode == 0, err
    m = re.search(r"kernel: (\d+) received, (\d+) dropped; queue drops: (\d+) sequences, (\d+) findings", err)
    assert m, err
    received, dropped = int(m.group(1)), int(m.group(2))
    assert dropped > 1000 and received >= dropped, err
    status = [int(x) for x in re.findall(r"queue drops \d+ kernel drops (\d+)", err)]
    assert status and max(status) == dropped, err


def big_model_into(d: Path, hidden: int = 1024, layers: int = 3) -> int:
    """Replace the model in ``d`` by one of the same window, columns and classes but a much
    larger network (slow to hash, read and probe: a reload that takes a while); its bytes."""
    from ids_daemon.model.artifacts import load_model, save_model
    from ids_daemon.model.lstm import LSTMConfig, RealDataLSTMPredictor

    old = load_model(d)
    cfg = LSTMConfig(input_size=old.encoder.output_size, hidden_size=hidden, num_layers=layers,
                     num_classes=len(old.classes))
    save_model(d, RealDataLSTMPredictor(cfg), old.encoder, old.classes, families=old.families, window=old.window,
               seq_len=old.seq_len, label_scheme=old.meta.get("label_scheme", "34"),
               operating_point=old.meta.get("operating_point"), extra={"lstm_skips_arp": old.meta.get("lstm_skips_arp",
                                                                                                     False)})
    return (d / "weights.pt").stat().st_size


@pytest.mark.root
def test_live_reload_under_traffic_drops_nothing_in_the_kernel(tmp_path: Path, veth_ns) -> None:  # noqa: F811
    """Steady traffic into a small (1 MiB) ring on a veth pair while a large model (~0.1 GB
    to hash, read and probe) is reloaded: the load runs on the loader thread, so the
    capture thread never waits for it, the kernel drops nothing from the moment of the
    SIGHUP to the end, and every frame the kernel delivered ends in a classified window."""
    port = 41000 + os.getpid() % 20000
    model = model_copy(tmp_path)
    cfg = cfg_(**{"capture.ring_mb": 1, "capture.block_timeout_ms": 20, "detectors.enabled": False,
                  "capture.filter": f"udp and dst port {port}"})
    out = tmp_path / "p.jsonl"
    pipe = build_pipeline(cfg, interface=veth_ns["host"], output=str(out), model=str(model))
    size = big_model_into(model)
    assert size > 50e6
    src = pipe.source
    read = src.next_batch
    reads: list[tuple[float, int]] = []  # (when a read returned, kernel drops so far)

    def timed_read():
        b = read()
        reads.append((time.monotonic(), src.stats.kernel_drops))
        return b

    src.next_batch = timed_read  # the real source, timed: when did the capture thread read?
    rate, seconds, flows = 8000, 4.0, 64
    n = int(rate * seconds)
    code = paced_udp_sender(veth_ns["host_ip"], port, rate, n, flows)
    marks: dict[str, float] = {}

    def drive() -> None:
        sender = subprocess.Popen(["ip", "netns", "exec", veth_ns["ns"], sys.executable, "-c", code])
        time.sleep(1.5)  # the first second of a capture is not what this test is about
        marks["hup"] = time.monotonic()
        pipe.request_reload()
        sender.wait(timeout=60)
        marks["sent"] = time.monotonic()
        deadline = time.monotonic() + 60  # a loaded machine may need longer than the traffic lasts
        while pipe.stats.reloads + pipe.stats.reload_failures == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        pipe.request_stop()

    t = threading.Thread(target=drive)
    t.start()
    try:
        st = pipe.run()
    finally:
        t.join()
        src.close()
    assert st.reloads == 1 and st.reload_failures == 0, st
    assert st.reload_seconds > 0.15, st.reload_seconds  # the load took a while ...
    during = [w for w in reads if marks["hup"] <= w[0] <= marks["sent"]]
    gaps = [b[0] - a[0] for a, b in zip(during, during[1:])]
    # ... and the capture thread kept reading (block timeout 20 ms) through it; on the
    # capture thread the longest gap was the whole load
    assert gaps and max(gaps) < min(0.25, st.reload_seconds / 2), (max(gaps), st.reload_seconds)
    drops_at_hup = next(d for when, d in reads if when >= marks["hup"])
    assert src.stats.kernel_drops == drops_at_hup, (drops_at_hup, src.stats.kernel_drops)
    assert st.frames == src.stats.kernel_packets - src.stats.kernel_drops  # every delivered frame was read
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(p["window"]["packets"] for p in preds) == st.frames and st.dropped_sequences == 0


@pytest.mark.root
def test_daemon_under_traffic_from_its_first_packet_reloads_without_a_kernel_drop(tmp_path: Path,
                                                                                  veth_ns) -> None:  # noqa: F811
    """`ids-daemon run` on a veth pair, traffic (8 k packets/s into a 1 MiB ring) from the
    moment it says it classifies, three SIGHUPs: three reloads, no kernel drop (the compiled
    decode path is warmed before the ring opens: it used to cost the first half second of
    traffic), every packet in exactly one predicted window."""
    port = 42000 + os.getpid() % 20000
    cfg = tmp_path / "c.yml"
    cfg.write_text("capture:\n  ring_mb: 1\n  block_timeout_ms: 20\nmetrics:\n  listen: null\n"
                   "detectors:\n  enabled: false\n")
    out = tmp_path / "p.jsonl"
    proc = subprocess.Popen([EXE, "run", "-i", veth_ns["host"], "--filter", f"udp and dst port {port}", "-o",
                             str(out), "--config", str(cfg)], stderr=subprocess.PIPE, text=True)
    rate, seconds, flows = 8000, 4.0, 64
    n = int(rate * seconds)
    code = paced_udp_sender(veth_ns["host_ip"], port, rate, n, flows)
    try:
        assert "capturing on" in proc.stderr.readline()
        assert "classifying" in proc.stderr.readline()
        sender = subprocess.Popen(["ip", "netns", "exec", veth_ns["ns"], sys.executable, "-c", code])
        for _ in range(3):
            time.sleep(seconds / 4)
            proc.send_signal(signal.SIGHUP)
        assert sender.wait(timeout=60) == 0
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.count("model reloaded") == 3, err
    m = re.search(r"kernel: (\d+) received, (\d+) dropped; queue drops: (\d+) sequences", err)
    assert m and int(m.group(1)) == n and int(m.group(2)) == 0 and int(m.group(3)) == 0, err
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(p["window"]["packets"] for p in preds) == n  # every packet, in exactly one window


def test_a_stop_signal_after_the_run_ended_keeps_exit_0(tmp_path: Path) -> None:
    """SIGTERM racing the end of a replay (the summary is printed, the interpreter is
    shutting down) used to kill the finished process: exit -15 after a clean run."""
    proc = subprocess.Popen([EXE, "replay", "-r", str(SAMPLE), "-o", str(tmp_path / "p.jsonl"), "--config",
                             str(_no_metrics(tmp_path))], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "windows classified" in line:  # the last summary line: the run is over
                break
        # a stop request every 2 ms until it exits: some land while the interpreter shuts down
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0


def _no_metrics(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yml"
    cfg.write_text("metrics:\n  listen: null\n")
    return cfg
