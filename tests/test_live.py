"""Live capture through the TPACKET_V3 ring (`ids_daemon.capture.live`).

These tests open packet sockets, so they need root (or CAP_NET_RAW); CI runs them as
root. Traffic stays on ``lo``, a tun device, or a veth pair whose far end lives in a
private network namespace; addresses come from 10.213.0.0/16 and exist only on those
interfaces.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from ids_daemon.capture.batch import LINKTYPE_ETHERNET, LINKTYPE_RAW, STATUS_OK, PacketBatch
from ids_daemon.capture.bpf import attach_filter, compile_filter, snaplen_program
from ids_daemon.capture.live import LiveSource
from ids_daemon.errors import CaptureError

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="AF_PACKET capture is Linux only")


def _need_raw_socket() -> None:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        pytest.skip("opening a packet socket needs root or CAP_NET_RAW")


def _collect(src: LiveSource, want, timeout: float = 3.0, settle: float = 0.3) -> PacketBatch:
    """Batches until ``want(batch_so_far)`` holds (then ``settle`` s more, to catch
    duplicates) or ``timeout`` s pass."""
    got: list[PacketBatch] = []
    deadline = time.monotonic() + timeout
    done_at = None
    while time.monotonic() < deadline:
        b = src.next_batch()
        assert b is not None
        if len(b):
            got.append(b)
        if done_at is None and want(PacketBatch.concat(got)):
            done_at = time.monotonic()
            deadline = min(deadline, done_at + settle)
    return PacketBatch.concat(got)


def _free_udp_port() -> int:
    return random.randint(20000, 60000)


# ---- filters -------------------------------------------------------------------------------

def test_compile_filter_returns_snaplen():
    prog = compile_filter("udp and port 53", linktype=1, snaplen=200)
    insns = prog.instructions()
    assert len(prog) == len(insns) > 2
    assert (0x06, 0, 0, 200) in insns  # accept = ret #snaplen
    assert insns[-1] == (0x06, 0, 0, 0)  # reject
    assert snaplen_program(128).instructions() == [(0x06, 0, 0, 128)]


@pytest.mark.parametrize("expr", ["tcp prt 80", "host 999.1.1.1", "port 1 and (", "udp and"])
def test_bad_filter_is_one_line_capture_error(expr):
    with pytest.raises(CaptureError) as ei:
        compile_filter(expr)
    msg = str(ei.value)
    assert msg.startswith(f"invalid capture filter {expr!r}: ")
    assert "\n" not in msg and len(msg) > len(f"invalid capture filter {expr!r}: ")


def test_bad_filter_on_live_source():
    _need_raw_socket()
    src = LiveSource("lo", bpf_filter="tcp prt 80")
    with pytest.raises(CaptureError, match=r"^invalid capture filter 'tcp prt 80': syntax error$"):
        src.open()
    src.close()


def test_attach_filter_rejects_garbage():
    _need_raw_socket()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
        attach_filter(s, compile_filter("tcp"))
        attach_filter(s.fileno(), snaplen_program(64))
        with pytest.raises(CaptureError):
            attach_filter(s, b"\xff" * 8)  # unknown opcode


# ---- errors --------------------------------------------------------------------------------

def test_no_such_interface():
    with pytest.raises(CaptureError, match=r"^nosuchif0: no such network interface$"):
        LiveSource("nosuchif0").open()
    with pytest.raises(CaptureError, match="no such network interface"):
        LiveSource("x" * 40).open()


def test_permission_denied_without_cap_net_raw():
    _need_raw_socket()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed: cannot drop CAP_NET_RAW")
    code = ("from ids_daemon.capture.live import LiveSource\n"
            "from ids_daemon.errors import CaptureError\n"
            "try:\n    LiveSource('lo').open()\nexcept CaptureError as e:\n    print(e)\n")
    # Dropping the capability from the bounding set takes it from root as well.
    r = subprocess.run([setpriv, "--bounding-set", "-net_raw", "--inh-caps", "-net_raw", sys.executable,
                        "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "setpriv" in r.stderr:
        pytest.skip(f"setpriv cannot drop CAP_NET_RAW here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("lo: permission denied opening a packet socket "
                                "(live capture needs root or the CAP_NET_RAW capability)")


def test_next_batch_states():
    _need_raw_socket()
    src = LiveSource("lo", bpf_filter="udp and port 9", block_timeout_ms=20, ring_mb=1)
    with pytest.raises(CaptureError, match="not opened"):
        src.next_batch()
    with src:
        t0 = time.monotonic()
        b = src.next_batch()
        assert b is not None and len(b) == 0  # timeout: an empty batch, not None
        assert time.monotonic() - t0 < 1.0
        assert src.fileno() >= 0
    assert src.next_batch() is None
    src.close()  # idempotent


# ---- loopback ------------------------------------------------------------------------------

def test_loopback_every_frame_once():
    _need_raw_socket()
    from scapy.all import IP, UDP, Ether, Raw, sendp

    port = _free_udp_port()
    n = 50
    base_sport = 31000
    pkts = []
    for i in range(n):
        pkts.append(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / IP(src="127.0.0.1", dst="127.0.0.1")
                    / UDP(sport=base_sport + i, dport=port) / Raw(b"m" * (10 + i)))
        # same host, other port: the kernel filter must drop these
        pkts.append(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / IP(src="127.0.0.1", dst="127.0.0.1")
                    / UDP(sport=base_sport + i, dport=port + 1) / Raw(b"o" * (10 + i)))
    with LiveSource("lo", bpf_filter=f"udp and port {port}", ring_mb=4, block_timeout_ms=50) as src:
        assert src.linktype == LINKTYPE_ETHERNET
        t_send = time.time()
        sendp(pkts, iface="lo", verbose=False)
        b = _collect(src, lambda b: len(b) >= n)
        t_end = time.time()
        src.read_kernel_stats()

    assert len(b) == n, f"expected {n} frames once each, got {len(b)}"
    assert (b.dport == port).all()  # nothing from port + 1
    order = np.argsort(b.sport)
    sport = b.sport[order]
    assert (sport == base_sport + np.arange(n)).all()  # each exactly once
    plen = 10 + np.arange(n)
    assert (b.ip_len[order] == 20 + 8 + plen).all()
    assert (b.frame_len[order] == 14 + 20 + 8 + plen).all()
    assert (b.wire_len[order] == 14 + 20 + 8 + plen).all()
    assert (b.status == STATUS_OK).all() and b.l4_ok.all()
    assert (b.proto == 17).all() and (b.src4 == 0x7F000001).all() and (b.dst4 == 0x7F000001).all()
    assert (b.ts >= t_send - 1.0).all() and (b.ts <= t_end + 1.0).all()
    assert b.source == "lo"
    assert src.stats.frames == n
    assert src.stats.kernel_packets >= n
    assert src.stats.kernel_drops == 0


def test_loopback_keeps_frame_bytes_for_the_alert_pcap():
    """keep_raw: each frame's bytes are copied out of the ring before its block goes back
    to the kernel, byte for byte what was sent, snapped at snaplen."""
    _need_raw_socket()
    from scapy.all import IP, UDP, Ether, Raw, sendp

    port = _free_udp_port()
    pkts = [bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / IP(src="127.0.0.1", dst="127.0.0.1")
                  / UDP(sport=32000 + i, dport=port) / Raw(bytes([i]) * (20 + 40 * i))) for i in range(6)]
    got: list[bytes] = []
    with LiveSource("lo", bpf_filter=f"udp and port {port}", ring_mb=1, block_timeout_ms=20, snaplen=128,
                    keep_raw=True) as src:
        sendp(pkts, iface="lo", verbose=False)
        deadline = time.monotonic() + 3.0
        while len(got) < len(pkts) and time.monotonic() < deadline:
            b = src.next_batch()
            assert b.raw is not None and len(b.raw_off) == len(b) + 1
            assert (np.diff(b.raw_off) == b.cap_len).all()
            got += [b.raw[b.raw_off[i]:b.raw_off[i + 1]].tobytes() for i in range(len(b))]
    assert sorted(got) == sorted(p[:128] for p in pkts)  # the long ones cut at the snap length


def test_loopback_filter_attached_before_first_frame():
    """Frames of other traffic never leak in between socket creation and the filter."""
    _need_raw_socket()
    port = _free_udp_port()
    stop = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for _ in range(50):
                    s.sendto(b"noise", ("127.0.0.1", port + 1))
                time.sleep(0.0005)

    th = threading.Thread(target=flood, daemon=True)
    th.start()
    try:
        leaked = 0
        for _ in range(15):
            with LiveSource("lo", bpf_filter=f"udp and dst port {port}", ring_mb=1, block_timeout_ms=10) as src:
                for _ in range(3):
                    leaked += len(src.next_batch())
    finally:
        stop.set()
        th.join()
    assert leaked == 0


def test_loopback_snaplen_without_filter_and_small_batches():
    """No filter: `ret #snaplen` still truncates in the kernel; a block is split over
    several batches when batch_size is small."""
    _need_raw_socket()
    port = _free_udp_port()
    n = 20
    with LiveSource("lo", snaplen=96, ring_mb=2, block_timeout_ms=20, batch_size=7) as src:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"z" * (1000 + i), ("127.0.0.1", port))
        sizes = []
        got = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sum(int((g.dport == port).sum()) for g in got) < n:
            b = src.next_batch()
            sizes.append(len(b))
            got.append(b)
        time.sleep(0.1)
        got.append(src.next_batch())
    b = PacketBatch.concat(got)
    b = b.take((b.dport == port) & (b.proto == 17))
    assert len(b) == n
    assert max(sizes) <= 7
    assert (b.cap_len == 96).all()
    order = np.argsort(b.ip_len)
    assert (b.ip_len[order] == 28 + 1000 + np.arange(n)).all()
    assert (b.wire_len[order] == 14 + 28 + 1000 + np.arange(n)).all()
    assert (b.frame_len == b.wire_len).all()  # from the IP header, not the truncated capture
    assert (b.status == STATUS_OK).all()


# ---- tun (raw IP link) ---------------------------------------------------------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:] + udp


def test_tun_raw_ip_link():
    _need_raw_socket()
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun not available")
    name = f"idst{os.getpid() % 100000}"
    TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        _ip("addr", "add", "10.213.250.1/30", "dev", name)
        _ip("link", "set", name, "up")
        port = _free_udp_port()
        n = 30
        with LiveSource(name, bpf_filter=f"udp and port {port}", ring_mb=1, block_timeout_ms=20) as src:
            assert src.linktype == LINKTYPE_RAW
            for i in range(n):  # written into the tun device = received by the kernel on it
                os.write(fd, _ipv4_udp("10.213.250.2", "10.213.250.1", 40000 + i, port, b"t" * i))
            b = _collect(src, lambda b: len(b) >= n)
        assert len(b) == n
        assert sorted(b.sport.tolist()) == list(range(40000, 40000 + n))
        order = np.argsort(b.sport)
        assert (b.ip_len[order] == 28 + np.arange(n)).all()
        assert (b.frame_len[order] == 14 + 28 + np.arange(n)).all()  # counted as if Ethernet
        assert (b.status == STATUS_OK).all()
    finally:
        os.close(fd)  # a non-persistent tun device disappears with its descriptor


# ---- veth pair into a network namespace ----------------------------------------------------

@pytest.fixture
def veth_ns():
    """A veth pair: ``host`` end here, ``peer`` end in a fresh namespace, with
    10.213.x.1/30 and 10.213.x.2/30 and static neighbours (no ARP round trips)."""
    _need_raw_socket()
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) not installed")
    tag = uuid.uuid4().hex[:8]
    ns, host, peer = f"idsT{tag}", f"idsh{tag}", f"idsn{tag}"
    r = _ip("netns", "add", ns, check=False)
    if r.returncode != 0:
        err = r.stderr.strip()
        if "permi" in err.lower():
            pytest.skip(f"cannot create a network namespace (needs root / CAP_SYS_ADMIN): {err}")
        pytest.fail(f"ip netns add failed: {err}")
    # a random /30 of 10.213.20.0-10.213.219.255, so parallel runs rarely share one
    net = f"10.213.{int(tag[:2], 16) % 200 + 20}.{4 * (int(tag[2:4], 16) % 60)}"
    host_ip = net[: net.rfind(".") + 1] + str(int(net.rsplit(".", 1)[1]) + 1)
    peer_ip = net[: net.rfind(".") + 1] + str(int(net.rsplit(".", 1)[1]) + 2)
    try:
        _ip("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "addr", "add", f"{peer_ip}/30", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host_mac = open(f"/sys/class/net/{host}/address").read().strip()
        peer_mac = _ip("-n", ns, "-br", "link", "show", peer).stdout.split()[2]
        _ip("neigh", "replace", peer_ip, "lladdr", peer_mac, "dev", host, "nud", "permanent")
        _ip("-n", ns, "neigh", "replace", host_ip, "lladdr", host_mac, "dev", peer, "nud", "permanent")
        yield {"ns": ns, "host": host, "peer": peer, "host_ip": host_ip, "peer_ip": peer_ip}
    finally:
        _ip("link", "del", host, check=False)
        _ip("netns", "del", ns, check=False)


def _send_from_ns(ns: str, dst: str, port: int, n: int, size0: int = 0) -> None:
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({n}):\n"
            f"    s.sendto(b'v' * ({size0} + i), ({dst!r}, {port}))\n")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, timeout=30,
                   capture_output=True)


def test_veth_from_namespace_once(veth_ns):
    port = _free_udp_port()
    n = 50
    with LiveSource(veth_ns["host"], bpf_filter=f"udp and dst port {port}", ring_mb=2,
                    block_timeout_ms=20) as src:
        assert src.linktype == LINKTYPE_ETHERNET
        t0 = time.time()
        _send_from_ns(veth_ns["ns"], veth_ns["host_ip"], port, n)
        b = _collect(src, lambda b: len(b) >= n)
        src.read_kernel_stats()
    assert len(b) == n
    order = np.argsort(b.ip_len)
    assert (b.ip_len[order] == 28 + np.arange(n)).all()
    assert (b.frame_len[order] == 14 + 28 + np.arange(n)).all()
    assert (b.dport == port).all()
    assert (b.src4 == struct.unpack("!I", socket.inet_aton(veth_ns["peer_ip"]))[0]).all()
    assert (b.dst4 == struct.unpack("!I", socket.inet_aton(veth_ns["host_ip"]))[0]).all()
    assert (np.abs(b.ts - t0) < 10).all()
    assert src.stats.kernel_packets >= n and src.stats.kernel_drops == 0


def test_veth_outgoing_kept_off_loopback(veth_ns):
    """On a real link the host's own frames are half of its conversations: kept once."""
    port = _free_udp_port()
    n = 20
    with LiveSource(veth_ns["host"], bpf_filter=f"udp and port {port}", ring_mb=1, block_timeout_ms=20) as src:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                s.sendto(b"h" * i, (veth_ns["peer_ip"], port))
        b = _collect(src, lambda b: len(b) >= n)
    assert len(b) == n
    assert sorted(b.ip_len.tolist()) == [28 + i for i in range(n)]


def test_veth_snaplen_and_interface_removal(veth_ns):
    port = _free_udp_port()
    n = 20
    src = LiveSource(veth_ns["host"], snaplen=128, ring_mb=1, block_timeout_ms=20)
    src.open()
    try:
        _send_from_ns(veth_ns["ns"], veth_ns["host_ip"], port, n, size0=900)
        b = _collect(src, lambda b: int((b.dport == port).sum()) >= n)
        b = b.take(b.dport == port)
        assert len(b) == n
        assert (b.cap_len == 128).all()
        assert sorted(b.wire_len.tolist()) == [14 + 28 + 900 + i for i in range(n)]
        # The interface goes away under the open socket: a clear error, no busy loop.
        _ip("link", "del", veth_ns["host"])
        with pytest.raises(CaptureError, match="was removed"):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                src.next_batch()
    finally:
        src.close()


def test_veth_vlan_tags_counted(veth_ns):
    """The kernel moves a received frame's outer 802.1Q/802.1ad tag into metadata
    before the packet socket sees it; the source counts it back (as libpcap re-inserts
    it), so frame_len and vlan_count match the wire."""
    port = _free_udp_port()
    host_mac = bytes.fromhex(open(f"/sys/class/net/{veth_ns['host']}/address").read().strip().replace(":", ""))
    src_mac = bytes.fromhex("02aabbccdd01")
    frames = []
    for i in range(10):
        ip = _ipv4_udp(veth_ns["peer_ip"], veth_ns["host_ip"], 41000 + i, port, b"q" * i)
        if i % 2 == 0:  # one 802.1Q tag, VLAN 10
            tags = struct.pack("!HH", 0x8100, 10)
        else:  # QinQ: 802.1ad outer (VLAN 20), 802.1Q inner (VLAN 10)
            tags = struct.pack("!HHHH", 0x88A8, 20, 0x8100, 10)
        frames.append(host_mac + src_mac + tags + struct.pack("!H", 0x0800) + ip)
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)\n"
            f"s.bind(({veth_ns['peer']!r}, 0))\n"
            "for line in sys.stdin.read().split():\n"
            "    s.send(bytes.fromhex(line))\n")
    with LiveSource(veth_ns["host"], ring_mb=1, block_timeout_ms=20) as src:
        subprocess.run(["ip", "netns", "exec", veth_ns["ns"], sys.executable, "-c", code], check=True,
                       timeout=30, capture_output=True, input="\n".join(f.hex() for f in frames), text=True)
        b = _collect(src, lambda b: int((b.dport == port).sum()) >= 10)
    b = b.take(b.dport == port)
    assert len(b) == 10
    order = np.argsort(b.sport)
    i = np.arange(10)
    ntags = np.where(i % 2 == 0, 1, 2)
    assert (b.vlan_count[order] == ntags).all()
    assert (b.frame_len[order] == 14 + 4 * ntags + 28 + i).all()
    assert (b.wire_len[order] == 14 + 4 * ntags + 28 + i).all()
    assert (b.cap_len == b.wire_len).all()
    assert (b.status == STATUS_OK).all()


def test_loopback_outgoing_dropped_in_user_space(monkeypatch):
    """Kernels without PACKET_IGNORE_OUTGOING (< 4.20): the walker drops lo's outgoing
    copies itself; ignore_outgoing=False keeps both copies."""
    _need_raw_socket()
    import ids_daemon.capture.live as live

    port = _free_udp_port()
    n = 10

    def run(**kw) -> tuple[PacketBatch, LiveSource]:
        with LiveSource("lo", bpf_filter=f"udp and dst port {port}", ring_mb=1, block_timeout_ms=20, **kw) as src:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(n):
                    s.sendto(b"u" * i, ("127.0.0.1", port))
            return _collect(src, lambda b: len(b) >= 2 * n, timeout=0.5), src

    b, src = run(ignore_outgoing=False)
    assert len(b) == 2 * n and not src.kernel_ignores_outgoing
    monkeypatch.setattr(live, "PACKET_IGNORE_OUTGOING", 0x7FFF)  # an option no kernel knows
    b, src = run()
    assert not src.kernel_ignores_outgoing
    assert len(b) == n and src.outgoing_skipped == n
    assert sorted(b.ip_len.tolist()) == [28 + i for i in range(n)]
