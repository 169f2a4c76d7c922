"""Application payloads: MQTT, CoAP, DNS, NTP, TLS records, HTTP, telnet and SSH messages.

Only as faithful as the header features need (sizes, ports, flags) plus enough
structure that Wireshark dissects them sensibly.
"""

from __future__ import annotations

import random
import struct

# ---- MQTT 3.1.1 -------------------------------------------------------------------------------


def _mqtt_len(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def mqtt_connect(client_id: str, keepalive: int, user: str | None = None, password: str | None = None) -> bytes:
    flags = 0x02 | (0x80 if user else 0) | (0x40 if password else 0)
    var = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = var + _mqtt_str(client_id) + (_mqtt_str(user) if user else b"") + (_mqtt_str(password) if password else b"")
    return b"\x10" + _mqtt_len(len(body)) + body


MQTT_CONNACK = b"\x20\x02\x00\x00"
MQTT_PINGREQ = b"\xc0\x00"
MQTT_PINGRESP = b"\xd0\x00"
MQTT_DISCONNECT = b"\xe0\x00"


def mqtt_subscribe(pid: int, topic: str) -> bytes:
    body = struct.pack("!H", pid) + _mqtt_str(topic) + b"\x01"
    return b"\x82" + _mqtt_len(len(body)) + body


def mqtt_suback(pid: int) -> bytes:
    return b"\x90\x03" + struct.pack("!H", pid) + b"\x01"


def mqtt_publish(topic: str, payload: bytes, qos: int = 0, pid: int = 1) -> bytes:
    body = _mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _mqtt_len(len(body)) + body


def mqtt_puback(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", pid)


def sensor_json(rng: random.Random, kind: str) -> bytes:
    if kind == "temp":
        return b'{"t":%.2f,"h":%.1f,"bat":%d}' % (rng.uniform(17, 29), rng.uniform(25, 70), rng.randint(20, 100))
    if kind == "power":
        return b'{"power":%.1f,"voltage":%.1f,"current":%.3f,"total":%.3f}' % (
            rng.uniform(0, 2000), rng.uniform(225, 240), rng.uniform(0, 9), rng.uniform(0, 900))
    if kind == "motion":
        return b'{"occupancy":%s,"illuminance":%d,"linkquality":%d}' % (
            rng.choice((b"true", b"false")), rng.randint(0, 900), rng.randint(30, 255))
    if kind == "state":
        return rng.choice((b"ON", b"OFF", b"online", b"1", b"0"))
    return rng.randbytes(rng.randint(8, 120))  # binary telemetry


# ---- CoAP (RFC 7252) --------------------------------------------------------------------------


def coap(mtype: int, code: int, mid: int, token: bytes, path: tuple[str, ...] = (), payload: bytes = b"",
         content_format: int | None = None, observe: int | None = None) -> bytes:
    """A CoAP message: type 0 CON, 1 NON, 2 ACK; code e.g. 0x01 GET, 0x45 2.05 Content."""
    out = bytearray([0x40 | (mtype << 4) | len(token), code]) + struct.pack("!H", mid) + token
    last = 0
    opts: list[tuple[int, bytes]] = []
    if observe is not None:
        opts.append((6, observe.to_bytes(3, "big").lstrip(b"\0") or b""))
    opts += [(11, p.encode()) for p in path]
    if content_format is not None:
        opts.append((12, bytes([content_format]) if content_format else b""))
    for num, val in opts:
        delta, last = num - last, num
        ln = len(val)
        out.append((min(delta, 13) << 4) | min(ln, 13))
        if delta >= 13:
            out.append(delta - 13)
        if ln >= 13:
            out.append(ln - 13)
        out += val
    if payload:
        out += b"\xff" + payload
    return bytes(out)


# ---- DNS --------------------------------------------------------------------------------------


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(qid: int, name: str, addrs: list[int], ttl: int = 300, qtype: int = 1,
                 cname: str | None = None, rcode: int = 0) -> bytes:
    """A response with A records for ``addrs`` (PTR / NXDOMAIN when there are none), optionally after a CNAME."""
    answers = b""
    count = 0
    ref = 0xC00C
    if cname:
        target = _qname(cname)
        answers += struct.pack("!HHHIH", ref, 5, 1, ttl, len(target)) + target
        ref = 0xC000 | (12 + len(_qname(name)) + 4 + 12)
        count += 1
    for a in addrs:
        if qtype == 12:
            host = _qname(f"host-{a & 255}.lan")
            answers += struct.pack("!HHHIH", ref, 12, 1, ttl, len(host)) + host
        else:
            answers += struct.pack("!HHHIHI", ref, 1, 1, ttl, 4, a)
        count += 1
    flags = 0x8180 | rcode
    return (struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)
            + answers)


def ptr_name(ip: int) -> str:
    return f"{ip & 255}.{(ip >> 8) & 255}.{(ip >> 16) & 255}.{ip >> 24}.in-addr.arpa"


# ---- NTP --------------------------------------------------------------------------------------

NTP_EPOCH = 2208988800


def _ntp_ts(t: float) -> bytes:
    sec = int(t) + NTP_EPOCH
    frac = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", sec & 0xFFFFFFFF, frac)


def ntp_client(t: float) -> bytes:
    return bytes([0x23, 0, 6, 0xE9]) + bytes(40) + _ntp_ts(t)


def ntp_server(t_req: float, t: float, stratum: int = 2, ref: int = 0) -> bytes:
    return (bytes([0x24, stratum, 6, 0xE9]) + struct.pack("!II", 0x0000_0A00, 0x0000_0C00) + ref.to_bytes(4, "big")
            + _ntp_ts(t - 30) + _ntp_ts(t_req) + _ntp_ts(t - 0.0001) + _ntp_ts(t))


# ---- TLS --------------------------------------------------------------------------------------


def tls_record(rng: random.Random, ctype: int, n: int) -> bytes:
    """A TLS 1.2 record of ``n`` payload bytes (random, as encrypted data looks)."""
    return bytes([ctype, 3, 3]) + struct.pack("!H", n) + rng.randbytes(n)


def tls_client_hello(rng: random.Random, size: int) -> bytes:
    body = b"\x01" + (size - 4).to_bytes(3, "big") + b"\x03\x03" + rng.randbytes(size - 6)
    return b"\x16\x03\x01" + struct.pack("!H", len(body)) + body


# ---- HTTP -------------------------------------------------------------------------------------

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/117.0",
    "python-requests/2.31.0", "curl/7.88.1", "Wget/1.21.3", "ESP8266HTTPClient", "okhttp/4.11.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
)


def http_get(host: str, path: str, ua: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
            f"Connection: keep-alive\r\n{extra}\r\n").encode()


def http_response(rng: random.Random, body_len: int, status: str = "200 OK", ctype: str = "text/html",
                  server: str = "lighttpd/1.4.59") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nServer: {server}\r\nContent-Type: {ctype}\r\nContent-Length: {body_len}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode()
    if ctype.startswith("text") or ctype.endswith("json"):
        body = (b"<html><body>" + b"status ok " * (body_len // 10 + 1))[:body_len]
    else:
        body = rng.randbytes(body_len)
    return head + body


# ---- telnet and SSH ---------------------------------------------------------------------------

TELNET_DO = b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27"
TELNET_WILL = b"\xff\xfb\x18\xff\xfb\x20\xff\xfb\x23\xff\xfb\x27"
TELNET_SB = b"\xff\xfa\x20\x01\xff\xf0\xff\xfa\x23\x01\xff\xf0\xff\xfa\x27\x01\xff\xf0\xff\xfa\x18\x01\xff\xf0"
TELNET_SB_REPLY = (b"\xff\xfa\x20\x0038400,38400\xff\xf0\xff\xfa\x23\x00kali:0\xff\xf0\xff\xfa\x27\x00\xff\xf0"
                   b"\xff\xfa\x18\x00XTERM-256COLOR\xff\xf0")
TELNET_OPTS = b"\xff\xfb\x03\xff\xfd\x01\xff\xfb\x01\xff\xfd\x03"

SSH_SERVERS = ("SSH-2.0-dropbear_2019.78\r\n", "SSH-2.0-dropbear_2020.81\r\n",
               "SSH-2.0-OpenSSH_8.4p1 Raspbian-5+deb11u1\r\n", "SSH-2.0-OpenSSH_7.4\r\n")
SSH_CLIENTS = ("SSH-2.0-libssh_0.9.6\r\n", "SSH-2.0-libssh_0.10.4\r\n", "SSH-2.0-Go\r\n", "SSH-2.0-paramiko_3.1.0\r\n")

USERNAMES = ("root", "admin", "user", "pi", "ubnt", "support", "guest", "default", "service", "test", "operator")
PASSWORDS = ("123456", "admin", "password", "12345", "root", "xc3511", "vizxv", "888888", "default", "1234",
             "raspberry", "54321", "juantech", "7ujMko0admin", "hi3518", "klv123", "Zte521", "anko", "changeme",
             "qwerty", "letmein", "111111", "dreambox", "realtek", "00000000", "system", "toor", "ikwb")


def ssh_packet(rng: random.Random, n: int) -> bytes:
    """An SSH binary packet of about ``n`` bytes (length, padding length, random body)."""
    n = max(n, 16)
    return struct.pack("!I", n - 4) + bytes([rng.randint(4, 16)]) + rng.randbytes(n - 5)


# ---- media: RTSP, RTP, RTCP, STUN -------------------------------------------------------------


def rtsp_request(method: str, url: str, cseq: int, extra: str = "") -> bytes:
    return f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: LibVLC/3.0.18\r\n{extra}\r\n".encode()


def rtsp_response(cseq: int, extra: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}{length}\r\n".encode() + body


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def rtcp_sr(ssrc: int, t: float, rtp_ts: int, packets: int, octets: int) -> bytes:
    ntp = _ntp_ts(t)
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + ntp + struct.pack("!III", rtp_ts & 0xFFFFFFFF, packets, octets)


def rtcp_rr(ssrc: int, src: int, highest: int, jitter: int) -> bytes:
    return struct.pack("!BBHIIIIIII", 0x81, 201, 7, ssrc, src, 0, highest & 0xFFFFFFFF, jitter, 0, 0)


def stun_binding(rng: random.Random, response: bool = False, addr: int = 0, port: int = 0) -> bytes:
    attrs = b""
    if response:
        attrs = struct.pack("!HHBBHI", 0x0020, 8, 0, 1, port ^ 0x2112, addr ^ 0x2112A442)
    return struct.pack("!HHI", 0x0101 if response else 0x0001, len(attrs), 0x2112A442) + rng.randbytes(12) + attrs


# ---- industrial: Modbus/TCP, S7comm, EtherNet/IP ----------------------------------------------


def modbus_request(tid: int, unit: int, fc: int, addr: int, count: int) -> bytes:
    return struct.pack("!HHHBBHH", tid & 0xFFFF, 0, 6, unit, fc, addr, count)


def modbus_response(rng: random.Random, tid: int, unit: int, fc: int, count: int) -> bytes:
    data = rng.randbytes(2 * count) if fc in (3, 4) else rng.randbytes((count + 7) // 8)
    return struct.pack("!HHHBBB", tid & 0xFFFF, 0, 3 + len(data), unit, fc, len(data)) + data


def tpkt(payload: bytes) -> bytes:
    return struct.pack("!BBH", 3, 0, 4 + len(payload)) + payload


S7_COTP_CR = tpkt(b"\x11\xe0\x00\x00\x00\x01\x00\xc0\x01\x0a\xc1\x02\x01\x00\xc2\x02\x01\x02")
S7_COTP_CC = tpkt(b"\x11\xd0\x00\x01\x00\x01\x00\xc0\x01\x0a\xc1\x02\x01\x00\xc2\x02\x01\x02")
S7_SETUP = tpkt(b"\x02\xf0\x80\x32\x01\x00\x00\x00\x00\x00\x08\x00\x00\xf0\x00\x00\x01\x00\x01\x01\xe0")
S7_SETUP_ACK = tpkt(b"\x02\xf0\x80\x32\x03\x00\x00\x00\x00\x00\x08\x00\x00\x00\x00\xf0\x00\x00\x01\x00\x01\x00\xf0")


def s7_read(pdu: int, items: int) -> bytes:
    item = b"\x12\x0a\x10\x02\x00\x10\x00\x01\x84\x00\x00\x00"
    par = bytes([0x04, items]) + item * items
    return tpkt(b"\x02\xf0\x80\x32\x01\x00\x00" + struct.pack("!HHH", pdu & 0xFFFF, len(par), 0) + par)


def s7_read_ack(rng: random.Random, pdu: int, items: int) -> bytes:
    data = b"".join(b"\xff\x04\x00\x80" + rng.randbytes(16) for _ in range(items))
    return tpkt(b"\x02\xf0\x80\x32\x03\x00\x00" + struct.pack("!HHH", pdu & 0xFFFF, 2, len(data)) + b"\x00\x00"
                + b"\x04" + bytes([items]) + data)


def enip(command: int, session: int, data: bytes = b"") -> bytes:
    return struct.pack("<HHII8sI", command, len(data), session, 0, b"\0" * 8, 0) + data


def enip_io(conn: int, seq: int, data: bytes) -> bytes:
    """A class-1 implicit I/O datagram (UDP 2222): sequenced address item + connected data item."""
    return (struct.pack("<HHHII", 2, 0x8002, 8, conn, seq) + struct.pack("<HH", 0x00B1, 2 + len(data))
            + struct.pack("<H", seq & 0xFFFF) + data)


# ---- local discovery: mDNS, SSDP, DHCP --------------------------------------------------------


def mdns_query(names: list[str], qtype: int = 12) -> bytes:
    out = struct.pack("!HHHHHH", 0, 0, len(names), 0, 0, 0)
    for n in names:
        out += _qname(n) + struct.pack("!HH", qtype, 1)
    return out


def mdns_response(name: str, target: str, addr: int, ttl: int = 120) -> bytes:
    tgt = _qname(target)
    return (struct.pack("!HHHHHH", 0, 0x8400, 0, 2, 0, 0) + _qname(name)
            + struct.pack("!HHIH", 12, 1, 4500, len(tgt)) + tgt
            + tgt + struct.pack("!HHIHI", 1, 0x8001, ttl, 4, addr))


def ssdp_msearch(st: str = "ssdp:all", mx: int = 3) -> bytes:
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\n"
            f"ST: {st}\r\nUSER-AGENT: Android/13 UPnP/1.1 App/1.0\r\n\r\n").encode()


def ssdp_notify(location: str, nt: str, usn: str) -> bytes:
    return (f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
            f"LOCATION: {location}\r\nNT: {nt}\r\nNTS: ssdp:alive\r\nSERVER: Linux/4.9 UPnP/1.0 device/1.0\r\n"
            f"USN: {usn}::{nt}\r\n\r\n").encode()


def ssdp_reply(location: str, st: str, usn: str) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\nLOCATION: {location}\r\n"
            f"SERVER: Linux/4.9 UPnP/1.0 device/1.0\r\nST: {st}\r\nUSN: {usn}::{st}\r\n\r\n").encode()


def dhcp(op: int, msg_type: int, xid: int, mac: bytes, ciaddr: int = 0, yiaddr: int = 0, server: int = 0,
         requested: int = 0, hostname: str = "") -> bytes:
    """A BOOTP/DHCP message (op 1 request, 2 reply) with the message-type option and a few others."""
    out = struct.pack("!BBBBIHHIIII", op, 1, 6, 0, xid, 0, 0x8000 if op == 1 and not ciaddr else 0, ciaddr, yiaddr,
                      0, 0)
    out += mac + bytes(10) + bytes(64) + bytes(128) + b"\x63\x82\x53\x63"
    opts = bytes([53, 1, msg_type])
    if server:
        opts += bytes([54, 4]) + server.to_bytes(4, "big")
    if requested:
        opts += bytes([50, 4]) + requested.to_bytes(4, "big")
    if hostname:
        opts += bytes([12, len(hostname)]) + hostname.encode()
    if op == 1:
        opts += b"\x37\x07\x01\x03\x06\x0c\x0f\x1c\x2a"
    else:
        opts += b"\x33\x04\x00\x01\x51\x80\x01\x04\xff\xff\xff\x00"
    return out + opts + b"\xff"


def http_post(host: str, path: str, ua: str, body_len: int, ctype: str = "application/json") -> bytes:
    body = (b'{"id":1,"data":"' + b"x" * max(0, body_len - 20) + b'"}')[:max(body_len, 2)]
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
