"""The Kafka sink against a real Kafka-protocol broker (tansu), and its disk spool."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ids_daemon.errors import IdsError
from ids_daemon.sinks.base import EncodedBatch
from ids_daemon.sinks.kafka import KafkaSink, KafkaSinkError, parse_bootstrap
from ids_daemon.sinks.spool import HEADER_BYTES, MAGIC, DiskSpool, SpoolError

from .kafka_broker import TansuBroker, TansuNotFound, open_reader, poll_records, read_topic
from .waiting import wait_until

SCHEMA = "ids.prediction.v1"



# ---------------------------------------------------------------- helpers
def make_batch(ids, nkeys: int = 50) -> EncodedBatch:
    keys = [b"flow-%d" % (i % nkeys) for i in ids]
    values = [b'{"schema":"ids.prediction.v1","id":%d,"pad":"%s"}' % (i, b"x" * 20) for i in ids]
    return EncodedBatch(keys=keys, values=values, schema=SCHEMA)


def rec_id(value: bytes) -> int:
    start = value.index(b'"id":') + 5
    return int(value[start : value.index(b",", start)])




def drain_sink(sink: KafkaSink, timeout: float = 20.0) -> None:
    """flush until the spool is empty (the broker was just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sink.flush(timeout=max(0.1, deadline - time.monotonic()))
        if len(sink.spool) == 0 and sink._delivery.pending() <= 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"spool not drained after {timeout} s: {len(sink.spool)} left, stats {sink.stats}")


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 20.0, idle: float = 0.5) -> list:
    """Read from earliest until ``expected`` records arrived (then ``idle`` seconds more
    to catch duplicates or strays) or ``timeout``."""
    return read_topic(bootstrap, topic, expected, timeout, idle)


@pytest.fixture
def own_broker():
    """A broker of the test's own (not started): for tests that stop and restart it."""
    try:
        b = TansuBroker()
    except TansuNotFound as e:
        pytest.fail(f"Kafka test broker unavailable: {e}", pytrace=False)
    yield b
    b.stop()


def sink_for(bootstrap, topic, spool_dir, **kw) -> KafkaSink:
    kw.setdefault("retry_interval_s", 0.3)
    kw.setdefault("sensor", "test-gw")
    return KafkaSink.create(bootstrap, topic, spool_dir, **kw)


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "bad", ["", "localhost:abc", "tcp://127.0.0.1:9092", "host:70000", "a b:9092", "h1:9092,,h2:9092", "::1:9092"]
)
def test_malformed_bootstrap_is_one_line_error(tmp_path, bad):
    with pytest.raises(IdsError) as ei:
        KafkaSink.create(bad, "topic", tmp_path)
    assert "\n" not in str(ei.value) and "kafka.bootstrap" in str(ei.value)


def test_bootstrap_parsing_and_other_checks(tmp_path):
    assert parse_bootstrap("a:1, b.example.com:9093,[::1]:9094,c") == [
        "a:1", "b.example.com:9093", "[::1]:9094", "c:9092"]
    for kw, key in (({"topic": "bad topic"}, "kafka.topic"), ({"acks": "some"}, "kafka.acks"),
                    ({"compression": "brotli"}, "kafka.compression"),
                    ({"acks": 1}, "enable_idempotence needs acks"),
                    ({"producer": {"sasl.username": "u"}}, "kafka.security"),
                    ({"producer": {"linger_ms": 5}}, "not a librdkafka property"),
                    ({"consumer": {"ssl.key.location": "k"}}, "kafka.security"),
                    ({"consumer": {"session_timeout_ms": 6000}}, "not a librdkafka property"),
                    ({"security": {"protocol": "sasl_ssl"}}, "needs sasl_mechanism")):
        args = {"topic": "t", **kw}
        with pytest.raises(IdsError, match=key):
            KafkaSink.create("a:1", spool_dir=tmp_path, **args)
    # validation lives in the config: the sink takes the validated section
    from ids_daemon.config import load_config

    with pytest.raises(KafkaSinkError, match="bootstrap"):
        KafkaSink(load_config(None).kafka)


def test_spool_path_is_per_sensor_and_topic_in_the_state_directory(tmp_path):
    from ids_daemon.config import load_config

    k = load_config(None, {"kafka.state_dir": str(tmp_path), "kafka.topic": "t1"}).kafka
    assert k.spool_path("gw/1") == tmp_path / "spool" / "gw_1" / "t1"
    assert k.spool_path("gw-2") != k.spool_path("gw/1")
    k2 = load_config(None, {"kafka.spool_dir": str(tmp_path / "s"), "kafka.topic": "t2"}).kafka
    assert k2.spool_path("gw") == tmp_path / "s" / "gw" / "t2"


# ---------------------------------------------------------------- against the broker
def test_5000_records_arrive_with_keys_headers_and_per_key_order(kafka_broker, kafka_topic, tmp_path):
    n = 5000
    sink = sink_for(kafka_broker.bootstrap, kafka_topic, tmp_path / "spool")
    sink.open()
    assert wait_until(lambda: sink.broker_up, 10), "producer did not connect"
    for start in range(0, n, 250):
        sink.write_batch(make_batch(range(start, start + 250)))
    sink.flush(20)
    st = sink.stats
    assert st.received == n and st.delivered == n
    assert st.spooled == 0 and st.failed == 0 and st.dropped == 0
    sink.close()

    recs = consume(kafka_broker.bootstrap, kafka_topic, n)
    assert len(recs) == n
    ids = [rec_id(r.value) for r in recs]
    assert sorted(ids) == list(range(n))
    last: dict[bytes, int] = {}
    for r, i in zip(recs, ids):
        assert r.key == b"flow-%d" % (i % 50)
        assert ("schema", SCHEMA.encode()) in r.headers
        assert ("sensor", b"test-gw") in r.headers
        assert last.get(r.key, -1) < i, "predictions of one flow out of order"
        last[r.key] = i
    # one key, one partition
    parts: dict[bytes, set] = {}
    for r in recs:
        parts.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in parts.values())


def test_broker_down_at_open_spools_then_delivers(own_broker, kafka_topic, tmp_path):
    spool_dir = tmp_path / "spool"
    sink = sink_for(own_broker.bootstrap, kafka_topic, spool_dir)
    t0 = time.monotonic()
    sink.open()
    assert time.monotonic() - t0 < 0.5
    worst = 0.0
    for start in range(0, 1000, 100):
        t = time.monotonic()
        sink.write_batch(make_batch(range(start, start + 100)))
        worst = max(worst, time.monotonic() - t)
    assert worst < 0.05, f"write_batch blocked {worst:.3f} s with the broker down"
    assert sink.stats.spooled == 1000 and len(sink.spool) == 1000
    assert sink.stats.spool_bytes > 0 and list(spool_dir.glob("*.seg"))
    assert sink.stats.delivered == 0 and not sink.broker_up

    own_broker.start()
    drain_sink(sink)
    st = sink.stats
    assert st.respooled_delivered == 1000 and st.delivered == 1000 and st.dropped == 0
    assert st.spool_bytes == 0 and not list(spool_dir.glob("*.seg"))
    assert wait_until(lambda: sink.broker_up, 5)
    # afterwards records go direct
    sink.write_batch(make_batch(range(1000, 1100)))
    sink.flush(10)
    assert sink.stats.delivered == 1100 and sink.stats.spooled == 1000
    sink.close()

    recs = consume(own_broker.bootstrap, kafka_topic, 1100)
    ids = [rec_id(r.value) for r in recs]
    assert sorted(set(ids)) == list(range(1100))
    last: dict[bytes, int] = {}
    for r, i in zip(recs, ids):  # the spool replays in order
        assert last.get(r.key, -1) < i
        last[r.key] = i


def test_outage_mid_stream_loses_nothing(own_broker, kafka_topic, tmp_path):
    own_broker.start()
    sink = sink_for(own_broker.bootstrap, kafka_topic, tmp_path / "spool", stall_timeout_s=1.0)
    sink.open()
    assert wait_until(lambda: sink.broker_up, 10)

    # a consumer reading in parallel while the broker lives
    seen_before: set[int] = set()
    stop_consumer = threading.Event()

    def consumer_loop():
        c = open_reader(own_broker.bootstrap, kafka_topic)
        try:
            while not stop_consumer.is_set():
                seen_before.update(rec_id(r.value) for r in poll_records(c))
        finally:
            c.close()

    written: list[int] = []
    run = threading.Event()
    run.set()
    paused = threading.Event()
    stop_writer = threading.Event()
    worst = [0.0]

    def writer_loop():
        i = 0
        while not stop_writer.is_set():
            if not run.is_set():
                paused.set()
                time.sleep(0.002)
                continue
            paused.clear()
            ids = range(i, i + 20)
            t = time.monotonic()
            sink.write_batch(make_batch(ids))
            worst[0] = max(worst[0], time.monotonic() - t)
            written.extend(ids)
            i += 20
            time.sleep(0.01)  # ~1,500 predictions/s

    ct = threading.Thread(target=consumer_loop, daemon=True)
    wt = threading.Thread(target=writer_loop, daemon=True)
    ct.start()
    wt.start()
    time.sleep(1.5)

    # Before killing the broker, let the consumer see everything the broker acknowledged
    # (memory storage: what it held dies with it). The writer resumes at once.
    run.clear()
    assert paused.wait(5)
    sink.flush(10)
    acked = list(written)
    assert wait_until(lambda: seen_before.issuperset(acked), 10), (
        f"consumer did not catch up: {len(set(acked) - seen_before)} of {len(acked)} missing, e.g. "
        f"{sorted(set(acked) - seen_before)[:5]}; stats {sink.stats}")
    stop_consumer.set()
    ct.join(5)
    own_broker.stop()
    run.set()
    outage_start = time.monotonic()
    spooled_during = 0
    while time.monotonic() - outage_start < 3.5:
        spooled_during = max(spooled_during, sink.stats.spooled)
        time.sleep(0.05)
    assert spooled_during > 0, "nothing was spooled during the outage"
    assert not sink.broker_up
    own_broker.start()  # empty: memory storage
    time.sleep(1.5)
    stop_writer.set()
    wt.join(5)
    drain_sink(sink, 30)
    st = sink.stats
    sink.close()
    assert worst[0] < 0.1, f"write_batch blocked {worst[0]:.3f} s"

    recs = consume(own_broker.bootstrap, kafka_topic, len(written) - len(acked), timeout=30)
    after = {rec_id(r.value) for r in recs}
    missing = set(written) - (seen_before | after)
    assert not missing, f"{len(missing)} of {len(written)} predictions lost, e.g. {sorted(missing)[:10]}; stats {st}"
    assert st.dropped == 0 and st.received == len(written)
    assert st.respooled_delivered > 0


def test_hung_broker_is_detected_and_nothing_lost(own_broker, kafka_topic, tmp_path):
    """A broker that stops answering (SIGSTOP) but keeps its connections: no send fails
    before the delivery timeout, so the stall rule must move new records to the spool."""
    own_broker.start()
    sink = sink_for(own_broker.bootstrap, kafka_topic, tmp_path / "spool",
                    stall_timeout_s=0.5, request_timeout_ms=1500)
    sink.open()
    assert wait_until(lambda: sink.broker_up, 10)
    i = 0
    worst = 0.0

    def write_for(seconds):
        nonlocal i, worst
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            sink.write_batch(make_batch(range(i, i + 20)))
            worst = max(worst, time.monotonic() - t)
            i += 20
            time.sleep(0.01)

    write_for(0.5)
    own_broker.pause()
    try:
        write_for(2.0)
        assert not sink.broker_up and sink.stats.spooled > 0
    finally:
        own_broker.resume()
    write_for(0.5)
    drain_sink(sink, 30)
    st = sink.stats
    sink.close()
    assert worst < 0.1, f"write_batch blocked {worst:.3f} s on a hung broker"
    got = {rec_id(r.value) for r in consume(own_broker.bootstrap, kafka_topic, i)}
    assert got == set(range(i)), f"{i - len(got)} lost; stats {st}"
    assert st.dropped == 0


def test_spool_overflow_drops_oldest_and_logs(own_broker, kafka_topic, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="ids_daemon.sinks")
    sink = sink_for(own_broker.bootstrap, kafka_topic, tmp_path / "spool", spool_max_mb=8000 / (1 << 20))
    sink.open()
    n = 300
    for start in range(0, n, 10):
        sink.write_batch(make_batch(range(start, start + 10)))
    st = sink.stats
    kept = len(sink.spool)
    assert st.dropped > 0 and st.dropped + kept == n
    assert st.spool_bytes <= 8000
    drops = [r for r in caplog.records if r.name == "ids_daemon.sinks" and "dropped" in r.getMessage()]
    assert drops and drops[0].levelno == logging.WARNING
    kept_ids = [rec_id(v) for _, v, _ in sink.spool.peek(kept)]
    assert kept_ids == list(range(n - kept, n)), "the newest predictions must be the ones kept"

    own_broker.start()
    drain_sink(sink)
    assert sink.stats.respooled_delivered == kept
    sink.close()
    recs = consume(own_broker.bootstrap, kafka_topic, kept)
    assert sorted(rec_id(r.value) for r in recs) == kept_ids


def test_spool_survives_restart_of_the_daemon(own_broker, kafka_topic, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ids_daemon.sinks")
    spool_dir = tmp_path / "spool"
    a = sink_for(own_broker.bootstrap, kafka_topic, spool_dir)
    a.open()
    a.write_batch(make_batch(range(500)))
    t = time.monotonic()
    a.close()
    assert time.monotonic() - t < 3, "close with the broker away must not hang"
    assert any("500 predictions kept in the spool" in r.getMessage() for r in caplog.records)
    assert list(spool_dir.glob("*.seg"))

    own_broker.start()
    b = sink_for(own_broker.bootstrap, kafka_topic, spool_dir)
    b.open()
    assert len(b.spool) == 500
    drain_sink(b)
    assert b.stats.respooled_delivered == 500
    b.close()
    recs = consume(own_broker.bootstrap, kafka_topic, 500)
    assert sorted({rec_id(r.value) for r in recs}) == list(range(500))


def test_close_with_nothing_written_says_0_delivered(tmp_path, caplog):
    """A run that ended before its first prediction (it failed at start) closes its sink
    saying what was delivered: 0, never "everything delivered"."""
    from .helpers import free_port

    caplog.set_level(logging.INFO, logger="ids_daemon.sinks")
    sink = sink_for(f"127.0.0.1:{free_port()}", "ids.predictions", tmp_path / "spool")
    sink.open()
    sink.close()
    closed = [r.getMessage() for r in caplog.records if "Kafka sink closed" in r.getMessage()]
    assert closed == [f"Kafka sink closed: 0 delivered to {sink.bootstrap} topic ids.predictions"], closed


# ---------------------------------------------------------------- DiskSpool
def recs(ids, pad: int = 20):
    return [(b"k%d" % i, b"v%d-" % i + b"p" * pad, b"m%d" % (i % 3)) for i in ids]


def test_spool_fifo_across_segments_and_reopen(tmp_path):
    s = DiskSpool(tmp_path, 1 << 20, segment_bytes=256)
    for start in range(0, 200, 7):
        assert s.append(recs(range(start, min(start + 7, 200)))) == 0
    assert len(s) == 200 and len(list(tmp_path.glob("*.seg"))) > 5
    assert s.pop(50) == recs(range(50))
    with pytest.raises(SpoolError, match="in use"):  # one spool, one process
        DiskSpool(tmp_path, 1 << 20)
    s.close()
    s = DiskSpool(tmp_path, 1 << 20, segment_bytes=256)  # the cursor survived
    assert len(s) == 150 and s.peek(3) == recs(range(50, 53))
    s.append(recs(range(200, 210)))
    out = []
    while len(s):
        out.extend(s.pop(33))
    assert out == recs(range(50, 210))
    assert s.bytes == 0 and not list(tmp_path.glob("*.seg"))  # emptied: files removed
    s.close()


def test_spool_truncated_tail_is_discarded_and_counted(tmp_path):
    s = DiskSpool(tmp_path, 1 << 20)
    s.append(recs(range(10)))
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    seg.write_bytes(seg.read_bytes()[:-5])  # a write cut short by a crash
    s = DiskSpool(tmp_path, 1 << 20)
    assert s.discarded == 1 and len(s) == 9
    s.append(recs(range(10, 12)))
    assert s.pop(100) == recs(range(9)) + recs(range(10, 12))
    s.close()

    # a damaged record (bad CRC) in the middle: it and what follows are discarded
    s = DiskSpool(tmp_path, 1 << 20)
    s.append(recs(range(5)))
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    data = bytearray(seg.read_bytes())
    size = HEADER_BYTES + sum(map(len, recs([0])[0]))
    data[len(MAGIC) + 2 * size + HEADER_BYTES + 1] ^= 0xFF  # third record's key
    seg.write_bytes(bytes(data))
    s = DiskSpool(tmp_path, 1 << 20)
    assert s.discarded == 1 and s.pop(10) == recs(range(2))
    s.close()


def test_spool_bound_drops_oldest(tmp_path):
    size = HEADER_BYTES + sum(map(len, recs([100])[0]))
    s = DiskSpool(tmp_path, 10 * size, segment_bytes=3 * size)
    assert s.append(recs(range(100, 106))) == 0
    assert s.append(recs(range(106, 110))) == 0
    assert s.append(recs(range(110, 113))) == 3  # 3 oldest go
    assert s.bytes <= 10 * size and len(s) == 10
    assert s.peek(10) == recs(range(103, 113))
    # a batch bigger than the bound: the spool empties and the batch's newest stay
    assert s.append(recs(range(200, 215))) == 10 + 5
    assert s.peek(100) == recs(range(205, 215)) and s.dropped == 18
    # a reader's peeked records dropped meanwhile: commit never skips newer ones
    start, got = s.peek_seq(4)
    s.append(recs(range(300, 306)))  # drops 205..210
    assert s.commit(start + len(got)) == 0
    assert s.peek(100) == recs(range(211, 215)) + recs(range(300, 306))
    # a record larger than the bound cannot be kept
    assert s.append([(b"k", b"x" * (20 * size), b"")]) == 1 + 10
    assert len(s) == 0
    s.close()
    s = DiskSpool(tmp_path, 10 * size)
    assert len(s) == 0
    s.close()


def test_spool_on_a_full_disk_drops_oldest_and_never_raises(tmp_path):
    """A tmpfs far smaller than the bound: appends keep working, the oldest records go
    (counted), the newest are kept, and what is kept reads back intact after reopening."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(fs)], check=True)
    try:
        s = DiskSpool(fs, 256 << 20)  # the bound alone would never drop anything
        dropped = 0
        for start in range(0, 3000, 50):
            dropped += s.append(recs(range(start, start + 50), pad=40))
        assert s.disk_full and s.write_errors > 0 and "space" in s.last_error
        assert dropped > 0 and dropped + len(s) == 3000 and s.dropped == dropped
        kept = s.peek(len(s))
        assert kept == recs(range(3000 - len(kept), 3000), pad=40)  # the newest, in order
        s.close()
        s = DiskSpool(fs, 256 << 20)
        assert s.discarded == 0 and s.peek(len(s)) == kept
        s.close()
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_spool_reads_the_previous_format(tmp_path):
    import struct
    import zlib

    from ids_daemon.sinks.spool import MAGIC_V1

    body = b"".join(struct.pack("<III", len(k), len(v), zlib.crc32(v, zlib.crc32(k))) + k + v
                    for k, v in ((b"k1", b"v1"), (b"k2", b"v2")))
    (tmp_path / f"{0:020d}.seg").write_bytes(MAGIC_V1 + body)
    s = DiskSpool(tmp_path, 1 << 20)
    assert s.peek(5) == [(b"k1", b"v1", b""), (b"k2", b"v2", b"")]
    s.append([(b"k3", b"v3", b"m")])  # new records go to a segment of the new format
    assert s.pop(5) == [(b"k1", b"v1", b""), (b"k2", b"v2", b""), (b"k3", b"v3", b"m")]
    s.close()


def test_spooled_records_keep_their_topic_and_headers(own_broker, kafka_topic, tmp_path):
    """Spooled for t1 with the broker away; a later sink for t2 on the same spool delivers
    them to t1 with their headers (issue 11, defect 12)."""
    t1, t2 = kafka_topic + "-t1", kafka_topic + "-t2"
    spool_dir = tmp_path / "spool"
    a = sink_for(own_broker.bootstrap, t1, spool_dir, sensor="gw-a")
    a.open()
    a.write_batch(make_batch(range(50)))
    a.write_batch(EncodedBatch(keys=[b"k"], values=[b'{"id":50,"x":1}'], schema="ids.prediction.v2"))
    a.close()
    own_broker.start()
    b = sink_for(own_broker.bootstrap, t2, spool_dir, sensor="gw-b")
    b.open()
    drain_sink(b)
    assert b.stats.respooled_delivered == 51 and "51 of them after waiting in the spool" in b.summary()
    b.close()
    got = consume(own_broker.bootstrap, t1, 51)
    assert sorted(rec_id(r.value) for r in got) == list(range(51))
    for r in got:
        assert ("sensor", b"gw-a") in r.headers
        schema = b"ids.prediction.v2" if rec_id(r.value) == 50 else SCHEMA.encode()
        assert ("schema", schema) in r.headers
    assert consume(own_broker.bootstrap, t2, 0, timeout=3) == []
