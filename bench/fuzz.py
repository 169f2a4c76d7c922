"""Fuzz the capture reader: mutated pcap/pcapng files through `features` and `replay`.

    PYTHONPATH=. .venv/bin/python bench/fuzz.py [--files 2000] [--seed 1] [--commands features,replay]

Seeds are the small real captures in tests/data/pcaps and files written by tests/pcapgen.py
(classic pcap in both byte orders and with ns timestamps, pcapng in both byte orders with
two interfaces, simple packet blocks and options, a gzip and a zstd one). Each mutated file is a seed with one to
four changes: bit flips, bytes or 32-bit words set to boundary values, a record or block
header's length/type/interface field overwritten, a cut, a slice deleted, repeated or
inserted, a short block appended to a pcapng file, its if_tsresol set to any value.
Every file goes through the command line in-process (``ids_daemon.cli.main``,
exactly what ``ids-daemon features -r F`` and ``ids-daemon replay -r F`` run), so the
model is imported once. A run passes when nothing raised past ``main``, nothing printed a
traceback, no run outlived ``--timeout`` seconds, and every run that exited non-zero
printed exactly one ``ids-daemon: error:`` line naming the file.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import struct
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.pcapgen import _block, ethernet, ipv4_udp, write_pcap, write_pcapng  # noqa: E402

_BOUNDARY8 = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x13, 0x3F)
_BOUNDARY32 = (0, 1, 4, 8, 12, 16, 20, 28, 32, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFF, 0x10000, 1 << 24,
               (1 << 24) + 1, 0x0A0D0D0A, 0xA1B2C3D4)


@dataclass
class FuzzResult:
    """What a fuzz run saw (lists hold ``(file, command, detail)``)."""

    files: int = 0
    runs: int = 0
    accepted: int = 0  # exit 0
    rejected: int = 0  # exit 1 with a one-line error naming the file
    tracebacks: list[tuple[str, str, str]] = field(default_factory=list)
    hangs: list[tuple[str, str, str]] = field(default_factory=list)
    unnamed: list[tuple[str, str, str]] = field(default_factory=list)  # rejected without naming the file
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # error kinds (file name removed) and counts


def seeds(tmp: Path) -> list[tuple[str, bytes]]:
    """Seed captures: the repository's small real captures plus generated ones of every format."""
    out = [(p.name, p.read_bytes()) for p in sorted((ROOT / "tests" / "data" / "pcaps").glob("*"))
           if p.suffix in (".pcap", ".pcapng")]
    frames = []
    for k in range(12):
        frames.append((1_700_000_000.0 + k * 0.01, ethernet(ipv4_udp(src=f"10.0.0.{k + 1}", sport=1000 + k,
                                                                      dport=53 if k % 2 else 80))))
    gen = tmp / "seed"
    out.append(("gen.pcap", write_pcap(gen, frames).read_bytes()))
    out.append(("gen-be-ns.pcap", write_pcap(gen, frames, big_endian=True, nanos=True).read_bytes()))
    out.append(("gen.pcapng", write_pcapng(gen, frames, linktypes=(1, 101), iface_of=[0, 1] * 6,
                                           ).read_bytes()))
    out.append(("gen-be.pcapng", write_pcapng(gen, frames, big_endian=True, tsresol=9).read_bytes()))
    # simple packet blocks after the EPBs (no timestamp, interface 0)
    ng = write_pcapng(gen, frames[:4]).read_bytes()
    spb = b"".join(_block("<", 3, struct.pack("<I", len(f)) + f) for _, f in frames[4:])
    out.append(("gen-spb.pcapng", ng + spb))
    gen.unlink()
    # compressed captures: a damaged stream must end in one named error too
    import gzip

    import zstandard

    by_name = dict(out)
    out.append(("gen.pcap.gz", gzip.compress(by_name["gen.pcap"])))
    out.append(("gen.pcapng.zst", zstandard.ZstdCompressor().compress(by_name["gen.pcapng"])))
    return out


def _offsets(data: bytes) -> list[int]:
    """Where the record headers (pcap) or blocks (pcapng) of an unmutated seed start."""
    offs: list[int] = []
    if len(data) < 24:
        return offs
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        p = 0
        while p + 12 <= len(data) and len(offs) < 4096:
            offs.append(p)
            blen = struct.unpack_from(e + "I", data, p + 4)[0]
            if blen < 12:
                break
            p += blen
        return offs
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    p = 24
    while p + 16 <= len(data) and len(offs) < 4096:
        offs.append(p)
        p += 16 + struct.unpack_from(e + "I", data, p + 8)[0]
    return offs


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random changes to ``data``."""
    offs = _offsets(data)
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        op = rng.randrange(11)
        n = len(b)
        if op == 0:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # a byte to a boundary value
            b[rng.randrange(n)] = rng.choice(_BOUNDARY8)
        elif op == 2 and n >= 4:  # an aligned word to a boundary value
            i = rng.randrange(n // 4) * 4
            b[i:i + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(_BOUNDARY32))
        elif op in (3, 4) and offs:  # a record/block header field (length, type, interface)
            o = rng.choice(offs)
            i = o + rng.choice((0, 4, 8, 12)) if op == 3 else o + 4
            if i + 4 <= n:
                b[i:i + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(_BOUNDARY32 + (rng.randrange(1 << 32),)))
        elif op == 5:  # cut
            del b[rng.randrange(n):]
        elif op == 6:  # delete a slice
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, 64)]
        elif op == 7:  # repeat a slice (a block or record twice)
            i = rng.randrange(n)
            b[i:i] = b[i:i + rng.randint(1, 256)]
        elif op == 8:  # insert random bytes
            i = rng.randrange(n)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 9 and b[:4] == b"\x0a\x0d\x0d\x0a":  # a short block at the end (IDB, SPB, EPB, ...)
            e = "<" if b[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            size = rng.choice((12, 16, 20, 24, 28, 32))
            b += struct.pack(e + "II", rng.choice((1, 2, 3, 5, 6)), size) + bytes(size - 12) + struct.pack(e + "I", size)
        elif op == 10:  # a pcapng timestamp resolution (if_tsresol) to any value
            i = b.find(b"\x09\x00\x01\x00")
            i = i if i >= 0 else b.find(b"\x00\x09\x00\x01")
            if i >= 0 and i + 4 < n:
                b[i + 4] = rng.randrange(256)
    return bytes(b)


class _Hang(BaseException):
    pass


def _alarm(*_: object) -> None:
    raise _Hang()


def cli(args: list[str], timeout_s: float) -> tuple[int | None, str, str]:
    """Run ``ids-daemon ARGS`` in-process: (exit status or None, stderr, traceback or 'hang' or '')."""
    from ids_daemon import cli as cli_mod

    err, out = io.StringIO(), io.TextIOWrapper(io.BytesIO())  # the JSON-lines sink writes stdout.buffer
    saved_argv = sys.argv
    saved_sig = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    sys.argv = ["ids-daemon", *args]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    rc: int | None = 0
    problem = ""
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli_mod.main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _Hang:
        rc, problem = None, "hang"
    except BaseException:  # noqa: BLE001 - exactly what the fuzzer looks for
        rc, problem = None, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        for s, h in saved_sig.items():
            signal.signal(s, h)
        sys.argv = saved_argv
    text = err.getvalue()
    if not problem and "Traceback" in text:
        problem = text
    return rc, text, problem


def run(n_files: int = 2000, seed: int = 1, out_dir: Path | None = None, timeout_s: float = 30.0,
        commands: tuple[str, ...] = ("features", "replay"), progress: bool = False) -> FuzzResult:
    """Write ``n_files`` mutated captures under ``out_dir`` and run each command on each."""
    import tempfile

    tmp = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="ids-fuzz-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "config.yml"
    # a small key table (the default one is allocated per run, and these files are tiny) and no
    # metrics endpoint (its shutdown waits out a 0.5 s poll per run)
    cfg.write_text("meter:\n  max_flows: 4096\nmetrics:\n  listen: null\n")
    rng = random.Random(seed)
    pool = seeds(tmp)
    res = FuzzResult(seconds={c: 0.0 for c in commands})
    for k in range(n_files):
        name, data = pool[k % len(pool)]
        path = tmp / f"fuzz-{k:05d}-{name}"
        path.write_bytes(mutate(data, rng))
        res.files += 1
        bad = len(res.tracebacks) + len(res.hangs) + len(res.unnamed)
        for cmd in commands:
            args = [cmd, "-r", str(path), "-o", os.devnull, "-c", str(cfg)]
            args += ["-q"] if cmd == "features" else ["--device", "cpu"]
            t = time.perf_counter()
            rc, text, problem = cli(args, timeout_s)
            res.seconds[cmd] += time.perf_counter() - t
            res.runs += 1
            who = (str(path), cmd)
            if problem == "hang":
                res.hangs.append((*who, f"over {timeout_s} s"))
            elif problem:
                res.tracebacks.append((*who, problem.strip().splitlines()[-1]))
            elif rc == 0:
                res.accepted += 1
            else:
                lines = [ln for ln in text.splitlines() if ln.startswith("ids-daemon: error:")]
                if len(lines) != 1 or str(path) not in lines[0]:
                    res.unnamed.append((*who, text.strip()[-300:]))
                else:
                    res.rejected += 1
                    kind = lines[0].replace(str(path), "FILE")
                    kind = " ".join(w if not any(ch.isdigit() for ch in w) else "#" for w in kind.split())
                    res.errors[kind] = res.errors.get(kind, 0) + 1
        if progress and (k + 1) % 100 == 0:
            print(f"  {k + 1} files, {res.runs} runs: {len(res.tracebacks)} tracebacks, {len(res.hangs)} hangs, "
                  f"{len(res.unnamed)} unnamed", file=sys.stderr, flush=True)
        if len(res.tracebacks) + len(res.hangs) + len(res.unnamed) == bad:
            path.unlink()  # only the files that failed are kept, to reproduce with
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a run may take before it counts as a hang")
    ap.add_argument("--commands", default="features,replay")
    ap.add_argument("--out", type=Path, default=None, help="directory for the mutated files (default: a temp dir)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = run(a.files, a.seed, a.out, a.timeout, tuple(a.commands.split(",")), progress=True)
    print(f"fuzz: {res.files} mutated files x {len(res.seconds)} commands = {res.runs} runs in "
          f"{time.perf_counter() - t0:.0f} s ({', '.join(f'{c} {s:.0f} s' for c, s in res.seconds.items())})")
    print(f"  accepted (exit 0): {res.accepted}; rejected with one error line naming the file: {res.rejected}")
    print(f"  tracebacks: {len(res.tracebacks)}; hangs: {len(res.hangs)}; rejected without naming the file: "
          f"{len(res.unnamed)}")
    for kind, n in sorted(res.errors.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {n:6d}  {kind}")
    for what, items in (("traceback", res.tracebacks), ("hang", res.hangs), ("unnamed", res.unnamed)):
        for f, c, d in items[:10]:
            print(f"  {what}: {c} {f}: {d}")
    return 0 if not (res.tracebacks or res.hangs or res.unnamed) else 1


if __name__ == "__main__":
    sys.exit(main())
