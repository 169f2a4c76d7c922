"""Capture filters: tcpdump-style expressions → classic BPF run by the kernel.

libpcap's compiler is used through ctypes (``pcap_open_dead`` + ``pcap_compile``), so
the expression language is exactly tcpdump's and no capture handle is opened. The
program is attached to a socket with ``SO_ATTACH_FILTER``; its accept instruction
returns the snap length, so the kernel also truncates every frame it keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CaptureError

SOL_SOCKET = 1
SO_ATTACH_FILTER = 26
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
BPF_RET_K = 0x06  # BPF_RET | BPF_K
MAX_SNAPLEN = 262144
# pcap_open_dead takes a DLT_* value; the LINKTYPE_* values of files differ from the
# platform's DLT only for raw IP (LINKTYPE_RAW 101 = DLT_RAW 12 on Linux).
_LINKTYPE_TO_DLT = {101: 12}
_INSN = struct.Struct("=HBBI")  # struct sock_filter / struct bpf_insn: code, jt, jf, k


class _BpfInsn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    """struct bpf_program (libpcap) and struct sock_fprog (kernel) share this layout."""

    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn))]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass(frozen=True)
class BpfProgram:
    """A classic BPF program: ``code`` holds the raw 8-byte instructions."""

    code: bytes
    expression: str = ""
    snaplen: int = MAX_SNAPLEN

    def __len__(self) -> int:
        return len(self.code) // _INSN.size

    def __bytes__(self) -> bytes:
        return self.code

    def instructions(self) -> list[tuple[int, int, int, int]]:
        """The program as ``(code, jt, jf, k)`` tuples (the format of ``tcpdump -dd``)."""
        return [_INSN.unpack_from(self.code, i) for i in range(0, len(self.code), _INSN.size)]


_lib: ctypes.CDLL | None = None


def _libpcap() -> ctypes.CDLL:
    """Load libpcap once; a missing library is a user-facing error, not an OSError."""
    global _lib
    if _lib is not None:
        return _lib
    names = [n for n in (ctypes.util.find_library("pcap"), "libpcap.so.1", "libpcap.so.0.8", "libpcap.so") if n]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        raise CaptureError(
            "capture filters need libpcap, which was not found: install it "
            "(Debian/Ubuntu package libpcap0.8, Fedora libpcap)"
        )
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_BpfProgram)]
    lib.pcap_freecode.restype = None
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_close.restype = None
    lib.bpf_filter.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.bpf_filter.restype = ctypes.c_uint
    _lib = lib
    return lib


def compile_filter(expr: str, linktype: int = 1, snaplen: int = MAX_SNAPLEN) -> BpfProgram:
    """Compile a tcpdump-style filter expression for frames of ``linktype`` (LINKTYPE_*).

    The program accepts a frame by returning ``snaplen``, so the kernel keeps at most
    that many bytes of it. Raises `CaptureError` (one line, libpcap's own message)
    for an invalid expression, or when libpcap is not installed.
    """
    lib = _libpcap()
    snaplen = max(1, min(int(snaplen), MAX_SNAPLEN))
    handle = lib.pcap_open_dead(_LINKTYPE_TO_DLT.get(int(linktype), int(linktype)), snaplen)
    if not handle:
        raise CaptureError(f"libpcap cannot compile filters for link type {linktype}")
    try:
        prog = _BpfProgram()
        # optimize=1 as tcpdump does; the netmask only matters for "ip broadcast".
        if lib.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
            raw = lib.pcap_geterr(handle) or b"unknown error"
            msg = " ".join(raw.decode(errors="replace").split())
            # libpcap >= 1.10 prefixes the parser's message; the user only needs the reason
            msg = msg.removeprefix("can't parse filter expression: ")
            raise CaptureError(f"invalid capture filter {expr!r}: {msg}")
        try:
            code = ctypes.string_at(prog.bf_insns, prog.bf_len * _INSN.size)
        finally:
            lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)
    return BpfProgram(code=code, expression=expr, snaplen=snaplen)


def match_frames(program: BpfProgram, buf: np.ndarray, off: np.ndarray, cap: np.ndarray,
                 wire: np.ndarray) -> np.ndarray:
    """Run ``program`` over frames held in ``buf`` (a uint8 array) at ``off`` with captured
    length ``cap``; True where it accepts the frame.

    Offline use (labelling captures by a tcpdump filter): libpcap's own interpreter
    (``bpf_filter``), one call per frame, so the result is exactly tcpdump's.
    """
    lib = _libpcap()
    insns = ctypes.create_string_buffer(program.code, len(program.code))
    base = buf.ctypes.data
    fn = lib.bpf_filter
    pc = ctypes.addressof(insns)
    out = np.zeros(len(off), dtype=bool)
    for i, (o, c, w) in enumerate(zip(off.tolist(), cap.tolist(), wire.tolist())):
        out[i] = fn(pc, base + o, w, c) != 0
    return out


def snaplen_program(snaplen: int) -> BpfProgram:
    """The one-instruction program ``ret #snaplen``: accept every frame, truncated.

    Used when no filter is given, so frames are still cut in the kernel (and no
    libpcap is needed)."""
    snaplen = max(1, min(int(snaplen), MAX_SNAPLEN))
    return BpfProgram(code=_INSN.pack(BPF_RET_K, 0, 0, snaplen), expression="", snaplen=snaplen)


def attach_filter(sock: socket.socket | int, program: BpfProgram | bytes) -> None:
    """Attach a classic BPF program to a socket (``SO_ATTACH_FILTER``).

    Raises `CaptureError` if the kernel rejects it (e.g. an invalid or too long program).
    """
    code = bytes(program)
    count = len(code) // _INSN.size
    if count == 0 or len(code) % _INSN.size or count > 0xFFFF:
        raise CaptureError(f"invalid BPF program ({len(code)} bytes)")
    # The kernel copies the instructions from this pointer during setsockopt: keep the
    # buffer referenced (``insns``) until the call returns.
    insns = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(count, ctypes.addressof(insns))
    # A bare descriptor is borrowed through a socket object that is detached, not closed.
    s = socket.socket(fileno=sock) if isinstance(sock, int) else sock
    try:
        s.setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    except OSError as e:
        raise CaptureError(f"the kernel rejected the capture filter: {e.strerror}") from None
    finally:
        if s is not sock:
            s.detach()
        del insns
