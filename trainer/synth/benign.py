"""BenignTraffic: a smart-home / IoT LAN going about its business.

Devices keep MQTT sessions to a broker (CONNECT, PUBLISH at QoS 0/1, PINGREQ /
PINGRESP keep-alives, reconnects), answer CoAP GETs from a hub, resolve names at
the gateway and talk HTTPS (TLS-sized records) or HTTP to cloud servers, sync with
NTP, refresh ARP entries; a hub or an admin PC pings devices and polls their web
pages. Rates are tens of packets per second for the whole LAN.

The agents here are also the "victim traffic" of the spoofing attacks.
"""

from __future__ import annotations

import random

from . import payloads as P
from . import wire
from .net import Agent, Net, Tcp, run_agents
from .wire import RA, SYN, ipstr

CLOUD_NAMES = ("a2x9k3-ats.iot.us-east-1.amazonaws.com", "mqtt.tuya.com", "api.smartthings.com",
               "device-metrics-us.amazon.com", "time.google.com", "firmware.tplinkcloud.com", "api.meross.com",
               "iot.ecobee.com", "connectivitycheck.gstatic.com", "api.sonos.com", "dc.services.visualstudio.com",
               "fw.xiaomi.net", "ota.hue.philips.com", "api.netatmo.com", "push.ring.com")
TOPIC_KINDS = ("temp", "power", "motion", "state", "bin")


def _jitter(rng: random.Random, x: float, spread: float = 0.2) -> float:
    return x * rng.uniform(1 - spread, 1 + spread)


def mqtt_agent(net: Net, dev: int, broker: int, t: float, period: float, keepalive: int,
               qos: int, subscribe: bool, n_before_reconnect: int, established: bool = False,
               port: int = 1883) -> Agent:
    """A device's MQTT session(s); ``established``: the capture starts in the middle of the first one."""
    rng = net.rng
    kind = rng.choice(TOPIC_KINDS)
    topic = f"home/{rng.choice(('kitchen', 'hall', 'garage', 'bedroom', 'lab', 'office'))}/{kind}{dev & 255}"
    yield t
    pid = rng.randint(1, 1000)
    while True:
        c = Tcp(net, dev, broker, net.eport(dev), port)
        if established:
            established = False
            last = t - rng.uniform(0, min(keepalive, period))
        else:
            t = c.connect(t)
            t = c.exchange(t + 0.001, P.mqtt_connect(f"dev{dev & 255}-{rng.getrandbits(24):06x}", keepalive,
                                                      *(("iot", "s3cret") if rng.random() < 0.4 else ())),
                           P.MQTT_CONNACK)
            if subscribe:
                pid += 1
                t = c.exchange(t + 0.002, P.mqtt_subscribe(pid, f"cmd/{dev & 255}/#"), P.mqtt_suback(pid))
            last = t
        for _ in range(n_before_reconnect):
            nxt = max(last + _jitter(rng, period), t)
            while last + keepalive < nxt:  # idle: keep-alive ping
                t = max(last + keepalive * rng.uniform(0.97, 1.0), t)
                yield t
                t = c.exchange(t, P.MQTT_PINGREQ, P.MQTT_PINGRESP)
                last = t
            t = nxt
            yield t
            pid = pid % 65535 + 1
            msg = P.mqtt_publish(topic, P.sensor_json(rng, kind), qos, pid)
            t = c.exchange(t, msg, P.mqtt_puback(pid) if qos else None)
            if subscribe and rng.random() < 0.08:  # a command from the broker
                t += rng.uniform(0.05, 0.5)
                c.send(t, False, P.mqtt_publish(f"cmd/{dev & 255}/set", P.sensor_json(rng, "state")))
                t = c.ack(t + c.rtt / 2 + 0.03, True)
            last = t
        t = last + rng.uniform(0.5, 5)
        yield t
        c.send(t, True, P.MQTT_DISCONNECT)
        t = c.close(t + 0.001, True)
        t += rng.uniform(1, 20)
        yield t


def coap_agent(net: Net, hub: int, dev: int, t: float, period: float) -> Agent:
    rng = net.rng
    sport = rng.choice((5683, net.eport(hub)))
    path = rng.choice((("sensors", "temp"), ("light",), ("status",), (".well-known", "core"), ("power",)))
    mid = rng.getrandbits(16)
    while True:
        yield t
        mid = (mid + 1) & 0xFFFF
        tok = rng.randbytes(rng.choice((2, 4, 8)))
        if rng.random() < 0.85:
            net.udp(t, hub, dev, sport, 5683, P.coap(0, 0x01, mid, tok, path))
            tr = t + rng.uniform(0.002, 0.03)
            net.udp(tr, dev, hub, 5683, sport, P.coap(2, 0x45, mid, tok, payload=P.sensor_json(rng, "temp"),
                                                      content_format=50))
        else:  # the device reports on its own (NON, observe)
            net.udp(t, dev, hub, 5683, sport, P.coap(1, 0x45, mid, tok, payload=P.sensor_json(rng, "motion"),
                                                     observe=mid & 0xFFF, content_format=50))
        t += _jitter(rng, period, 0.3)


def dns_lookup(net: Net, t: float, dev: int, resolver: int, name: str, addrs: list[int], qtype: int = 1) -> float:
    rng = net.rng
    qid = rng.getrandbits(16)
    sport = net.eport(dev)
    net.udp(t, dev, resolver, sport, 53, P.dns_query(qid, name, qtype))
    t += rng.uniform(0.0008, 0.04)
    resp = P.dns_response(qid, name, addrs if qtype == 1 else [], rng.choice((60, 300, 3600)), qtype=qtype,
                          cname=f"edge.{name}" if rng.random() < 0.3 else None)
    net.udp(t, resolver, dev, 53, sport, resp)
    return t


def https_session(net: Net, t: float, dev: int, server: int, port: int = 443, records: tuple[int, int] = (1, 6),
                  download: int = 0) -> float:
    """A TLS connection: handshake, ``records`` request/response pairs, a ``download`` of that many bytes,
    close_notify and FIN (or, sometimes, an RST from an impatient client)."""
    rng = net.rng
    c = Tcp(net, dev, server, net.eport(dev), port)
    t = c.connect(t)
    t = c.exchange(t + 0.0005, P.tls_client_hello(rng, rng.choice((517, 252, 302, 583))),
                   P.tls_record(rng, 22, rng.randint(2400, 4800)))
    t = c.exchange(t + 0.001, P.tls_record(rng, 22, rng.choice((93, 126, 80))), P.tls_record(rng, 22, 51))
    for _ in range(rng.randint(*records)):
        t += rng.uniform(0.01, 0.5)
        t = c.exchange(t, P.tls_record(rng, 23, rng.randint(60, 900)), P.tls_record(rng, 23, rng.randint(40, 3000)))
    if download:
        t = c.exchange(t + 0.001, P.tls_record(rng, 23, rng.randint(200, 700)),
                       P.tls_record(rng, 23, min(download, 16000)) * max(1, download // 16000))
    t += rng.uniform(0.05, 2)
    if rng.random() < 0.12:
        return c.reset(t, True, rng.random() < 0.5)
    c.send(t, True, P.tls_record(rng, 21, 26))
    return c.close(t + 0.0002, rng.random() < 0.7)


def http_session(net: Net, t: float, cli: int, server: int, host: str, path: str, body: int,
                 ua: str | None = None, requests: int = 1, port: int = 80) -> float:
    rng = net.rng
    c = Tcp(net, cli, server, net.eport(cli), port)
    t = c.connect(t)
    for _ in range(requests):
        t = c.exchange(t + 0.0005, P.http_get(host, path, ua or rng.choice(P.USER_AGENTS)),
                       P.http_response(rng, body, ctype=rng.choice(("text/html", "application/json", "image/jpeg"))),
                       think=rng.uniform(0.001, 0.02))
        t += rng.uniform(0.01, 0.3)
    return c.close(t, rng.random() < 0.5)


def cloud_agent(net: Net, dev: int, resolver: int, cloud: dict[str, int], t: float, period: float,
                port: int = 443) -> Agent:
    rng = net.rng
    names = rng.sample(sorted(cloud), k=min(len(cloud), rng.randint(1, 3)))
    while True:
        yield t
        name = rng.choice(names)
        t = dns_lookup(net, t, dev, resolver, name, [cloud[name]])
        if rng.random() < 0.3:
            t = dns_lookup(net, t + 0.001, dev, resolver, name, [], qtype=28)
        if rng.random() < 0.8:
            https_session(net, t + 0.001, dev, cloud[name], port)
        else:
            http_session(net, t + 0.001, dev, cloud[name], name, rng.choice(("/fw/version.json", "/generate_204", "/")),
                         rng.choice((0, 120, 400, 1800)))
        t += _jitter(rng, period, 0.5)


def ntp_agent(net: Net, dev: int, server: int, t: float, period: float) -> Agent:
    rng = net.rng
    sport = 123 if rng.random() < 0.5 else net.eport(dev)
    while True:
        yield t
        net.udp(t, dev, server, sport, 123, P.ntp_client(t))
        tr = t + rng.uniform(0.002, 0.06)
        net.udp(tr, server, dev, 123, sport, P.ntp_server(t, tr, rng.randint(1, 3), server))
        t += _jitter(rng, period, 0.1)


def arp_agent(net: Net, dev: int, peer: int, t: float, period: float) -> Agent:
    rng = net.rng
    while True:
        yield t
        unicast = rng.random() < 0.5  # Linux re-validates a stale entry with a unicast request
        if rng.random() < 0.7:
            net.arp(t, 1, dev, peer, l2dst=net.mac(peer) if unicast else None)
            net.arp(t + rng.uniform(0.0002, 0.003), 2, peer, dev)
        else:
            net.arp(t, 1, peer, dev, l2dst=net.mac(dev) if unicast else None)
            net.arp(t + rng.uniform(0.0005, 0.02), 2, dev, peer)
        t += _jitter(rng, period, 0.3)


def ping_agent(net: Net, src: int, targets: list[int], t: float, period: float) -> Agent:
    rng = net.rng
    ident = rng.getrandbits(16)
    seq = 0
    while True:
        yield t
        dst = rng.choice(targets)
        for k in range(rng.randint(1, 4)):
            seq += 1
            pay = (int(t) & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4) + bytes(range(0x10, 0x38))
            net.ping(t + k, src, dst, 8, ident, seq, pay)
            net.ping(t + k + rng.uniform(0.0005, 0.02), dst, src, 0, ident, seq, pay)
        t += _jitter(rng, period, 0.5)


def webpoll_agent(net: Net, cli: int, server: int, t: float, period: float, port: int = 80) -> Agent:
    rng = net.rng
    path = rng.choice(("/status", "/api/v1/state", "/snapshot.jpg", "/cgi-bin/status.cgi"))
    body = rng.randint(150, 9000)
    while True:
        yield t
        http_session(net, t, cli, server, ipstr(server), path, int(_jitter(rng, body, 0.3)),
                     requests=rng.randint(1, 3), port=port)
        t += _jitter(rng, period, 0.4)


# ---- media ------------------------------------------------------------------------------------


def camera_agent(net: Net, cam: int, client: int, t: float, fps: int, kbps: int, port: int, tcp: bool,
                 pmax: int) -> Agent:
    """An IP camera's RTSP session to an NVR / app: OPTIONS, DESCRIBE, SETUP, PLAY, then RTP video
    (UDP, or interleaved in the RTSP connection), RTCP reports every ~5 s and GET_PARAMETER keep-alives."""
    rng = net.rng
    yield t
    c = Tcp(net, client, cam, net.eport(client), port)
    url = f"rtsp://{ipstr(cam)}:{port}/{rng.choice(('stream1', 'h264/ch1/main', 'live/0', 'cam/realmonitor'))}"
    t = c.connect(t)
    cseq = 1
    for method, extra, body in (("OPTIONS", "", b""), ("DESCRIBE", "Accept: application/sdp\r\n", b"v=0\r\n" * 80),
                                ("SETUP", "Transport: RTP/AVP;unicast;client_port=50000-50001\r\n", b""),
                                ("PLAY", "Session: 1\r\nRange: npt=0.000-\r\n", b"")):
        t = c.exchange(t + 0.002, P.rtsp_request(method, url, cseq, extra), P.rtsp_response(cseq, "", body[:rng.randint(
            300, 480)] if body else b""), think=rng.uniform(0.001, 0.03))
        cseq += 1
    cport = net.eport(client) & ~1
    sport = rng.randrange(6970, 60000, 2)
    ssrc = rng.getrandbits(32)
    seq = rng.getrandbits(16)
    ts = rng.getrandbits(32)
    gop = fps * rng.choice((1, 2, 4))
    per_frame = kbps * 125 / fps
    frame = 0
    sent = octets = 0
    next_rtcp, next_keep = t + 5, t + rng.uniform(25, 55)
    while True:
        t += 1 / fps * rng.uniform(0.9, 1.1)
        yield t
        size = int(per_frame * (rng.uniform(4, 8) if frame % gop == 0 else rng.uniform(0.5, 1.3)))
        frame += 1
        ts += 90000 // fps
        chunks = [pmax] * (size // pmax) + ([size % pmax] if size % pmax else [])
        if tcp:  # RTP over the RTSP connection ($ framing)
            data = b"".join(b"$\x00" + (12 + n).to_bytes(2, "big") + P.rtp(96, seq + i, ts, ssrc, bytes(n))
                            for i, n in enumerate(chunks))
            seq += len(chunks)
            c.transfer(t, False, data, gap=rng.uniform(0.0001, 0.0006))
        else:
            tt = t
            for i, n in enumerate(chunks):
                seq += 1
                net.udp(tt, cam, client, sport, cport, P.rtp(96, seq, ts, ssrc, rng.randbytes(n) if i == 0 else
                                                            bytes(n), marker=i == len(chunks) - 1))
                tt += rng.uniform(0.0001, 0.0008)
        sent += len(chunks)
        octets += size
        if t > next_rtcp:
            next_rtcp = t + rng.uniform(4.5, 5.5)
            if not tcp:
                net.udp(t + 0.0003, cam, client, sport + 1, cport + 1, P.rtcp_sr(ssrc, t, ts, sent, octets))
                net.udp(t + rng.uniform(0.001, 0.05), client, cam, cport + 1, sport + 1,
                        P.rtcp_rr(rng.getrandbits(32), ssrc, seq, rng.randint(0, 900)))
        if t > next_keep:
            next_keep = t + rng.uniform(25, 55)
            c.exchange(t + 0.0005, P.rtsp_request("GET_PARAMETER", url, cseq, "Session: 1\r\n"), P.rtsp_response(cseq))
            cseq += 1


def video_call_agent(net: Net, pc: int, t: float) -> Agent:
    """A video call (SRTP over UDP to a media relay, after STUN): audio at 50 pkt/s and video both ways."""
    rng = net.rng
    while True:
        t += rng.uniform(5, 300)
        yield t
        relay = net.public()
        rport = rng.choice((3478, 3480, 19302, 19305, 8801, 10000 + rng.randint(0, 9999)))
        lport = net.eport(pc)
        net.udp(t, pc, relay, lport, rport, P.stun_binding(rng))
        net.udp(t + rng.uniform(0.01, 0.1), relay, pc, rport, lport, P.stun_binding(rng, True, pc, lport))
        end = t + rng.uniform(60, 1800)
        fps = rng.choice((15, 24, 30))
        up, down = rng.choice((300, 600, 1200, 2500)), rng.choice((300, 600, 1200, 2500))
        ssrc = rng.getrandbits(32)
        seq = 0
        ta = tv = t + 0.2
        while t < end:
            t = min(ta, tv)
            yield t
            if ta <= tv:  # audio, both ways
                seq += 1
                net.udp(ta, pc, relay, lport, rport, P.rtp(111, seq, int(ta * 48000), ssrc, bytes(rng.randint(60, 160))))
                net.udp(ta + rng.uniform(0, 0.02), relay, pc, rport, lport, P.rtp(111, seq, int(ta * 48000), ssrc ^ 1,
                                                                               bytes(rng.randint(60, 160))))
                ta += 0.02 * rng.uniform(0.95, 1.05)
            else:
                for who, kbps in ((0, up), (1, down)):
                    size = int(kbps * 125 / fps * rng.uniform(0.4, 1.6))
                    for i in range(max(1, size // 1100)):
                        n = min(size, rng.randint(900, 1160))
                        if who == 0:
                            net.udp(tv + i * 0.0003, pc, relay, lport, rport, P.rtp(96, seq, 0, ssrc, bytes(n)))
                        else:
                            net.udp(tv + 0.005 + i * 0.0004, relay, pc, rport, lport, P.rtp(96, seq, 0, ssrc, bytes(n)))
                tv += 1 / fps * rng.uniform(0.85, 1.15)


# ---- app polling, bursts, browsing ------------------------------------------------------------


def poll_agent(net: Net, app: int, server: int, host: str, t: float, period: float, port: int, tls: bool,
               active: tuple[float, float], idle: tuple[float, float], reuse: float) -> Agent:
    """An app polling one bridge / cloud host: while active, a request every ``period`` s, mostly on a new
    short connection (HTTP or TLS); then idle, then a burst again."""
    rng = net.rng
    path = rng.choice(("/api/%s/lights" % rng.randbytes(8).hex(), "/api/v1/status", "/state", "/clip/v2/resource",
                       "/v1/devices", "/poll"))
    body = rng.randint(300, 6000)
    while True:
        yield t
        stop = t + rng.uniform(*active)
        while t < stop:
            if tls:
                t0 = https_session(net, t, app, server, port, records=(1, 1 if rng.random() > reuse else 8))
            else:
                t0 = http_session(net, t, app, server, host, path, int(_jitter(rng, body, 0.3)),
                                  requests=1 if rng.random() > reuse else rng.randint(2, 10), port=port)
            t = max(t0, t + _jitter(rng, period, 0.3))
            yield t
        t += rng.uniform(*idle)


def browse_agent(net: Net, pc: int, resolver: int, cdn: list[int], t: float, think: float) -> Agent:
    """Desktop / phone browsing: a page is a few DNS lookups, parallel HTTPS connections to many servers
    (some CDN hosts reused), downloads, the odd QUIC flow; then think time."""
    rng = net.rng
    while True:
        yield t
        n = rng.randint(2, 12)
        for i in range(n):
            server = rng.choice(cdn) if rng.random() < 0.4 else net.public()
            ts = dns_lookup(net, t + i * rng.uniform(0.001, 0.05), pc, resolver,
                            f"{rng.choice(('www', 'cdn', 'static', 'api', 'img'))}{rng.randint(1, 99)}."
                            f"{rng.choice(('example', 'news', 'shop', 'video', 'social', 'mail'))}.com", [server])
            if rng.random() < 0.15:  # QUIC
                sp = net.eport(pc)
                for k in range(rng.randint(4, 30)):
                    net.udp(ts + k * 0.004, pc, server, sp, 443, rng.randbytes(1250 if k < 2 else rng.randint(40, 120)))
                    net.udp(ts + k * 0.004 + 0.02, server, pc, 443, sp, rng.randbytes(rng.randint(900, 1350)))
            else:
                https_session(net, ts + 0.001, pc, server, 443, records=(1, 4),
                              download=rng.choice((0, 0, 4000, 20000, 60000, 150000)))
        t += rng.expovariate(1 / think)


def ssh_agent(net: Net, admin: int, server: int, t: float, port: int) -> Agent:
    """An interactive SSH session: key exchange, then keystrokes echoed one by one, command output bursts."""
    rng = net.rng
    while True:
        t += rng.uniform(1, 120)
        yield t
        c = Tcp(net, admin, server, net.eport(admin), port)
        t = c.connect(t)
        c.send(t + 0.004, False, rng.choice(P.SSH_SERVERS).encode())
        t = c.exchange(t + 0.005, b"SSH-2.0-OpenSSH_9.3\r\n", None)
        t = c.exchange(t + 0.001, P.ssh_packet(rng, rng.randint(1200, 1500)), P.ssh_packet(rng, rng.randint(900, 1100)))
        t = c.exchange(t + 0.002, P.ssh_packet(rng, 48), P.ssh_packet(rng, rng.randint(500, 1100)))
        t = c.exchange(t + 0.2, P.ssh_packet(rng, 84), P.ssh_packet(rng, 52))
        for _ in range(rng.randint(3, 40)):  # commands
            for _ in range(rng.randint(2, 15)):  # keystrokes
                t += rng.uniform(0.05, 0.4)
                yield t
                t = c.exchange(t, P.ssh_packet(rng, 36), P.ssh_packet(rng, 36), think=0.0002)
            t = c.exchange(t + 0.1, P.ssh_packet(rng, 36), P.ssh_packet(rng, rng.choice((52, 200, 1400, 8000))))
            t += rng.uniform(0.5, 20)
            yield t
        t = c.close(t, rng.random() < 0.8)


def retry_agent(net: Net, dev: int, server: int, port: int, t: float, period: float) -> Agent:
    """A client whose service is down: SYN answered by RST-ACK, retried after 1-2-4 s, again later;
    UDP to a closed port answered by ICMP port unreachable."""
    rng = net.rng
    while True:
        yield t
        if rng.random() < 0.7:
            sp = net.eport(dev)
            back = 1.0
            for _ in range(rng.randint(1, 4)):
                c = Tcp(net, dev, server, sp, port)
                c.seg(t, True, SYN, options=c.syn_options(t, True))
                c.seg(t + c.rtt / 2, False, RA, options=b"", win=0)
                t += back
                back *= 2
                sp = sp + 1 if sp < 65535 else 49152
        else:
            d = wire.udp(dev, server, net.eport(dev), port, rng.randbytes(rng.randint(20, 200)))
            net.ip(t, dev, server, wire.PROTO_UDP, d)
            net.icmp_error(t + rng.uniform(0.0003, 0.003), server,
                           wire.ipv4(dev, server, wire.PROTO_UDP, d, net.ttl(dev)))
        t += _jitter(rng, period, 0.5)


def p2p_agent(net: Net, pc: int, t: float, port: int, pace: float) -> Agent:
    """A peer-to-peer client (BitTorrent, Gnutella, a game launcher) working through its peer
    list: its OS's connect() to a new peer every ``pace`` seconds or so, on the network's port;
    most peers are gone (RST, or no answer and the SYN retried after 3 and 6 s), some accept and
    exchange a handshake and a little data. With a DHT (BitTorrent's Kademlia, a P2P
    botnet's too) it also queries nodes from one UDP port: hundreds of distinct addresses,
    each on its own random port, a new one nearly every time, a minority answering.
    A scanner's probes look the same per packet; what differs is the pace and that real
    peers answer."""
    rng = net.rng
    peers = [net.public() for _ in range(rng.randint(40, 200))]
    alive = set(rng.sample(range(len(peers)), max(1, int(len(peers) * rng.uniform(0.1, 0.35)))))
    dht = rng.random() < 0.5
    dht_port = port if rng.random() < 0.5 else rng.randint(1025, 65000)
    answering = rng.uniform(0.1, 0.4)
    while True:
        yield t
        i = rng.randrange(len(peers))
        peer = peers[i]
        if dht and rng.random() < 0.3:
            node, node_port = net.public(), rng.randint(1025, 65000)
            net.udp(t, pc, node, dht_port, node_port, rng.randbytes(rng.randint(60, 110)))
            if rng.random() < answering:
                net.udp(t + rng.uniform(0.03, 0.3), node, pc, node_port, dht_port, rng.randbytes(rng.randint(150, 400)))
        else:
            c = Tcp(net, pc, peer, net.eport(pc), port if rng.random() < 0.8 else rng.randint(1025, 65000))
            if i in alive:
                end = c.connect(t)
                end = c.exchange(end + 0.01, rng.randbytes(rng.randint(60, 300)), rng.randbytes(rng.randint(60, 600)))
                if rng.random() < 0.5:
                    end = c.transfer(end + 0.02, False, rng.randbytes(rng.randint(1000, 20000)))
                c.close(end + rng.uniform(0.05, 2.0), rng.random() < 0.5)
            else:
                refused = rng.random() < 0.4
                at, back = t, 3.0  # the retries run beside the next attempts (frames are sorted on write)
                for _ in range(1 if refused else rng.randint(2, 3)):
                    c.seg(at, True, SYN, options=c.syn_options(at, True))
                    if refused:
                        c.seg(at + c.rtt / 2, False, RA, options=b"", win=0)
                    at += back
                    back *= 2
                    c.cseq -= 1
        t += rng.expovariate(1.0 / pace)


# ---- industrial polling -----------------------------------------------------------------------


def modbus_agent(net: Net, hmi: int, plc: int, t: float, period: float, port: int = 502) -> Agent:
    rng = net.rng
    unit = rng.choice((0, 1, 1, 255, rng.randint(2, 30)))
    reads = [(rng.choice((3, 3, 4, 1, 2)), rng.randint(0, 4000), rng.choice((1, 2, 4, 8, 10, 16, 32, 64)))
             for _ in range(rng.randint(1, 4))]
    yield t
    tid = rng.getrandbits(16)
    while True:
        c = Tcp(net, hmi, plc, net.eport(hmi), port, rtt=rng.uniform(0.0005, 0.01))
        t = c.connect(t)
        for _ in range(rng.randint(200, 5000)):
            for fc, addr, count in reads:
                tid += 1
                c.send(t, True, P.modbus_request(tid, unit, fc, addr, count))
                t += c.rtt / 2 + rng.uniform(0.0005, 0.01)
                c.send(t, False, P.modbus_response(rng, tid, unit, fc, count))
                if period > 0.2:
                    c.ack(t + 0.04, True)  # delayed ACK
                t += rng.uniform(0.001, 0.005)
            t += _jitter(rng, period, 0.05)
            yield t
        t = c.close(t, True) + rng.uniform(1, 10)


def s7_agent(net: Net, hmi: int, plc: int, t: float, period: float) -> Agent:
    rng = net.rng
    items = rng.randint(1, 8)
    yield t
    pdu = rng.getrandbits(16)
    while True:
        c = Tcp(net, hmi, plc, net.eport(hmi), 102, rtt=rng.uniform(0.0005, 0.01))
        t = c.connect(t)
        t = c.exchange(t + 0.001, P.S7_COTP_CR, P.S7_COTP_CC)
        t = c.exchange(t + 0.001, P.S7_SETUP, P.S7_SETUP_ACK)
        for _ in range(rng.randint(200, 5000)):
            pdu += 1
            t = c.exchange(t, P.s7_read(pdu, items), P.s7_read_ack(rng, pdu, items), think=rng.uniform(0.002, 0.02))
            t += _jitter(rng, period, 0.05)
            yield t
        t = c.close(t, True) + rng.uniform(1, 10)


def enip_agent(net: Net, scanner: int, adapter: int, t: float, period: float, rpi: float | None) -> Agent:
    """EtherNet/IP: RegisterSession and explicit SendRRData polling on TCP 44818, optionally implicit
    (class 1) cyclic I/O both ways on UDP 2222 every ``rpi`` seconds."""
    rng = net.rng
    yield t
    c = Tcp(net, scanner, adapter, net.eport(scanner), 44818, rtt=rng.uniform(0.0005, 0.005))
    t = c.connect(t)
    session = rng.getrandbits(32)
    t = c.exchange(t + 0.001, P.enip(0x65, 0, b"\x01\x00\x00\x00"), P.enip(0x65, session, b"\x01\x00\x00\x00"))
    size_o, size_t = rng.choice((8, 16, 32, 64, 128)), rng.choice((8, 16, 32, 64, 128, 256))
    conn_o, conn_t = rng.getrandbits(32), rng.getrandbits(32)
    seq = 0
    next_poll = t
    while True:
        if rpi is not None:
            t += rpi * rng.uniform(0.98, 1.02)
            yield t
            seq += 1
            net.udp(t, scanner, adapter, 2222, 2222, P.enip_io(conn_o, seq, bytes(4) + rng.randbytes(size_o)))
            net.udp(t + rng.uniform(0, rpi / 2), adapter, scanner, 2222, 2222, P.enip_io(conn_t, seq,
                                                                                    rng.randbytes(size_t)))
        else:
            t = next_poll
            yield t
        if t >= next_poll:
            c.exchange(t, P.enip(0x6F, session, rng.randbytes(rng.randint(24, 60))),
                       P.enip(0x6F, session, rng.randbytes(rng.randint(20, 120))))
            next_poll = t + _jitter(rng, period, 0.05)


# ---- local chatter: ARP, mDNS, SSDP, DHCP -----------------------------------------------------


def arp_chatter(net: Net, hosts: list[int], t: float, share: float) -> Agent:
    """The ARP a real LAN carries, at about ``share`` of all frames: requests and replies between many
    hosts, the gateway re-resolving its neighbours, unanswered requests for absent hosts (retried),
    ARP probes (sender 0.0.0.0) and gratuitous announcements."""
    rng = net.rng
    t_start = t
    sent = 0
    absent = [net.prefix | rng.randint(2, net.size - 2) for _ in range(6)]
    while True:
        yield t
        if sent < share * len(net.pkts) + 2:
            r = rng.random()
            a = rng.choice(hosts)
            if r < 0.45:  # ordinary resolution (broadcast, or a unicast re-validation), answered
                b = net.gw if rng.random() < 0.5 else rng.choice(hosts)
                if a != b:
                    uni = rng.random() < 0.4
                    net.arp(t, 1, a, b, l2dst=net.mac(b) if uni else None)
                    net.arp(t + rng.uniform(0.0002, 0.01), 2, b, a)
                    sent += 2
            elif r < 0.65:  # the gateway / a host looking for a host that has left: retried, unanswered
                src = net.gw if rng.random() < 0.6 else a
                who = rng.choice(absent)
                if who not in net._mac:
                    for i in range(rng.randint(1, 3)):
                        net.arp(t + i, 1, src, who)
                        sent += 1
            elif r < 0.8:  # probe (RFC 5227) and announcement after (re)joining
                for i in range(rng.randint(1, 3)):
                    net.arp(t + i * rng.uniform(1, 2), 1, 0, a, sha=net.mac(a))
                net.arp(t + 4, 1, a, a)
                net.arp(t + 6, 1, a, a)
                sent += 5
            else:  # gratuitous reply (failover, link up) or request
                if rng.random() < 0.5:
                    net.arp(t, 2, a, a, tha=wire.BROADCAST, l2dst=wire.BROADCAST)
                else:
                    net.arp(t, 1, a, a)
                sent += 1
        elapsed = max(t - t_start, 1.0)
        rate = len(net.pkts) / elapsed * share / max(1 - share, 0.5) / 1.6  # ARP events per second wanted
        behind = sent < share * len(net.pkts)
        t += rng.expovariate(max(rate, 2.0 if behind else 0.5))


def both_sides(net: Net) -> None:
    """The capture a gateway's ``tcpdump -i any`` makes: every IPv4 frame the gateway forwards
    between the LAN and the internet is recorded on both interfaces, the second copy tens of
    microseconds later with the TTL one lower (the same shape as a man in the middle's relay,
    which is why window averages cannot name ARP spoofing)."""
    rng = net.rng
    extra = []
    for t, f in net.pkts:
        if len(f) < 34 or f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[22] <= 1:
            continue
        src, dst = int.from_bytes(f[26:30], "big"), int.from_bytes(f[30:34], "big")
        if net.is_lan(src) == net.is_lan(dst) or (dst >> 28) == 0xE:
            continue
        ip = bytearray(f[14:34])
        ip[8] -= 1
        ip[10:12] = b"\0\0"
        ip[10:12] = wire.checksum(bytes(ip))
        extra.append((t + rng.uniform(0.00002, 0.0002), f[:14] + bytes(ip) + f[34:]))
    net.pkts.extend(extra)


def igmp_agent(net: Net, hosts: list[int], t: float) -> Agent:
    """IGMPv3 membership reports of hosts joining their groups (mDNS, SSDP, LLMNR, CoAP) to
    224.0.0.22, each sent twice as stacks do, early in the capture. (The router's general
    query every 125 s and its answers are left out: a synthetic capture lasts seconds to
    minutes, and a lone query round would stretch it.)"""
    rng = net.rng
    groups = {h: rng.sample(((224 << 24) | 251, (239 << 24) | (255 << 16) | (255 << 8) | 250, (224 << 24) | 252,
                             (224 << 24) | 1 << 8 | 0xBB), rng.randint(1, 3)) for h in hosts}
    yield t
    for h in hosts:
        recs = b"".join(bytes([4, 0, 0, 0]) + g.to_bytes(4, "big") for g in groups[h])  # CHANGE_TO_EXCLUDE: join
        msg = bytes([0x22, 0]) + b"\0\0" + b"\0\0" + len(groups[h]).to_bytes(2, "big") + recs
        msg = msg[:2] + wire.checksum(msg) + msg[4:]
        at = t + rng.uniform(0, 3)
        for d in (0.0, rng.uniform(0.2, 1.0)):
            net.ip(at + d, h, (224 << 24) | 22, 2, msg, ttl=1, tos=0xC0)


def mdns_agent(net: Net, dev: int, responders: list[int], t: float, period: float) -> Agent:
    rng = net.rng
    services = rng.sample(("_googlecast._tcp.local", "_airplay._tcp.local", "_hap._tcp.local", "_raop._tcp.local",
                           "_spotify-connect._tcp.local", "_ipp._tcp.local", "_hue._tcp.local",
                           "_companion-link._tcp.local", "_sonos._tcp.local"), 3)
    group = (224 << 24) | 251
    while True:
        yield t
        qs = rng.sample(services, rng.randint(1, 3))
        net.udp(t, dev, group, 5353, 5353, P.mdns_query(qs), ttl=255)
        for r in rng.sample(responders, min(len(responders), rng.randint(0, 3))):
            net.udp(t + rng.uniform(0.02, 0.12), r, group, 5353, 5353,
                    P.mdns_response(qs[0], f"dev-{r & 0xFFFF:x}.{qs[0]}", r), ttl=255)
        t += rng.expovariate(1 / period)


def ssdp_agent(net: Net, cp: int, devices: list[int], t: float, period: float) -> Agent:
    rng = net.rng
    group = (239 << 24) | (255 << 16) | (255 << 8) | 250
    mttl = rng.choice((1, 2, 4))
    while True:
        yield t
        if rng.random() < 0.5:  # a control point searches; devices answer unicast within MX
            sp = net.eport(cp)
            for i in range(rng.randint(1, 3)):
                net.udp(t + i * 0.1, cp, group, sp, 1900, P.ssdp_msearch(), ttl=mttl)
            for d in rng.sample(devices, min(len(devices), rng.randint(1, 4))):
                net.udp(t + rng.uniform(0.05, 3), d, cp, 1900, sp,
                        P.ssdp_reply(f"http://{ipstr(d)}:{rng.choice((80, 49152, 1400, 8008))}/desc.xml",
                                     "upnp:rootdevice", f"uuid:{rng.getrandbits(64):016x}"))
        else:  # a device announces itself: a burst of NOTIFYs
            d = rng.choice(devices)
            for i, nt in enumerate(("upnp:rootdevice", "urn:schemas-upnp-org:device:MediaRenderer:1",
                                    "urn:schemas-upnp-org:service:AVTransport:1")[:rng.randint(1, 3)]):
                net.udp(t + i * 0.002, d, group, 1900, 1900,
                        P.ssdp_notify(f"http://{ipstr(d)}:49152/desc.xml", nt, f"uuid:{d:08x}"), ttl=mttl)
        t += rng.expovariate(1 / period)


def dhcp_agent(net: Net, dev: int, server: int, t: float, lease: float) -> Agent:
    """DHCP: a full DISCOVER/OFFER/REQUEST/ACK when the device joins (then ARP probes), renewals at half-lease."""
    rng = net.rng
    mac = net.mac(dev)
    bcast = 0xFFFFFFFF
    name = f"{rng.choice(('esp', 'cam', 'plug', 'tv', 'phone', 'laptop'))}-{rng.getrandbits(16):04x}"
    yield t
    while True:
        xid = rng.getrandbits(32)
        if rng.random() < 0.5:
            net.udp(t, 0, bcast, 68, 67, P.dhcp(1, 1, xid, mac, hostname=name), ttl=64, l2src=mac, l2dst=wire.BROADCAST)
            net.udp(t + 0.01, server, bcast, 67, 68, P.dhcp(2, 2, xid, mac, yiaddr=dev, server=server),
                    l2dst=wire.BROADCAST)
            net.udp(t + 0.02, 0, bcast, 68, 67, P.dhcp(1, 3, xid, mac, requested=dev, server=server, hostname=name),
                    ttl=64, l2src=mac, l2dst=wire.BROADCAST)
            net.udp(t + 0.03, server, bcast, 67, 68, P.dhcp(2, 5, xid, mac, yiaddr=dev, server=server),
                    l2dst=wire.BROADCAST)
            for i in range(3):
                net.arp(t + 0.1 + i * rng.uniform(1, 2), 1, 0, dev, sha=mac)
        else:
            net.udp(t, dev, server, 68, 67, P.dhcp(1, 3, xid, mac, ciaddr=dev, hostname=name))
            net.udp(t + rng.uniform(0.002, 0.05), server, dev, 67, 68, P.dhcp(2, 5, xid, mac, ciaddr=dev, yiaddr=dev,
                                                                         server=server))
        t += lease / 2 * rng.uniform(0.9, 1.1)
        yield t


# ---- the site ---------------------------------------------------------------------------------

SITE_KINDS = ("home", "office", "industrial", "cameras", "mixed")
RESOLVERS = ((8 << 24) | (8 << 16) | (8 << 8) | 8, (1 << 24) | (1 << 16) | (1 << 8) | 1, (9 << 24) | (9 << 16) | (9 << 8) | 9,
             (208 << 24) | (67 << 16) | (222 << 8) | 222)


def _port(rng: random.Random, std: int, alts: tuple[int, ...], p: float = 0.25) -> int:
    """A service's port: the standard one, or (with probability p) a site-specific alternative."""
    if rng.random() >= p:
        return std
    return rng.choice(alts + (rng.randint(1025, 65000),))


def benign(net: Net, budget: int, k: int) -> str:
    """Generate about ``budget`` benign frames into ``net``; returns the file's description.

    ``k`` rotates the site's kind (home, office, industrial, cameras, mixed); every kind
    still draws its device mix, rates, ports and which behaviours it has at random.
    """
    rng = net.rng
    kind = SITE_KINDS[k % len(SITE_KINDS)]
    P_ = {"home": dict(cam=0.5, poll=1.0, browse=0.6, call=0.3, ssh=0.2, ics=0.0, p2p=0.4),
          "office": dict(cam=0.2, poll=0.8, browse=1.0, call=0.7, ssh=0.6, ics=0.0, p2p=0.2),
          "industrial": dict(cam=0.3, poll=0.4, browse=0.4, call=0.1, ssh=0.4, ics=1.0, p2p=0.0),
          "cameras": dict(cam=1.0, poll=0.6, browse=0.3, call=0.1, ssh=0.2, ics=0.1, p2p=0.1),
          "mixed": dict(cam=0.5, poll=0.8, browse=0.7, call=0.4, ssh=0.3, ics=0.5, p2p=0.4)}[kind]
    n_dev = rng.randint(6, 30)
    scale = rng.uniform(0.5, 2.0)  # how chatty this site is
    broker_local = rng.random() < 0.7
    broker = net.host(2, 20) if broker_local else net.public()
    net.set_stack(broker, "server")
    hub = net.host(2, 40)
    net.set_stack(hub, "server")
    admin = net.host(2, 250)
    net.set_stack(admin, "desktop")
    devices = net.hosts(n_dev, 2, 250)
    for d in devices:
        net.set_stack(d, "iot")
    phones = net.hosts(rng.randint(1, 5), 2, 250)
    for ph in phones:
        net.set_stack(ph, rng.choice(("phone", "phone", "desktop")))
    r = rng.random()
    resolver = net.gw if r < 0.5 else (net.host(2, 30) if r < 0.7 else rng.choice(RESOLVERS))
    dhcp_server = net.gw if rng.random() < 0.8 else hub
    cloud = {name: net.public() for name in rng.sample(CLOUD_NAMES, rng.randint(4, 9))}
    cdn = [net.public() for _ in range(rng.randint(3, 12))]
    ntp_server = net.public() if rng.random() < 0.7 else net.gw
    mqtt_port = _port(rng, 1883, (8883, 1884, 11883))
    cloud_port = _port(rng, 443, (8443, 8883, 4443), 0.15)
    web_port = _port(rng, 80, (8080, 8000, 8081, 8888), 0.35)
    t0 = net.t0
    what: list[str] = []
    agents: list[Agent] = []
    everyone = devices + phones + [admin, hub] + ([broker] if broker_local else [])
    agents.append(arp_chatter(net, everyone, t0 + rng.uniform(0, 1), rng.uniform(0.07, 0.2)))
    web = [d for d in devices if rng.random() < 0.2] or devices[:1]
    for d in devices:
        if rng.random() < 0.7:
            agents.append(mqtt_agent(net, d, broker, t0 + rng.uniform(0, 5), rng.uniform(2, 60) / scale,
                                     rng.choice((15, 30, 60, 120)), rng.choice((0, 0, 1)), rng.random() < 0.5,
                                     rng.randint(20, 400), established=rng.random() < 0.6, port=mqtt_port))
        if rng.random() < 0.4:
            agents.append(coap_agent(net, hub, d, t0 + rng.uniform(0, 10), rng.uniform(3, 30) / scale))
        if rng.random() < 0.4:
            agents.append(cloud_agent(net, d, resolver, cloud, t0 + rng.uniform(0, 20), rng.uniform(15, 120) / scale,
                                      cloud_port))
        if rng.random() < 0.5:
            agents.append(ntp_agent(net, d, ntp_server, t0 + rng.uniform(0, 15), rng.uniform(60, 600)))
        if rng.random() < 0.15:
            agents.append(dhcp_agent(net, d, dhcp_server, t0 + rng.uniform(0, 120), rng.choice((600, 3600, 86400))))
        if rng.random() < 0.08:
            agents.append(retry_agent(net, d, rng.choice((broker, hub, net.public())),
                                      rng.choice((mqtt_port, 80, 443, 8080, 5683)), t0 + rng.uniform(0, 60),
                                      rng.uniform(5, 60)))
    what.append(f"{n_dev} IoT devices (MQTT :{mqtt_port}, CoAP, cloud HTTPS :{cloud_port}, NTP, DHCP)")
    agents.append(ping_agent(net, hub, devices, t0 + rng.uniform(0, 10), rng.uniform(10, 60) / scale))
    agents.append(webpoll_agent(net, admin, rng.choice(web), t0 + rng.uniform(0, 10), rng.uniform(3, 30) / scale,
                                web_port))
    agents.append(mdns_agent(net, rng.choice(phones + [admin]), devices + phones, t0 + rng.uniform(0, 5),
                             rng.uniform(2, 30)))
    agents.append(ssdp_agent(net, rng.choice(phones + [admin]), devices, t0 + rng.uniform(0, 5), rng.uniform(5, 60)))
    if rng.random() < 0.6:
        agents.append(igmp_agent(net, rng.sample(everyone, max(1, len(everyone) // 3)), t0))
    what.append("ARP/mDNS/SSDP/IGMP chatter")
    if rng.random() < P_["poll"]:  # apps polling a bridge on the LAN and a cloud host: many short connections
        bridge = rng.choice(devices)
        net.set_stack(bridge, "server")
        for ph in rng.sample(phones, rng.randint(1, len(phones))):
            tls = rng.random() < 0.4
            agents.append(poll_agent(net, ph, bridge, ipstr(bridge), t0 + rng.uniform(0, 5), rng.uniform(0.3, 4),
                                     443 if tls else web_port, tls, (20, 400), (5, 300), rng.uniform(0, 0.4)))
        cloud_host = rng.choice(sorted(cloud))
        agents.append(poll_agent(net, rng.choice(devices + [hub]), cloud[cloud_host], cloud_host,
                                 t0 + rng.uniform(0, 5), rng.uniform(1, 15), cloud_port, True, (60, 3600), (1, 60),
                                 0.2))
        what.append("app polling of a bridge and a cloud host (short HTTP/TLS connections, bursts after idle)")
    if rng.random() < P_["cam"]:
        n_cam = rng.randint(1, 3)
        nvr = rng.choice(phones + [hub, admin])
        pmax = rng.choice((1400, 1388, 1300, 1200, 1440))
        for cam in net.hosts(n_cam, 2, 250):
            net.set_stack(cam, "camera")
            agents.append(camera_agent(net, cam, nvr, t0 + rng.uniform(0, 10), rng.choice((10, 15, 20, 25, 30)),
                                       rng.choice((256, 512, 768, 1024, 2048)), _port(rng, 554, (8554, 10554)),
                                       rng.random() < 0.25, pmax))
        what.append(f"{n_cam} camera stream{'s' if n_cam > 1 else ''} (RTSP + RTP/RTCP)")
    if rng.random() < P_["browse"]:
        for pc in [admin] + rng.sample(phones, rng.randint(0, len(phones))):
            agents.append(browse_agent(net, pc, resolver, cdn, t0 + rng.uniform(0, 30), rng.uniform(10, 90)))
        what.append("browsing (DNS, HTTPS to many servers, QUIC)")
    if rng.random() < P_["p2p"]:
        pc = rng.choice(phones + [admin])
        net.set_stack(pc, "desktop")
        port = rng.choice((6881, 6882, 6889, 6346, 4662, 51413, rng.randint(10000, 60000)))
        agents.append(p2p_agent(net, pc, t0 + rng.uniform(0, 10), port, rng.uniform(0.1, 2.0)))
        what.append(f"a P2P client working through its peers on :{port}")
    if rng.random() < P_["call"]:
        agents.append(video_call_agent(net, admin, t0))
        what.append("a video call (STUN, RTP both ways)")
    if rng.random() < P_["ssh"]:
        srv = rng.choice(devices + [hub])
        net.set_stack(srv, "server")
        agents.append(ssh_agent(net, admin, srv, t0, _port(rng, 22, (2222, 2022, 22222))))
        what.append("an SSH session")
    if rng.random() < P_["ics"]:
        plcs = net.hosts(rng.randint(1, 6), 2, 250)
        hmi = rng.choice([admin, hub])
        protos = []
        for i, plc in enumerate(plcs):
            net.set_stack(plc, "plc")
            proto = ("modbus", "s7", "enip")[i % 3] if i else "modbus"
            if rng.random() < 0.3 and i:
                proto = rng.choice(("modbus", "s7", "enip"))
            protos.append(proto)
            per = rng.choice((0.05, 0.1, 0.25, 0.5, 1.0, 2.0))
            if proto == "modbus":
                agents.append(modbus_agent(net, hmi, plc, t0 + rng.uniform(0, 2), per, _port(rng, 502, (5020,), 0.1)))
            elif proto == "s7":
                agents.append(s7_agent(net, hmi, plc, t0 + rng.uniform(0, 2), per))
            else:
                agents.append(enip_agent(net, hmi, plc, t0 + rng.uniform(0, 2), rng.uniform(0.5, 5),
                                         rng.choice((None, 0.05, 0.1, 0.2))))
        what.append(f"industrial polling ({', '.join(sorted(set(protos)))}) of {len(plcs)} PLCs")
    run_agents(net, agents, budget)
    if rng.random() < 0.2:
        both_sides(net)
        what.append("captured on the gateway's two interfaces (tcpdump -i any: forwarded frames twice)")
    dur = max(t for t, _ in net.pkts) - min(t for t, _ in net.pkts) if net.pkts else 0.0
    return (f"benign {kind} site {net.cidr} (gateway {ipstr(net.gw)}, up to {net.max_hops} hops, loss "
            f"{net.loss:.1%}): {'; '.join(what)}; MQTT broker {ipstr(broker)}{'' if broker_local else ' (cloud)'}, "
            f"DNS {ipstr(resolver)}; activity x{scale:.2f}, ~{len(net.pkts) / max(dur, 1e-9):.0f} pkt/s over "
            f"{dur:.0f} s")
