"""deploy/: the compose file, the Kubernetes manifests, the Dockerfile, the topic script
and the production config.

No image is built and no container runs here (no container engine in the test
environment). What is checked: every YAML file parses; the production config (and the
ConfigMap's copy of it) validates against this repo's `Config`; every `ids-daemon`
subcommand and flag the files use exists (from `ids-daemon CMD --help`); the Kafka
listeners, published ports and bootstrap addresses line up; no metrics port is used
while the config has no `metrics` section; create-topics.sh passes `bash -n`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from ids_daemon.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yml"
K8S = DEPLOY / "k8s" / "daemonset.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
PROD = DEPLOY / "config.production.yml"
TOPICS = DEPLOY / "create-topics.sh"
METRICS_PORT = 9108


def _ids_daemon() -> list[str]:
    exe = Path(sys.executable).with_name("ids-daemon")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ids-daemon")
    return [found] if found else [sys.executable, "-m", "ids_daemon.cli"]


@lru_cache(maxsize=None)
def _help(cmd: str) -> str:
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    out = subprocess.run(_ids_daemon() + [cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, f"ids-daemon {cmd} --help failed: {out.stderr}"
    return out.stdout


def _flags(cmd: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", _help(cmd)))


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s() -> list[dict]:
    return [d for d in yaml.safe_load_all(K8S.read_text()) if d]


def _daemonset() -> dict:
    return next(d for d in _k8s() if d["kind"] == "DaemonSet")


def _k8s_alerts() -> dict:
    """The Deployment whose container runs `ids-daemon alerts`."""
    deps = [d for d in _k8s() if d["kind"] == "Deployment"
            and d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "alerts"]
    assert len(deps) == 1, "the Kubernetes manifest has no alert consumer"
    return deps[0]


def _k8s_configmap(name: str) -> dict:
    return next(d for d in _k8s() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)


def _load_text_config(text: str, name: str) -> Config:
    copy = DEPLOY.parent / ".pytest_cache" / name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(text)
    return load_config(copy)


def _dockerfile_cmd() -> list[str]:
    import json

    m = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    assert m, "Dockerfile has no exec-form CMD"
    return json.loads(m.group(1))


def _invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `ids-daemon`) for every daemon invocation in deploy/."""
    out = [("Dockerfile CMD", _dockerfile_cmd())]
    for name, svc in _compose()["services"].items():
        if svc.get("image", "").startswith("ids-daemon") or "build" in svc:
            out.append((f"compose {name}", list(svc["command"])))
    for c in _daemonset()["spec"]["template"]["spec"]["containers"]:
        out.append((f"k8s {c['name']}", list(c["args"])))
    for c in _k8s_alerts()["spec"]["template"]["spec"]["containers"]:
        out.append((f"k8s {c['name']}", list(c["args"])))
    return out


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_yaml_files_parse():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert {COMPOSE, K8S, PROD} <= set(files)
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), f


def test_production_config_validates():
    cfg = load_config(PROD)
    assert cfg.kafka.spool_dir == "/var/lib/ids-daemon/spool"
    assert cfg.kafka.bootstrap
    assert any(o.type == "syslog" for o in cfg.alerts.outputs)


def test_production_config_covers_every_option():
    """Every field of the model (recursively, bar the alert outputs' union) is set in the file."""
    data = yaml.safe_load(PROD.read_text())

    def walk(model_cls, node, path):
        for name, field in model_cls.model_fields.items():
            assert name in node, f"{path}{name} missing from {PROD.name}"
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, Config.__mro__[1]) or hasattr(sub, "model_fields"):
                walk(sub, node[name], f"{path}{name}.")

    walk(Config, data, "")


def _configmap_config() -> str:
    cm = next(d for d in _k8s() if d["kind"] == "ConfigMap" and "config.yml" in d.get("data", {}))
    return cm["data"]["config.yml"]


def test_configmap_matches_production_config():
    """The ConfigMap is the production config; only metrics.listen may differ (node address)."""
    cm = yaml.safe_load(_configmap_config())
    prod = yaml.safe_load(PROD.read_text())
    if "metrics" in Config.model_fields:
        cm.get("metrics", {}).pop("listen", None)
        prod.get("metrics", {}).pop("listen", None)
    assert cm == prod
    tmp = DEPLOY.parent / ".pytest_cache"
    tmp.mkdir(exist_ok=True)
    copy = tmp / "configmap-config.yml"
    copy.write_text(_configmap_config())
    load_config(copy)


def test_subcommands_and_flags_exist():
    invocations = _invocations()
    assert {w.split()[0] for w, _ in invocations} == {"Dockerfile", "compose", "k8s"}
    for where, argv in invocations:
        cmd = argv[0]
        assert cmd in _top_commands(), f"{where}: no subcommand {cmd!r}"
        known = _flags(cmd)
        for a in argv[1:]:
            if a.startswith("-"):
                flag = a.split("=", 1)[0]
                assert flag in known, f"{where}: `ids-daemon {cmd}` has no option {flag} (known: {sorted(known)})"
        if "--config" in argv:
            assert _opt(argv, "--config") == "/etc/ids-daemon/config.yml", where


@lru_cache(maxsize=None)
def _top_commands() -> set[str]:
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    out = subprocess.run(_ids_daemon() + ["--help"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"^\W*([a-z][\w-]*)\s{2,}", out.stdout.split("Commands", 1)[1], re.M))


def test_config_mounted_where_the_commands_read_it():
    svcs = _compose()["services"]
    for name in ("daemon", "alerts"):
        assert "./config.production.yml:/etc/ids-daemon/config.yml:ro" in svcs[name]["volumes"], name
    ds = _daemonset()["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in ds["containers"][0]["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/ids-daemon"
    cm_name = next(v for v in ds["volumes"] if v["name"] == "config")["configMap"]["name"]
    cm = next(d for d in _k8s() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    assert "config.yml" in cm["data"]
    # The spool directory of the config lies on a writable mount in both.
    spool = load_config(PROD).kafka.spool_dir
    assert any(spool.startswith(m["mountPath"] + "/") for m in mounts.values() if not m.get("readOnly"))
    assert any(v.split(":")[1] == "/var/lib/ids-daemon" for v in svcs["daemon"]["volumes"])


def test_kafka_ports_line_up():
    svcs = _compose()["services"]
    env = svcs["kafka"]["environment"]
    listeners = dict(re.match(r"(\w+)://[^:]*:(\d+)$", x).groups() for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(re.match(r"(\w+)://(.+)$", x).groups() for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith(":" + listeners["CONTROLLER"])
    # published host ports -> container ports, loopback only
    published = {}
    for p in svcs["kafka"]["ports"]:
        ip, host, container = p.split(":")
        assert ip == "127.0.0.1", p
        published[host] = container

    # The daemon (host network) reaches Kafka through a published port whose listener
    # advertises that same host address.
    daemon = svcs["daemon"]
    assert daemon["network_mode"] == "host"
    boot = _opt(daemon["command"], "--kafka-bootstrap")
    host, port = boot.split(":")
    assert host == "127.0.0.1" and port in published
    lname = next(n for n, p in listeners.items() if p == published[port])
    assert advertised[lname] == boot

    # The alert consumer runs on the host network too (its syslog goes to the host's
    # loopback) and so uses the same host listener.
    assert svcs["alerts"]["network_mode"] == "host"
    assert _opt(svcs["alerts"]["command"], "--kafka-bootstrap") == boot
    # Compose-network clients use an advertised in-network listener.
    internal = set(advertised.values())
    assert svcs["topics"]["environment"]["BOOTSTRAP"] in internal
    assert load_config(PROD).kafka.bootstrap in internal
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    # topic names agree
    topic = load_config(PROD).kafka.topic
    for where, argv in _invocations():
        if "--topic" in argv:
            assert _opt(argv, "--topic") in (topic, "$(KAFKA_TOPIC)"), where
    assert f"create ids.predictions" in TOPICS.read_text()


def test_metrics_port_only_with_a_metrics_section():
    has_metrics = "metrics" in Config.model_fields
    texts = {p.name: p.read_text() for p in (COMPOSE, K8S, DOCKERFILE, PROD)}
    svcs = _compose()["services"]
    ports = [str(p) for s in svcs.values() for p in s.get("ports", [])]
    container = _daemonset()["spec"]["template"]["spec"]["containers"][0]
    cports = container.get("ports", [])
    if not has_metrics:
        assert not any(str(METRICS_PORT) in p for p in ports) and cports == []
        for name, text in texts.items():
            assert not re.search(r"^\s*metrics:", text, re.M), f"{name} configures metrics, which Config lacks"
            assert str(METRICS_PORT) not in text, name
        return
    # compose: the daemon is on the host network and listens on the host's loopback; no
    # service publishes the metrics port anywhere (host networking takes no mapping).
    listen = load_config(PROD).metrics.listen
    assert listen == f"127.0.0.1:{METRICS_PORT}"
    assert svcs["daemon"]["network_mode"] == "host"
    assert not any(str(METRICS_PORT) in p for p in ports)
    for s in svcs.values():
        assert not s.get("expose") or s.get("network_mode") != "host"
    # k8s: the declared port is the one the ConfigMap's config listens on.
    copy = DEPLOY.parent / ".pytest_cache" / "configmap-metrics.yml"
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(_configmap_config())
    k8s_listen = load_config(copy).metrics.listen
    port = int(k8s_listen.rpartition(":")[2])
    assert [(p["name"], p["containerPort"], p.get("hostPort", port)) for p in cports] == [("metrics", port, port)]
    ann = _daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port)


def test_daemonset_privileges():
    spec = _daemonset()["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    c = spec["containers"][0]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert c["resources"]["limits"]["memory"] == "2Gi"
    env = {e["name"]: e for e in c["env"]}
    assert "IFACE" in env and "$(IFACE)" in c["args"]
    cache = env["NUMBA_CACHE_DIR"]["value"]
    assert any(cache.startswith(m["mountPath"]) for m in c["volumeMounts"] if not m.get("readOnly"))
    svc = _compose()["services"]["daemon"]
    assert svc["cap_drop"] == ["ALL"] and svc["cap_add"] == ["NET_RAW"]


def test_dockerfile_references_real_paths():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert "libpcap0.8" in text and "torch==2.13.0" in text
    assert re.search(r'^ENTRYPOINT \["ids-daemon"\]\s*$', text, re.M)
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        *srcs, _dest = line.split()
        for src in srcs:
            assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
    compose_build = _compose()["services"]["daemon"]["build"]
    assert (DEPLOY / compose_build["context"] / compose_build["dockerfile"]).resolve() == DOCKERFILE


def test_create_topics_script():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    subprocess.run([bash, "-n", str(TOPICS)], check=True)
    text = TOPICS.read_text()
    for needle in ("--if-not-exists", "PARTITIONS:-12", "RF:-1", "604800000", "cleanup.policy=delete",
                   "compression.type=producer", "ids.actions", "ids.predictions.dlq"):
        assert needle in text, needle
    svc = _compose()["services"]["topics"]
    assert "./create-topics.sh:/create-topics.sh:ro" in svc["volumes"]


_LOOPBACK = re.compile(r"^(127\.|localhost$|::1$|\[::1\]$)")


def _syslog_hosts(cfg: Config) -> list[str]:
    return [o.host for o in cfg.alerts.outputs if o.type == "syslog"]


def test_alert_consumers_send_syslog_off_their_own_loopback():
    """A syslog output on 127.0.0.1 reaches a collector only where the consumer shares the
    host's network namespace (where the host's syslog daemon listens); in a container or
    pod of its own, UDP to its loopback "succeeds" into nothing."""
    svcs = _compose()["services"]
    alerts = [s for s in svcs.values() if s.get("command", [None])[0] == "alerts"]
    assert alerts
    for svc in alerts:
        cfg = load_config(PROD)
        hosts = _syslog_hosts(cfg)
        assert hosts, "the production config sends alerts to syslog"
        if any(_LOOPBACK.match(h) for h in hosts):
            assert svc.get("network_mode") == "host", svc
    spec = _k8s_alerts()["spec"]["template"]["spec"]
    assert not spec.get("hostNetwork")
    vol = next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["name"]
    cfg = _load_text_config(_k8s_configmap(vol)["data"]["config.yml"], "alerts-configmap.yml")
    hosts = _syslog_hosts(cfg)
    assert hosts and not any(_LOOPBACK.match(h) for h in hosts), hosts
    # otherwise the production alert policy
    prod = load_config(PROD).alerts.model_dump()
    mine = cfg.alerts.model_dump()
    for o in prod["outputs"] + mine["outputs"]:
        if o["type"] == "syslog":
            o.pop("host")
    assert mine == prod
    assert (cfg.log_level, cfg.log_format) == (load_config(PROD).log_level, load_config(PROD).log_format)


def test_k8s_alert_consumer():
    dep = _k8s_alerts()
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == _daemonset()["spec"]["template"]["spec"]["containers"][0]["image"]
    # the image's unprivileged user, nothing else
    uid = int(re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text()).group(1))
    assert spec["securityContext"]["runAsUser"] == uid and spec["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    argv = c["args"]
    assert _opt(argv, "--group") == _opt(_compose()["services"]["alerts"]["command"], "--group")
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in c["env"]}
    params = _k8s_configmap("ids-daemon-params")["data"]
    for flag, var in (("--kafka-bootstrap", "KAFKA_BOOTSTRAP"), ("--topic", "KAFKA_TOPIC")):
        assert _opt(argv, flag) == f"$({var})" and env[var] == {"name": "ids-daemon-params", "key": var}
        assert params[var]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == "/etc/ids-daemon" and _opt(argv, "--config") == "/etc/ids-daemon/config.yml"
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_container_daemon_writes_its_spool(tmp_path):
    """The compose daemon runs as uid 0 with NET_RAW only, so without CAP_DAC_OVERRIDE it
    writes where ownership lets it. The state directory, owned and moded as the
    Dockerfile leaves it (and a fresh volume copies), must take its spool: a replay whose
    broker is away spools every prediction there and exits 0."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed: cannot drop the capabilities as Docker does")
    if os.geteuid() != 0:
        pytest.skip("runs the daemon as uid 0 without CAP_DAC_OVERRIDE: needs root")
    text = DOCKERFILE.read_text()
    m = re.search(r"chown -R (\w+):(\w+) /var/lib/ids-daemon", text)
    assert m, "the Dockerfile does not set the owner of /var/lib/ids-daemon"
    uid = int(re.search(r"useradd .*--uid (\d+)", text).group(1))
    assert m.group(1) == "ids" and m.group(2) == "0", m.group(0)  # group 0: the capturing uid 0's group
    assert re.search(r"chmod -R g=u /var/lib/ids-daemon", text)
    state = tmp_path / "var-lib-ids-daemon"
    spool = state / "spool"
    spool.mkdir(parents=True)
    for d in (state, spool):
        os.chown(d, uid, 0)
        d.chmod(0o775)  # g=u of the 0755 mkdir leaves
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"kafka:\n  spool_dir: {spool}\n  close_timeout_s: 1.0\n  request_timeout_ms: 500\n"
                   f"  stall_timeout_s: 0.3\nmetrics:\n  listen: null\n")
    sample = ROOT / "ids_daemon" / "data" / "sample.pcap"
    # Docker's uid 0 with --cap-drop ALL --cap-add NET_RAW: the bounding set is all it keeps.
    argv = [setpriv, "--bounding-set", "-all,+net_raw", "--inh-caps", "-all", *_ids_daemon(), "replay",
            "-r", str(sample), "--sink", "kafka", "--kafka-bootstrap", "127.0.0.1:9", "--topic", "t",
            "--config", str(cfg)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    # everything waits in the spool; a replay that delivered nothing anywhere exits 1 (saying so)
    assert r.returncode == 1 and "nothing was delivered to any sink" in r.stderr, r.stderr
    m = re.search(r"kafka: 0 delivered to \S+ topic t, (\d+) kept in the spool", r.stderr)
    assert m and int(m.group(1)) > 0, r.stderr
    assert sum(f.stat().st_size for f in spool.rglob("*") if f.is_file()) > 0
    # the same with the ownership the image used to give (ids:ids 0755): the daemon cannot
    shutil.rmtree(spool)
    spool.mkdir()
    os.chown(spool, uid, uid)
    spool.chmod(0o755)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and f"kafka spool directory {spool}" in r.stderr and "Permission denied" in r.stderr, \
        r.stderr
