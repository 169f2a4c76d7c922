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
from .net import Agent, Net, Tcp, ephemeral, run_agents
from .wire import ipstr

CLOUD_NAMES = ("a2x9k3-ats.iot.us-east-1.amazonaws.com", "mqtt.tuya.com", "api.smartthings.com",
               "device-metrics-us.amazon.com", "time.google.com", "firmware.tplinkcloud.com", "api.meross.com",
               "iot.ecobee.com", "connectivitycheck.gstatic.com", "api.sonos.com", "dc.services.visualstudio.com",
               "fw.xiaomi.net", "ota.hue.philips.com", "api.netatmo.com", "push.ring.com")
TOPIC_KINDS = ("temp", "power", "motion", "state", "bin")


def _jitter(rng: random.Random, x: float, spread: float = 0.2) -> float:
    return x * rng.uniform(1 - spread, 1 + spread)


def mqtt_agent(net: Net, dev: int, broker: int, t: float, period: float, keepalive: int,
               qos: int, subscribe: bool, n_before_reconnect: int, established: bool = False) -> Agent:
    """A device's MQTT session(s); ``established``: the capture starts in the middle of the first one."""
    rng = net.rng
    kind = rng.choice(TOPIC_KINDS)
    topic = f"home/{rng.choice(('kitchen', 'hall', 'garage', 'bedroom', 'lab', 'office'))}/{kind}{dev & 255}"
    yield t
    pid = rng.randint(1, 1000)
    while True:
        c = Tcp(net, dev, broker, ephemeral(rng), 1883)
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
    sport = rng.choice((5683, ephemeral(rng)))
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
    sport = ephemeral(rng)
    net.udp(t, dev, resolver, sport, 53, P.dns_query(qid, name, qtype))
    t += rng.uniform(0.0008, 0.04)
    resp = P.dns_response(qid, name, addrs if qtype == 1 else [], rng.choice((60, 300, 3600)), qtype=qtype,
                          cname=f"edge.{name}" if rng.random() < 0.3 else None)
    net.udp(t, resolver, dev, 53, sport, resp)
    return t


def https_session(net: Net, t: float, dev: int, server: int, port: int = 443) -> float:
    rng = net.rng
    c = Tcp(net, dev, server, ephemeral(rng), port)
    t = c.connect(t)
    t = c.exchange(t + 0.0005, P.tls_client_hello(rng, rng.choice((517, 252, 302, 583))),
                   P.tls_record(rng, 22, rng.randint(2400, 4800)))
    t = c.exchange(t + 0.001, P.tls_record(rng, 22, rng.choice((93, 126, 80))), P.tls_record(rng, 22, 51))
    for _ in range(rng.randint(1, 6)):
        t += rng.uniform(0.01, 0.5)
        t = c.exchange(t, P.tls_record(rng, 23, rng.randint(60, 900)), P.tls_record(rng, 23, rng.randint(40, 3000)))
    t += rng.uniform(0.05, 2)
    c.send(t, True, P.tls_record(rng, 21, 26))
    return c.close(t + 0.0002, rng.random() < 0.7)


def http_session(net: Net, t: float, cli: int, server: int, host: str, path: str, body: int,
                 ua: str | None = None, requests: int = 1) -> float:
    rng = net.rng
    c = Tcp(net, cli, server, ephemeral(rng), 80)
    t = c.connect(t)
    for _ in range(requests):
        t = c.exchange(t + 0.0005, P.http_get(host, path, ua or rng.choice(P.USER_AGENTS)),
                       P.http_response(rng, body, ctype=rng.choice(("text/html", "application/json", "image/jpeg"))),
                       think=rng.uniform(0.001, 0.02))
        t += rng.uniform(0.01, 0.3)
    return c.close(t, rng.random() < 0.5)


def cloud_agent(net: Net, dev: int, resolver: int, cloud: dict[str, int], t: float, period: float) -> Agent:
    rng = net.rng
    names = rng.sample(sorted(cloud), k=min(len(cloud), rng.randint(1, 3)))
    while True:
        yield t
        name = rng.choice(names)
        t = dns_lookup(net, t, dev, resolver, name, [cloud[name]])
        if rng.random() < 0.3:
            t = dns_lookup(net, t + 0.001, dev, resolver, name, [], qtype=28)
        if rng.random() < 0.8:
            https_session(net, t + 0.001, dev, cloud[name])
        else:
            http_session(net, t + 0.001, dev, cloud[name], name, rng.choice(("/fw/version.json", "/generate_204", "/")),
                         rng.choice((0, 120, 400, 1800)))
        t += _jitter(rng, period, 0.5)


def ntp_agent(net: Net, dev: int, server: int, t: float, period: float) -> Agent:
    rng = net.rng
    sport = 123 if rng.random() < 0.5 else ephemeral(rng)
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


def webpoll_agent(net: Net, cli: int, server: int, t: float, period: float) -> Agent:
    rng = net.rng
    path = rng.choice(("/status", "/api/v1/state", "/snapshot.jpg", "/cgi-bin/status.cgi"))
    body = rng.randint(150, 9000)
    while True:
        yield t
        http_session(net, t, cli, server, ipstr(server), path, int(_jitter(rng, body, 0.3)),
                     requests=rng.randint(1, 3))
        t += _jitter(rng, period, 0.4)


def benign(net: Net, budget: int, k: int) -> str:
    """Generate about ``budget`` benign frames into ``net``; returns the file's description."""
    rng = net.rng
    n_dev = rng.randint(8, 30)
    broker_local = k % 3 != 2
    broker = net.host(2, 9) if broker_local else net.public()
    hub = net.host(2, 20)
    admin = net.host(100, 200)
    net.set_ttl(admin, rng.choice((128, 64)))
    devices = net.hosts(n_dev, 10, 250)
    cloud = {name: net.public() for name in rng.sample(CLOUD_NAMES, rng.randint(4, 9))}
    ntp_server = net.public() if rng.random() < 0.7 else net.gw
    scale = rng.uniform(0.6, 1.6)  # how chatty this home is
    t0 = net.t0
    agents: list[Agent] = []
    web = [d for d in devices if rng.random() < 0.2] or devices[:1]
    for d in devices:
        if rng.random() < 0.75:
            agents.append(mqtt_agent(net, d, broker, t0 + rng.uniform(0, 5), rng.uniform(2, 60) / scale,
                                     rng.choice((15, 30, 60)), rng.choice((0, 0, 1)), rng.random() < 0.5,
                                     rng.randint(20, 400), established=rng.random() < 0.6))
        if rng.random() < 0.5:
            agents.append(coap_agent(net, hub, d, t0 + rng.uniform(0, 10), rng.uniform(3, 30) / scale))
        if rng.random() < 0.5:
            agents.append(cloud_agent(net, d, net.gw, cloud, t0 + rng.uniform(0, 20), rng.uniform(15, 120) / scale))
        agents.append(ntp_agent(net, d, ntp_server, t0 + rng.uniform(0, 15), rng.uniform(60, 600)))  # sync at boot
        agents.append(arp_agent(net, d, net.gw, t0 + rng.uniform(0, 30), rng.uniform(30, 120)))
    agents.append(ping_agent(net, hub, devices, t0 + rng.uniform(0, 10), rng.uniform(10, 60) / scale))
    agents.append(webpoll_agent(net, admin, rng.choice(web), t0 + rng.uniform(0, 10), rng.uniform(3, 30) / scale))
    agents.append(cloud_agent(net, admin, net.gw, cloud, t0 + rng.uniform(0, 5), rng.uniform(5, 30) / scale))
    run_agents(net, agents, budget)
    dur = max(t for t, _ in net.pkts) - min(t for t, _ in net.pkts) if net.pkts else 0.0
    return (f"benign IoT LAN 192.168.{net.subnet}.0/24: {n_dev} devices, MQTT broker {ipstr(broker)}"
            f"{'' if broker_local else ' (cloud)'}, CoAP hub {ipstr(hub)}, admin PC {ipstr(admin)}, "
            f"{len(cloud)} cloud services over DNS + HTTPS/HTTP, NTP {ipstr(ntp_server)}, ARP refreshes, pings; "
            f"activity x{scale:.2f}, ~{len(net.pkts) / max(dur, 1e-9):.0f} pkt/s over {dur:.0f} s")
