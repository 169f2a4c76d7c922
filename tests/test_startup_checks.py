"""What the daemon refuses at start, in one line naming the key, exit code 2 (issue 11,
defects 7, 8 and 9): bad config values, bad model metadata, a model whose outputs are
not finite, tables bigger than the memory the process may use. And predictions that
would fail the v1 schema are never published."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from ids_daemon.config import MeterConfig
from ids_daemon.errors import ConfigError
from ids_daemon.features.meter import Meter
from ids_daemon.memory import (MemoryLimit, available_memory, cgroup_limits, check_table_memory,
                               meter_table_bytes, sequence_buffer_bytes)
from ids_daemon.model.artifacts import ModelError, bundled_model_dir, load_model, write_weights
from ids_daemon.predictions import json_schema
from ids_daemon.sequence import SequenceBuffer

from .helpers import EXE

SAMPLE = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"


def replay(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "replay", "-r", str(SAMPLE), "-o", str(tmp_path / "p.jsonl"), *args],
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(p: subprocess.CompletedProcess, *words: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one error line, naming ``words``."""
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == code, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("ids-daemon: error:")]
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def model_copy(tmp_path: Path, **meta_changes: object) -> Path:
    d = tmp_path / f"model-{uuid.uuid4().hex[:6]}"
    shutil.copytree(bundled_model_dir(), d)
    meta = json.loads((d / "metadata.json").read_text())
    meta.update(meta_changes)
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


# ---- defect 9: one line naming the key, exit 2 ------------------------------------------------

@pytest.mark.parametrize("text,key", [
    ("inference:\n  device: tpu\n", "inference.device"),
    ("metrics:\n  listen: localhost\n", "metrics.listen"),
    ("metrics:\n  listen: '127.0.0.1:notaport'\n", "metrics.listen"),
    ("metrics:\n  listen: '127.0.0.1:99999'\n", "metrics.listen"),
    ("metrics:\n  listen: '127.0.0.1:0'\n", "metrics.listen"),
])
def test_bad_config_values_are_one_line_exit_2(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(text)
    assert_refused(replay(tmp_path, "--config", str(cfg)), key, str(cfg))
    assert not (tmp_path / "p.jsonl").exists()


def test_device_flag_is_checked_like_the_config(tmp_path: Path) -> None:
    assert_refused(replay(tmp_path, "--device", "tpu"), "inference.device")


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x00\x01meter:\x00\n\x7f"])
def test_binary_config_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_bytes(content)
    assert_refused(replay(tmp_path, "--config", str(cfg)), str(cfg))


@pytest.mark.parametrize("change,key", [
    ({"format_version": "x"}, "format_version"),
    ({"classes": 5}, "classes"),
    ({"classes": ["BenignTraffic"]}, "classes"),
    ({"seq_len": 0}, "seq_len"),
    ({"window": -3}, "window"),
    ({"window": "10"}, "window"),
    ({"operating_point": {"threshold": 2}}, "operating_point.threshold"),
    ({"operating_point": {"threshold": 0.9, "by_window_kind": {"flow": {"threshold": 0.9}, "pool": {}}}},
     "operating_point.by_window_kind.pool.threshold"),
    ({"operating_point": {"threshold": 0.9, "by_window_kind": {"flow": {"threshold": "0.9"},
                                                               "pool": {"threshold": 0.95}}}},
     "operating_point.by_window_kind.flow.threshold"),
])
def test_bad_model_metadata_is_one_line_at_start(tmp_path: Path, change: dict, key: str) -> None:
    model = model_copy(tmp_path, **change)
    t = time.monotonic()
    line = assert_refused(replay(tmp_path, "--model", str(model)), key)
    assert "metadata.json" in line
    assert time.monotonic() - t < 60  # refused at start, not after the run
    assert not (tmp_path / "p.jsonl").exists()
    with pytest.raises(ModelError):
        load_model(model)


# ---- defect 8: non-finite outputs ------------------------------------------------------------------

def nan_model(tmp_path: Path) -> Path:
    """The bundled model with one weight NaN (checksum updated: the file is 'valid')."""
    d = model_copy(tmp_path)
    good = load_model(d)
    with torch.no_grad():
        next(good.model.classifier.parameters()).view(-1)[0] = float("nan")
    meta = json.loads((d / "metadata.json").read_text())
    meta["weights_sha256"] = write_weights(d, good.model)
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_a_model_with_nan_outputs_is_refused_at_load(tmp_path: Path) -> None:
    model = nan_model(tmp_path)
    with pytest.raises(ModelError, match="not finite"):
        load_model(model)
    p = replay(tmp_path, "--model", str(model))
    assert_refused(p, "not finite", str(model), code=1)
    assert not (tmp_path / "p.jsonl").exists() or not (tmp_path / "p.jsonl").read_text()


def test_predictions_that_would_fail_the_schema_are_counted_not_published(tmp_path: Path) -> None:
    """A model that passed its probe but gives NaN on some input (half precision can
    overflow): the worker publishes only what the v1 schema accepts."""
    from ids_daemon.features.ciciot import INDEX
    from ids_daemon.features.window import REASON_FULL, WindowBatch
    from ids_daemon.inference.worker import InferenceWorker, schema_valid

    w = InferenceWorker(device="cpu", sensor="t")
    n = 12
    wb = WindowBatch.empty(n)
    wb.key[:] = np.arange(n, dtype=np.uint64) + 1
    wb.packets[:] = 10
    wb.reason[:] = REASON_FULL
    wb.features[:] = np.random.default_rng(1).random((n, 46)) * 100
    seq = SequenceBuffer(w.seq_len, np.array([INDEX[c] for c in w.loaded.columns]), 64).push(wb)
    good = w.predict(seq)
    assert len(good) == n and w.refused == 0
    for v in good.values:
        jsonschema.validate(json.loads(v), json_schema())
    # the same sequences through a model whose weights turned NaN after its load probe
    bad = load_model(None, "cpu")
    bad.state["classifier.0.weight"][0, 0] = np.nan  # the arrays every engine (numpy, torch) is built from
    w.install(bad)
    out = w.predict(seq)
    assert len(out) == 0 and w.refused == n
    # row by row: NaN rows are the ones refused, the others pass the schema
    probs = np.full((4, 3), 1 / 3)
    probs[1, 0] = np.nan
    probs[3] = [0.5, 0.7, -0.2]
    dec = (probs.argmax(1), np.nanmax(probs, 1), np.full(4, 0.5), np.full(4, 0.5), np.ones(4, bool))
    assert schema_valid(probs, dec).tolist() == [True, False, True, False]


# ---- defect 7: tables against memory ------------------------------------------------------------

def test_table_sizes_match_what_is_allocated() -> None:
    for n in (16, 1000, 1 << 12):
        # the table is the per-key arrays and the hash index; a few global counters come on top
        real = Meter(MeterConfig(max_flows=n, prealloc=False)).memory_bytes
        assert meter_table_bytes(n) <= real <= meter_table_bytes(n) + 4096
        buf = SequenceBuffer(4, np.arange(39), n)
        assert sequence_buffer_bytes(n, 4, 39) == buf.nbytes


def test_tables_beyond_the_memory_limit_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as ei:
        check_table_memory(1 << 26, 4, 39, MemoryLimit(8 << 30, "cgroup limit /x/memory.max (systemd MemoryMax=)"))
    msg = str(ei.value)
    assert msg.startswith("meter.max_flows 67108864 needs ") and "\n" not in msg
    assert "/x/memory.max" in msg and "lower meter.max_flows to at most " in msg
    fits = int(msg.rsplit(" ", 1)[1])
    assert 0 < fits < 1 << 26
    check_table_memory(fits, 4, 39, MemoryLimit(8 << 30, "test"))  # the advice holds
    assert check_table_memory(1 << 18, 4, 39, MemoryLimit(8 << 30, "test")) > 0


def test_max_flows_2_26_is_refused_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"meter:\n  max_flows: {1 << 26}\nmetrics:\n  listen: null\n")
    lim = available_memory()
    if lim is not None and lim.bytes > 100 << 30:
        pytest.skip(f"this host has {lim.bytes >> 30} GiB available: 2^26 keys fit")
    t = time.monotonic()
    assert_refused(replay(tmp_path, "--config", str(cfg)), "meter.max_flows 67108864 needs", "GiB")
    assert time.monotonic() - t < 60


def test_cgroup_limits_v1_and_v2_are_read(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:   64000000 kB\n")
    root = tmp_path / "cg"
    # v2: the service's own limit (systemd MemoryMax=) and a looser parent
    svc = root / "system.slice" / "ids-daemon@eth0.service"
    svc.mkdir(parents=True)
    (svc / "memory.max").write_text(f"{2 << 30}\n")
    (svc / "memory.current").write_text(f"{1 << 29}\n")
    (root / "system.slice" / "memory.max").write_text("max\n")
    (proc / "self" / "cgroup").write_text("0::/system.slice/ids-daemon@eth0.service\n")
    assert cgroup_limits(proc, root) == [((2 << 30) - (1 << 29), str(svc / "memory.max"))]
    lim = available_memory(proc, root)
    assert lim.bytes == (2 << 30) - (1 << 29) and "memory.max" in lim.source
    # v1, in a container whose mount root is its own cgroup
    (proc / "self" / "cgroup").write_text("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    mem = root / "memory"
    mem.mkdir()
    (mem / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (mem / "memory.usage_in_bytes").write_text("0\n")
    assert cgroup_limits(proc, root) == [(1 << 30, str(mem / "memory.limit_in_bytes"))]
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_limits(proc, root) == []
    assert available_memory(proc, root).bytes == 64000000 * 1024


@pytest.mark.root
def test_a_real_cgroup_limit_refuses_tables_that_do_not_fit(tmp_path: Path) -> None:
    """The daemon started in a memory cgroup of 1 GiB (what systemd's MemoryMax=1G makes)
    with tables of ~2.6 GiB: one line naming the cgroup file, not an OOM kill."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (CI runs as root)")
    mine = [ln.split(":", 2) for ln in Path("/proc/self/cgroup").read_text().splitlines()]
    v1 = next((p[2] for p in mine if "memory" in p[1].split(",")), None)
    if v1 is not None and Path("/sys/fs/cgroup/memory").is_dir():
        parent, limit_file = Path("/sys/fs/cgroup/memory") / v1.lstrip("/"), "memory.limit_in_bytes"
    else:
        v2 = next((p[2] for p in mine if p[1] == ""), "/")
        parent, limit_file = Path("/sys/fs/cgroup") / v2.lstrip("/"), "memory.max"
    cg = parent / f"ids-test-{uuid.uuid4().hex[:8]}"
    try:
        cg.mkdir()
        (cg / limit_file).write_text(str(1 << 30))
    except OSError as e:
        pytest.skip(f"cannot make a memory cgroup here ({parent}): {e.strerror}")
    try:
        cfg = tmp_path / "c.yml"
        cfg.write_text(f"meter:\n  max_flows: {1 << 22}\nmetrics:\n  listen: null\n")
        p = subprocess.run(["sh", "-c", f'echo $$ > {cg}/cgroup.procs && exec "$@"', "sh", EXE, "replay", "-r",
                            str(SAMPLE), "-o", str(tmp_path / "p.jsonl"), "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120)
        line = assert_refused(p, "meter.max_flows 4194304", str(cg / limit_file), "MemoryMax")
        assert "lower meter.max_flows to at most" in line
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
