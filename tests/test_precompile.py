"""`ids-daemon compile` (run by scripts/setup.sh) leaves nothing for a replay to compile."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ids_daemon.cli import sample_pcap

# A replay of the bundled capture as `ids-daemon replay` runs it, counting numba's compilations
# (the event fires on a cache miss only; a kernel loaded from the cache raises none).
_COUNTING_REPLAY = textwrap.dedent("""
    import sys
    from numba.core import event

    compiled = []

    class Count(event.Listener):
        def on_start(self, ev):
            d = ev.data["dispatcher"]
            compiled.append(d.py_func.__module__ + "." + d.py_func.__name__)

        def on_end(self, ev):
            pass

    event.register("numba:compile", Count())
    from ids_daemon.cli import app
    try:
        app(["replay", "-r", sys.argv[1], "-o", sys.argv[2], "--metrics-listen", "off"])
    except SystemExit as e:
        assert not e.code, e.code
    print("COMPILED", len(compiled), sorted(set(compiled)))
""")


def test_a_replay_after_compile_compiles_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ids_daemon.cli", "compile"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "numba kernels cached" in done.stderr
    assert "failed" not in done.stderr

    out = tmp_path / "p.jsonl"
    run = subprocess.run([sys.executable, "-c", _COUNTING_REPLAY, str(sample_pcap()), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("COMPILED"))
    assert line == "COMPILED 0 []", line
    assert len(out.read_text().splitlines()) > 100  # the replay ran its predictions through
