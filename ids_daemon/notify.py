"""systemd readiness (sd_notify): READY=1 once capture and model are up, RELOADING=1
around a model reload, STOPPING=1 at shutdown.

The socket comes from the NOTIFY_SOCKET environment variable: that is systemd's
protocol with a Type=notify service, the one setting read from the environment.
Without it (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one sd_notify message; False when there is no systemd to tell."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(state.encode())
        return True
    except OSError:
        return False
