"""The systemd unit, its sysusers/tmpfiles files and scripts/install.sh.

`systemd-analyze verify` and `systemd-analyze security --offline=true` run on the
unit as shipped (only ExecStart is pointed at this environment's ids-daemon, because
verify insists that the binary exists). Tests that need a systemd tool skip, saying
so, only where that tool is not installed; none needs a running systemd.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ids-daemon@.service"
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "ids-daemon.conf"
TMPFILES = ROOT / "systemd" / "tmpfiles.d" / "ids-daemon.conf"
INSTALL = ROOT / "scripts" / "install.sh"
EXEC = "/usr/local/bin/ids-daemon"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (systemd absent here): cannot check the unit with it")
    return path


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def _instance_copy(tmp_path: Path, unit_name: str = "ids-daemon@eth0.service") -> Path:
    """The unit as ``unit_name`` in tmp_path, ExecStart pointed at an executable that
    exists here (the venv's ids-daemon, else a stand-in)."""
    exe = Path(sys.executable).parent / "ids-daemon"
    if not os.access(exe, os.X_OK):
        exe = tmp_path / "ids-daemon"
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC} ") == 1
    unit = tmp_path / unit_name
    unit.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={exe} "))
    return unit


def test_unit_settings():
    """What the unit promises, independent of systemd being installed."""
    s = _settings(UNIT.read_text())
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    # %i is the escaped instance (device unit names), %I the interface name itself
    assert s["ExecStart"] == [f"{EXEC} run -i %I --config /etc/ids-daemon/config.yml $IDS_DAEMON_SINK $IDS_DAEMON_ARGS"]
    assert s["BindsTo"] == ["sys-subsystem-net-devices-%i.device"]
    # where predictions go is chosen explicitly: Kafka unless IDS_DAEMON_SINK says otherwise
    assert '"IDS_DAEMON_SINK=--sink kafka"' in s["Environment"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["User"] == ["ids-daemon"] and s["Group"] == ["ids-daemon"]
    assert s["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert s["RestrictAddressFamilies"] == ["AF_PACKET AF_INET AF_INET6 AF_UNIX"]
    assert s["StateDirectory"] == ["ids-daemon/%I"]
    assert s["WorkingDirectory"] == ["%S/ids-daemon/%I"]
    assert "-/etc/ids-daemon/%I.env" in s["EnvironmentFile"]
    # numba and torch generate code at run time
    assert "MemoryDenyWriteExecute" not in s
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices"):
        assert key in s, key


def test_unit_verifies(tmp_path):
    analyze = _need("systemd-analyze")
    unit = _instance_copy(tmp_path)
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    out = (r.stdout + r.stderr).strip()
    print(out or "systemd-analyze verify: no findings")
    assert r.returncode == 0, out
    # verify exits 0 on settings it does not know (e.g. RestartSteps= before systemd
    # 254) and only says so: any such line fails here.
    assert not re.search(r"Unknown (key|section|lvalue)|ignoring|Failed to parse", out), out


def test_escaped_instance_binds_to_its_device_and_captures_on_it(tmp_path):
    """The instance systemd-escape names for br-lan verifies clean, binds to systemd's
    device unit for br-lan and runs the daemon on br-lan (read from systemd's own dump
    of the loaded unit, not from our reading of the specifiers)."""
    escape = _need("systemd-escape")
    analyze = _need("systemd-analyze")
    name = subprocess.run([escape, "--template", "ids-daemon@.service", "br-lan"], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()
    assert name == "ids-daemon@br\\x2dlan.service"
    # systemd names a network interface's device after its sysfs alias (udev 99-systemd.rules)
    device = subprocess.run([escape, "--path", "--suffix=device", "/sys/subsystem/net/devices/br-lan"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert device == "sys-subsystem-net-devices-br\\x2dlan.device"
    unit = _instance_copy(tmp_path, name)
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not re.search(r"Unknown (key|section|lvalue)|ignoring|Failed to parse", out), out
    # At debug level verify dumps the unit it loaded, specifiers resolved.
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=dict(os.environ, SYSTEMD_LOG_LEVEL="debug"))
    dump = r.stdout + r.stderr
    assert r.returncode == 0, dump
    assert f"BindsTo: {device} " in dump, dump
    cmd = re.search(r"Command Line: (\S+) run -i (\S+) --config /etc/ids-daemon/config.yml", dump)
    assert cmd and cmd.group(2) == "br-lan", dump
    assert "WorkingDirectory: /var/lib/ids-daemon/br-lan" in dump
    assert "EnvironmentFile: -/etc/ids-daemon/br-lan.env" in dump
    print(f"{name}: BindsTo {device}, ExecStart ... run -i {cmd.group(2)}")


def test_unit_security_ok(tmp_path):
    analyze = _need("systemd-analyze")
    unit = _instance_copy(tmp_path)
    r = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = r.stdout + r.stderr
    if r.returncode != 0 and re.search(r"unrecognized option|Unknown option|invalid option", out):
        pytest.skip(f"this systemd-analyze has no --offline: {out.strip().splitlines()[0]}")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", out)
    assert m, out
    score, level = float(m.group(1)), m.group(2)
    print(f"systemd-analyze security: {m.group(0)}")
    assert score <= 4.9 and level in ("PERFECT", "SAFE", "OK"), m.group(0)


def test_sysusers_and_tmpfiles(tmp_path):
    sysusers = _need("systemd-sysusers")
    tmpfiles = _need("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --root chowns to the new group: needs root")
    root = tmp_path / "root"
    (root / "etc" / "ids-daemon").mkdir(parents=True)
    (root / "etc" / "ids-daemon" / "config.yml").write_text("log_level: info\n")
    r = subprocess.run([sysusers, f"--root={root}", "-"], input=SYSUSERS.read_text(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    user = [ln for ln in (root / "etc" / "passwd").read_text().splitlines() if ln.startswith("ids-daemon:")]
    assert len(user) == 1 and user[0].endswith(":/var/lib/ids-daemon:/usr/sbin/nologin"), user
    uid, gid = int(user[0].split(":")[2]), int(user[0].split(":")[3])
    assert uid < 1000  # a system user
    r = subprocess.run([tmpfiles, f"--root={root}", "--create", "-"], input=TMPFILES.read_text(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    st = (root / "etc" / "ids-daemon" / "config.yml").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    assert (root / "etc" / "ids-daemon").stat().st_mode & 0o777 == 0o750


def test_install_dry_run_lists_destinations(tmp_path):
    prefix = tmp_path / "p"
    r = subprocess.run(["bash", str(INSTALL), "--prefix", str(prefix), "--dry-run"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for dest in ("etc/systemd/system/ids-daemon@.service", "etc/sysusers.d/ids-daemon.conf",
                 "etc/tmpfiles.d/ids-daemon.conf", "etc/ids-daemon/config.yml",
                 "opt/ids-daemon", "usr/local/bin/ids-daemon", "usr/local/bin/ids-trainer"):
        assert f"{prefix}/{dest}" in out, (dest, out)
    assert "+ systemctl" not in out  # never under --prefix
    assert not prefix.exists(), "--dry-run created files"


def test_install_into_prefix(tmp_path):
    """A real install of everything but the venv (which downloads torch) into a prefix;
    a second run keeps the edited config."""
    prefix = tmp_path / "p"
    cmd = ["bash", str(INSTALL), "--prefix", str(prefix), "--no-venv"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (prefix / "etc/systemd/system/ids-daemon@.service").read_text() == UNIT.read_text()
    assert (prefix / "etc/sysusers.d/ids-daemon.conf").read_text() == SYSUSERS.read_text()
    cfg = prefix / "etc/ids-daemon/config.yml"
    assert cfg.read_text().endswith((ROOT / "config.yml").read_text())
    assert cfg.stat().st_mode & 0o777 == 0o640
    cfg.write_text("log_level: debug\n")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping" in r.stdout and cfg.read_text() == "log_level: debug\n"
