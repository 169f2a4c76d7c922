"""Live capture end to end: tcpreplay at set rates into `ids-daemon run` on a veth pair.

    sudo .venv/bin/python bench/live.py [--rates 50000,100000,200000,500000,0] [--seconds 25]
                                        [--capture FILE ...] [--packets N] [--config config.yml]

Makes a network namespace and a veth pair (one end in the namespace, the other here;
both removed at the end, on an error or on Ctrl-C too), and for each capture and each
rate starts ``ids-daemon run`` on the end here as shipped (the default configuration or
``--config``: detectors and model on; predictions to a JSON-lines temporary file,
metrics off; no broker), sends the capture from the namespace with ``tcpreplay --pps
RATE`` (0: ``--topspeed``), looped to fill ``--seconds``, stops the daemon with SIGINT
once it has caught up, and prints per capture a row per rate:

- offered: the rate asked of tcpreplay (top: as fast as it can);
- achieved, sent: tcpreplay's own figures (its "Rated: ... pps" and successful packets);
- received, processed, kernel drops, queue drops, coalesced, findings dropped,
  predictions: the daemon's summary at exit (``kernel: R received, D dropped``; its
  frames; ``queue drops: S sequences, F findings``; ``coalesced ...: C sequences``);
- lost %: (sent - processed) / sent, what never went through the meter wherever it was
  lost (kernel ring full, or before the packet socket);
- CPU %: the daemon's utime + stime (/proc/PID/stat, every thread) over the wall time
  from the sender's start until the daemon went quiet after it (% of one core: the
  capture, worker and sink threads together may exceed 100);
- run-queue wait %: over the same time, how long the daemon's threads were ready to run
  but waited for a CPU (/proc/PID/task/*/schedstat, summed, % of one core; "-" where the
  kernel keeps no schedstat): high on a machine busy with other work, where loss says
  more about the machine than about the daemon;
- load: the 1-minute load average when the run ended (other work on the machine).

Default captures: bench/gen.py's flood-heavy and benign-heavy captures (--packets
frames each, written to bench/out once, the files bench/pipeline.py uses). Needs root,
iproute2 and tcpreplay (``scripts/setup.sh --test`` installs it); without them it stops
with one line. The daemon is whatever ``ids_daemon`` PYTHONPATH names, else this tree.
Neither the daemon nor tcpreplay is niced: they share the machine's cores with each
other and with anything else running.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROG = "bench/live.py"

# The daemon's run summary (ids_daemon.cli._run_pipeline); text.agree makes a count of 1 singular.
_SUMMARY = re.compile(
    r"^(?P<frames>\d+) frames?\b.*?, (?P<predictions>\d+) predictions? in .*?"
    r"kernel: (?P<received>\d+) received, (?P<kernel_drops>\d+) dropped; "
    r"queue drops: (?P<queue_drops>\d+) sequences?, (?P<findings_dropped>\d+) findings?; "
    r"coalesced \(.*?\): (?P<coalesced>\d+) sequences?;", re.M)
_ACTUAL = re.compile(r"Actual: (\d+) packets .*? sent in ([\d.]+) seconds")
_RATED = re.compile(r"Rated: .*?([\d.]+) pps")
_SUCCESS = re.compile(r"Successful packets:\s+(\d+)")
_FAILED = re.compile(r"Failed packets:\s+(\d+)")

COLUMNS = ("offered", "achieved", "sent", "received", "processed", "kernel drops", "queue drops", "coalesced",
           "findings dropped", "predictions", "lost %", "CPU %", "run-queue wait %", "load")


class BenchError(Exception):
    """A reason the bench cannot run or go on: printed as one line."""


@dataclass
class Row:
    """One capture at one rate: the sender's figures and the daemon's."""

    offered: int  # packets/s asked of tcpreplay, 0: top speed
    achieved: float  # tcpreplay's Rated pps
    sent: int  # tcpreplay's successful packets
    received: int  # daemon summary: frames the kernel delivered to the socket (dropped ones too)
    processed: int  # daemon summary: frames read from the ring and metered
    kernel_drops: int
    queue_drops: int
    coalesced: int
    findings_dropped: int
    predictions: int
    cpu: float  # % of one core
    wait: float | None  # % of one core: ready to run, waiting for a CPU (None: no schedstat)
    load: float

    @property
    def lost(self) -> float:
        """Per cent of the frames sent that the daemon did not process."""
        return 100.0 * (self.sent - self.processed) / self.sent if self.sent else 0.0

    def cells(self) -> list[str]:
        return ["top" if not self.offered else f"{self.offered:,d}", f"{self.achieved:,.0f}", f"{self.sent:,d}",
                f"{self.received:,d}", f"{self.processed:,d}", f"{self.kernel_drops:,d}", f"{self.queue_drops:,d}",
                f"{self.coalesced:,d}", f"{self.findings_dropped:,d}", f"{self.predictions:,d}", f"{self.lost:.2f}",
                f"{self.cpu:.0f}", "-" if self.wait is None else f"{self.wait:.0f}", f"{self.load:.2f}"]


def table(rows: list[Row]) -> str:
    """The rows as a right-aligned text table, columns two spaces apart at least."""
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise BenchError(f"ip {' '.join(args)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r


def preflight() -> None:
    """Root, iproute2 and tcpreplay, or one line saying which is missing."""
    if sys.platform != "linux":
        raise BenchError("needs Linux (network namespaces, veth, AF_PACKET)")
    if os.geteuid() != 0:
        raise BenchError("needs root: it creates a network namespace and a veth pair and captures on them "
                         "(run it with sudo)")
    if shutil.which("ip") is None:
        raise BenchError("iproute2's ip is not installed (apt-get install iproute2)")
    if shutil.which("tcpreplay") is None:
        raise BenchError("tcpreplay is not installed (apt-get install tcpreplay; scripts/setup.sh --test installs it)")


class Lab:
    """The namespace and the veth pair; ``close`` removes them (safe to call twice)."""

    def __init__(self, mtu: int = 9000):
        tag = uuid.uuid4().hex[:8]
        self.ns, self.host, self.peer = f"idsB{tag}", f"idsbh{tag}", f"idsbn{tag}"
        self._made = False
        r = _ip("netns", "add", self.ns, check=False)
        if r.returncode != 0:
            raise BenchError(f"cannot create a network namespace: {r.stderr.strip() or f'exit {r.returncode}'}")
        self._made = True
        try:
            _ip("link", "add", self.host, "mtu", str(mtu), "type", "veth", "peer", "name", self.peer,
                "mtu", str(mtu), "netns", self.ns)
            # No IPv6 on either end: its router and multicast-listener solicitations would
            # be frames the daemon processes that tcpreplay never sent.
            _sysctl(None, f"net.ipv6.conf.{self.host}.disable_ipv6")
            _sysctl(self.ns, f"net.ipv6.conf.{self.peer}.disable_ipv6")
            _ip("link", "set", self.host, "up")
            _ip("-n", self.ns, "link", "set", self.peer, "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._made:
            _ip("link", "del", self.host, check=False)  # gone with the namespace too; this is quicker
            _ip("netns", "del", self.ns, check=False)
            self._made = False


def _sysctl(ns: str | None, key: str) -> None:
    """Set ``key`` to 1 (in namespace ``ns``), where the kernel has it."""
    cmd = ["sysctl", "-qw", f"{key}=1"]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    subprocess.run(cmd, capture_output=True, timeout=30)  # no IPv6 in this kernel: nothing to silence


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5); the split starts at field 3


def run_queue_wait(pid: int) -> dict[str, int] | None:
    """Nanoseconds each thread of the process has waited on a run queue (ready, not
    running); None where the kernel keeps no schedstat."""
    waits = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                waits[tid] = int(f.read().split()[1])
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended meanwhile
            return None
        except (OSError, IndexError, ValueError):
            continue
    return waits


@dataclass
class Sample:
    """The daemon's clock readings at one moment."""

    t: float  # time.monotonic()
    ticks: int  # cpu_ticks
    waits: dict[str, int] | None  # run_queue_wait

    @classmethod
    def of(cls, pid: int) -> "Sample":
        return cls(time.monotonic(), cpu_ticks(pid), run_queue_wait(pid))

    def cpu_since(self, start: "Sample") -> float:
        """% of one core the process used from ``start`` to this sample."""
        return 100.0 * (self.ticks - start.ticks) / os.sysconf("SC_CLK_TCK") / max(self.t - start.t, 1e-9)

    def wait_since(self, start: "Sample") -> float | None:
        """% of one core its threads spent waiting for a CPU from ``start`` to this sample
        (threads started meanwhile counted from zero)."""
        if self.waits is None or start.waits is None:
            return None
        ns = sum(w - start.waits.get(tid, 0) for tid, w in self.waits.items())
        return 100.0 * ns / 1e9 / max(self.t - start.t, 1e-9)


def _stop(proc: subprocess.Popen | None, sig: int, wait: float) -> None:
    """``sig`` to ``proc`` (if still running), SIGKILL after ``wait`` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


class Daemon:
    """``ids-daemon run`` on the lab's interface, its stderr in a file (the summary comes from there)."""

    def __init__(self, iface: str, tmp: Path, config: str | None, started: list):
        self.err_path = tmp / "daemon.err"
        self.out_path = tmp / "predictions.jsonl"
        env = dict(os.environ)
        if not env.get("PYTHONPATH"):  # else PYTHONPATH's tree is measured
            env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-c", "from ids_daemon.cli import main; main()", "run", "-i", iface,
               "--sink", "jsonl", "-o", str(self.out_path), "--metrics-listen", "off"]
        if config:
            cmd += ["--config", config]
        self._err = open(self.err_path, "wb")
        # A session of its own: Ctrl-C at the terminal reaches this script, which stops the
        # daemon with its one SIGINT (a second would cut its drain short).
        self.proc: subprocess.Popen | None = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                              stderr=self._err, env=env, start_new_session=True)
        started.append(self)  # at once: an interrupt from here on stops it

    def wait_ready(self, start_timeout: float) -> None:
        """Until the daemon says it classifies (its socket is open), or fail."""
        deadline = time.monotonic() + start_timeout
        while "ids-daemon: classifying" not in self.stderr():
            if self.proc.poll() is not None:
                raise BenchError(f"the daemon exited ({self.proc.returncode}) before capturing: {self.last_line()}")
            if time.monotonic() > deadline:
                raise BenchError(f"the daemon did not start capturing within {start_timeout:.0f} s")
            time.sleep(0.1)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def last_line(self) -> str:
        lines = [line for line in self.stderr().splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def wait_quiet(self, limit: float, quiet_cores: float = 0.15, step: float = 0.25) -> Sample:
        """Wait until the daemon has used under ``quiet_cores`` of a core over ``step`` s (it
        has caught up with what was sent), at most ``limit`` s; returns the sample at the
        start of that quiet interval."""
        s = Sample.of(self.proc.pid)
        deadline = s.t + limit
        while time.monotonic() < deadline:
            time.sleep(step)
            s2 = Sample.of(self.proc.pid)
            if s2.cpu_since(s) < 100 * quiet_cores:
                return s
            s = s2
        return s

    def stop(self) -> dict[str, int]:
        """SIGINT (the daemon drains its ring and queues, then prints its summary); the summary's counts."""
        _stop(self.proc, signal.SIGINT, 120)
        rc = self.proc.returncode
        self.proc = None
        self._err.close()
        text = self.stderr()
        m = _SUMMARY.search(text)
        if m is None or rc != 0:
            raise BenchError(f"the daemon exited {rc} without its summary: {self.last_line()}")
        return {k: int(v) for k, v in m.groupdict().items()}

    def kill(self) -> None:
        """Stop it (an interrupted run): SIGINT, SIGKILL if it does not end."""
        _stop(self.proc, signal.SIGINT, 30)
        self.proc = None
        if not self._err.closed:
            self._err.close()


def send(lab: Lab, capture: Path, rate: int, seconds: int, pps_multi: int,
         started: list[subprocess.Popen]) -> tuple[float, int]:
    """tcpreplay from the namespace: (achieved packets/s, packets sent)."""
    if rate == 0:
        pace = ["--topspeed"]
    else:
        # 0: about 2,500 timer ticks a second whatever the rate. One packet a tick, tcpreplay's
        # timing loop tops out near 100-150 k packets/s on this machine; 200 a tick, it sends at
        # 360-370 k (its --topspeed here)
        multi = pps_multi or max(1, rate // 2500)
        pace = ["--pps", str(rate)] + (["--pps-multi", str(multi)] if multi > 1 else [])
    # Preloaded, so that reading the file does not pace the sender; looped (--loop 0) until
    # --duration ends it, mid-loop if need be.
    cmd = ["ip", "netns", "exec", lab.ns, "tcpreplay", "-i", lab.peer, "--preload-pcap", "--no-flow-stats",
           "--loop", "0", "--duration", str(seconds), *pace, str(capture)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         text=True, start_new_session=True)
    started.append(p)
    try:
        out, _ = p.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        p.kill()
        raise BenchError(f"tcpreplay did not finish within {seconds + 120:.0f} s") from None
    actual, rated = _ACTUAL.search(out), _RATED.search(out)
    if p.returncode != 0 or actual is None or rated is None:
        last = [line for line in out.splitlines() if line.strip()]
        raise BenchError(f"tcpreplay failed ({p.returncode}): {last[-1] if last else 'no output'}")
    ok = _SUCCESS.search(out)
    failed = _FAILED.search(out)
    if failed and int(failed.group(1)):
        print(f"  tcpreplay: {failed.group(1)} packets failed to send (longer than the MTU?)", file=sys.stderr)
    return float(rated.group(1)), int(ok.group(1)) if ok else int(actual.group(1))


def measure(lab: Lab, capture: Path, rate: int, a: argparse.Namespace, started: list) -> Row:
    """One daemon, one sender run at ``rate``."""
    with tempfile.TemporaryDirectory(prefix="ids-live-") as tmp:
        d = Daemon(lab.host, Path(tmp), a.config, started)
        try:
            d.wait_ready(a.start_timeout)
            s0 = Sample.of(d.proc.pid)
            achieved, sent = send(lab, capture, rate, a.seconds, a.pps_multi, started)
            s1 = d.wait_quiet(limit=60)
            if d.proc.poll() is not None:
                raise BenchError(f"the daemon exited ({d.proc.returncode}) during the run: {d.last_line()}")
            s = d.stop()
        finally:
            d.kill()
    load = float(Path("/proc/loadavg").read_text().split()[0])
    return Row(offered=rate, achieved=achieved, sent=sent, received=s["received"], processed=s["frames"],
               kernel_drops=s["kernel_drops"], queue_drops=s["queue_drops"], coalesced=s["coalesced"],
               findings_dropped=s["findings_dropped"], predictions=s["predictions"],
               cpu=s1.cpu_since(s0), wait=s1.wait_since(s0), load=load)


def default_captures(packets: int) -> list[tuple[str, Path]]:
    """bench/gen.py's flood-heavy and benign-heavy captures, written once to bench/out."""
    sys.path.insert(0, str(HERE))
    import gen

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    files = []
    for label, writer, seed in (("flood-heavy", gen.write_flood_pcap, 1), ("benign-heavy", gen.write_benign_pcap, 2)):
        p = out / f"{label.split('-')[0]}-v1-{packets}-s{seed}.pcap"  # the names bench/pipeline.py gives them
        if not p.exists():
            writer(p, packets, seed)
        files.append((label, p))
    return files


def _rates(text: str) -> list[int]:
    try:
        rates = [int(float(r)) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"packets/s separated by commas, 0 for top speed, not {text!r}") from None
    if not rates or any(r < 0 for r in rates):
        raise argparse.ArgumentTypeError("at least one rate, none negative")
    return rates


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM/SIGHUP clean up as Ctrl-C does


def run(a: argparse.Namespace, report: Callable[[str, Path, list[Row]], None]) -> None:
    """Every capture at every rate, each capture's rows to ``report``; the lab and every
    process started removed however it ends."""
    captures = ([(Path(c).stem, Path(c)) for c in a.capture] if a.capture else default_captures(a.packets))
    for _, p in captures:
        if not p.is_file():
            raise BenchError(f"{p}: no such capture file")
    lab = Lab(mtu=a.mtu)
    started: list = []
    try:
        for label, p in captures:
            rows = []
            for rate in a.rates:
                rows.append(measure(lab, p, rate, a, started))
            report(label, p, rows)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for x in reversed(started):
            if isinstance(x, Daemon):
                x.kill()
            else:
                _stop(x, signal.SIGTERM, 5)
        lab.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=_rates, default=_rates("50000,100000,200000,500000,0"),
                    help="offered packets/s, comma separated; 0: tcpreplay --topspeed")
    ap.add_argument("--seconds", type=int, default=25, help="seconds of sending per rate (the capture looped)")
    ap.add_argument("--capture", action="append", metavar="FILE",
                    help="capture to send (repeat for several; default: bench/gen.py's flood-heavy and benign-heavy)")
    ap.add_argument("--packets", type=int, default=200_000, help="frames in each default capture")
    ap.add_argument("--config", help="the daemon's config.yml (default: its embedded defaults)")
    ap.add_argument("--pps-multi", type=int, default=0,
                    help="packets tcpreplay sends per timer tick with --pps (1: one at a time; higher rates need more; "
                    "0: the rate / 2,500)")
    ap.add_argument("--mtu", type=int, default=9000, help="MTU of the veth pair (a frame longer than it fails to send)")
    ap.add_argument("--start-timeout", type=float, default=300.0,
                    help="seconds the daemon may take to start (a fresh checkout compiles its numba kernels first)")
    a = ap.parse_args(argv)
    if a.seconds < 1:
        ap.error("--seconds: at least 1")
    # SIGINT too: a shell starts a background job with it ignored, and the run must still
    # be stoppable (and cleaned up) by it
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        preflight()
        print(f"{os.cpu_count()} cores; daemon and tcpreplay not niced; {a.seconds} s per rate", flush=True)
        run(a, lambda label, p, rows: print(f"\n{label} ({p})\n{table(rows)}", flush=True))
    except BenchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; namespace and veth pair removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
