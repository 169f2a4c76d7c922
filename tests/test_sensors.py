"""Several sensors on one host: one daemon per interface, side by side.

Two veth pairs, their far ends in a network namespace the test creates; one
`ids-daemon run` per near end, both reading the same config file (one metrics.listen),
the second given its own endpoint with --metrics-listen. Each must capture only its
interface, serve its own /metrics, and name itself HOST/INTERFACE. Needs root (packet
sockets, namespaces), as CI runs.
"""

from __future__ import annotations

import json
import queue
import random
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

from tests.test_live import _ip, _need_raw_socket
from tests.test_metrics import scrape

from tests.helpers import EXE, free_port  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="AF_PACKET capture is Linux only")


@pytest.fixture
def two_veths():
    """Two veth pairs: near ends here (10.213.x.1/30), far ends in one fresh namespace."""
    _need_raw_socket()
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    tag = uuid.uuid4().hex[:6]
    ns = f"idsS{tag}"
    r = _ip("netns", "add", ns, check=False)
    if r.returncode != 0:
        if "permi" in r.stderr.lower():
            pytest.skip(f"cannot create a network namespace (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
        pytest.fail(f"ip netns add failed: {r.stderr.strip()}")
    third = int(tag[:2], 16) % 200 + 20
    pairs = []
    try:
        for i in range(2):
            host, peer = f"ids{i}h{tag}", f"ids{i}n{tag}"
            base = 4 * (int(tag[2:4], 16) % 30) + 128 * i
            host_ip, peer_ip = f"10.213.{third}.{base + 1}", f"10.213.{third}.{base + 2}"
            _ip("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
            pairs.append({"host": host, "peer": peer, "host_ip": host_ip, "peer_ip": peer_ip})
            _ip("addr", "add", f"{host_ip}/30", "dev", host)
            _ip("link", "set", host, "up")
            _ip("-n", ns, "addr", "add", f"{peer_ip}/30", "dev", peer)
            _ip("-n", ns, "link", "set", peer, "up")
            host_mac = open(f"/sys/class/net/{host}/address").read().strip()
            peer_mac = _ip("-n", ns, "-br", "link", "show", peer).stdout.split()[2]
            _ip("neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", host, "nud", "permanent")
            _ip("-n", ns, "neigh", "replace", host_ip, "lladdr", host_mac, "dev", peer, "nud", "permanent")
        yield ns, pairs
    finally:
        for p in pairs:
            _ip("link", "del", p["host"], check=False)
        _ip("netns", "del", ns, check=False)


def _send(ns: str, dst: str, port: int, n: int) -> None:
    """``n`` UDP datagrams from the namespace to ``dst``:``port``, each from its own source port."""
    code = ("import socket\n"
            f"for i in range({n}):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    s.sendto(b'x' * (20 + i), ({dst!r}, {port}))\n"
            "    s.close()\n")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=60,
                   capture_output=True)


class _Stderr:
    """A daemon's stderr, read by a thread, so waiting for a line can time out."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._q.put(line)
        self._q.put("")

    def wait_for(self, needle: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {needle!r} within {timeout:.0f} s: {''.join(self.lines)}") from None
            if not line:
                raise AssertionError(f"daemon ended before saying {needle!r}: {''.join(self.lines)}")
            self.lines.append(line)
            if needle in line:
                return line

    def rest(self, timeout: float = 60.0) -> str:
        """Everything until the daemon closes stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            self.lines.append(line)
        return "".join(self.lines)


def test_two_instances_side_by_side(two_veths, tmp_path: Path) -> None:
    ns, pairs = two_veths
    shared_port, own_port = free_port(), free_port()
    assert shared_port != own_port
    cfg = tmp_path / "config.yml"  # one file for both, as /etc/ids-daemon/config.yml under systemd
    cfg.write_text(f"metrics:\n  listen: 127.0.0.1:{shared_port}\n")
    port = random.randint(30000, 60000)
    counts = [40, 70]  # different, so each endpoint's figures show whose traffic it saw
    procs: list[subprocess.Popen] = []
    logs: list[_Stderr] = []
    try:
        for i, p in enumerate(pairs):
            argv = [EXE, "run", "-i", p["host"], "--filter", f"udp and dst port {port}", "--config", str(cfg),
                    "-o", str(tmp_path / f"{p['host']}.jsonl")]
            if i == 1:
                argv += ["--metrics-listen", f"127.0.0.1:{own_port}"]
            procs.append(subprocess.Popen(argv, stderr=subprocess.PIPE, text=True))
            logs.append(_Stderr(procs[-1]))
        endpoints = []
        for log in logs:
            line = log.wait_for("metrics on http://")
            endpoints.append(int(line.split("127.0.0.1:")[1].split("/")[0]))
        assert endpoints == [shared_port, own_port]
        for p, n in zip(pairs, counts):
            _send(ns, p["host_ip"], port, n)
        host = socket.gethostname()
        seen: list[dict[str, float]] = []
        for p, n, mport in zip(pairs, counts, endpoints):
            deadline = time.monotonic() + 20
            while True:
                m = scrape(mport)
                if m.get("ids_packets_total", 0) >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            seen.append(m)
            assert m["ids_packets_total"] == n, (p["host"], m.get("ids_packets_total"))
            assert f'ids_sensor_info{{interface="{p["host"]}",sensor="{host}/{p["host"]}"}}' in m, sorted(m)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        errs = [log.rest() for log in logs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errs):
        assert proc.returncode == 0, err
        assert "metrics endpoint" not in err  # no "not started" warning: each had its own port
    for p, n in zip(pairs, counts):
        preds = [json.loads(x) for x in (tmp_path / f"{p['host']}.jsonl").read_text().splitlines() if x]
        assert sum(m["window"]["packets"] for m in preds if m["flow"]["kind"] != "detector") == n
        assert {m["sensor"] for m in preds} == {f"{host}/{p['host']}"}
    print(f"two sensors: {[p['host'] for p in pairs]} on metrics ports {endpoints}, "
          f"{[int(m['ids_packets_total']) for m in seen]} packets each")


def test_metrics_listen_off() -> None:
    """`--metrics-listen off` turns the endpoint off whatever the config says."""
    from ids_daemon.cli import _sink_options

    assert _sink_options(None, None, None, None, {"metrics.listen": "off"}).metrics.listen is None
    assert _sink_options(None, None, None, None, {"metrics.listen": "127.0.0.1:9109"}).metrics.listen == "127.0.0.1:9109"
    assert _sink_options(None, None, None, None, {"metrics.listen": None}).metrics.listen == "127.0.0.1:9108"
