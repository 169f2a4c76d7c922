"""Dropping privileges once the capture socket is open.

Opening an AF_PACKET socket needs CAP_NET_RAW; reading from it afterwards needs
nothing. Started as root, the daemon opens its socket, then switches to an
unprivileged user and keeps no capability, before it reads a single packet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd

from .errors import IdsError

PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(IdsError):
    """The requested privilege drop cannot be done."""


def capabilities() -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of this process (from /proc/self/status)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Cap"):
                k, v = line.split(":")
                out[k] = int(v.strip(), 16)
    return out


def drop_privileges(user: str) -> None:
    """Become ``user`` (its uid, primary gid, no supplementary groups) with no capabilities.

    From root, setuid to a non-zero uid clears the permitted, effective and ambient
    capability sets; no_new_privs keeps an exec from gaining any back. Verified
    afterwards: a process still holding a capability raises `PrivilegeError`.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"capture.user {user!r}: no such user") from None
    if os.geteuid() != 0:
        if os.geteuid() == pw.pw_uid:
            return  # already that user (e.g. started by systemd with User=)
        raise PrivilegeError(f"capture.user {user!r} needs the daemon to start as root "
                             f"(it runs as uid {os.geteuid()})")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    caps = capabilities()
    if caps.get("CapEff") or caps.get("CapPrm") or caps.get("CapAmb"):
        raise PrivilegeError(f"capabilities remain after switching to {user!r}: {caps}")
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:
        raise PrivilegeError(f"could not switch to {user!r}")
