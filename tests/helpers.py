"""Helpers every test module shares: the CLI under test and a free loopback port."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

# the console scripts of the interpreter running the tests (the virtualenv's), so a
# test runs the code of this checkout (PYTHONPATH) and never one installed elsewhere
EXE = str(Path(sys.executable).parent / "ids-daemon")
TRAINER = str(Path(sys.executable).parent / "ids-trainer")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing listens on right now (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
