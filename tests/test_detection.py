"""Detection on real traffic: per-packet labels of the real corpus, the operating point
(p_attack and its threshold), the by-source evaluation and site calibration."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ids_daemon.config import MeterConfig
from ids_daemon.inference.risk import decide, family_weights
from ids_daemon.model.artifacts import bundled_model_dir, load_model
from ids_daemon.predictions import json_schema
from trainer.metrics import binary_rates, choose_threshold

ROOT = Path(__file__).resolve().parents[1]
from .paths import REAL  # noqa: E402
MANIFEST = REAL / "MANIFEST.tsv"
from .helpers import EXE  # noqa: E402
from .helpers import TRAINER  # noqa: E402
needs_corpus = pytest.mark.shared_data("real/MANIFEST.tsv")  # tests/conftest.py: skip or fail, and when


# ---- the operating point -------------------------------------------------------------------
def test_threshold_flags_at_most_the_target_share_of_benign_weight() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(10_000)
    w = rng.integers(1, 11, 10_000).astype(float)
    for target in (0.001, 0.01, 0.05, 0.2):
        t = choose_threshold(p, w, target)
        share = w[p >= t].sum() / w.sum()
        assert share <= target
        # and not needlessly strict: the next lower score would exceed the target
        below = p[p < t].max()
        assert w[p >= below].sum() / w.sum() > target
    # ties are never split: a block of equal scores is flagged whole or not at all
    p = np.array([0.9] * 50 + [0.1] * 950)
    assert choose_threshold(p, np.ones(1000), 0.01) > 0.9
    assert choose_threshold(p, np.ones(1000), 0.06) <= 0.9


def _pools_dataset(n_flow: int, n_pool: int, seed: int = 0):
    """A validation set of benign flows (low p_attack), benign pools (higher) and attacks (high),
    every sequence one packet: (p_attack, labels, dataset, validation rows)."""
    from trainer.dataset import Dataset

    rng = np.random.default_rng(seed)
    n_att = 500
    pa = np.concatenate([rng.uniform(0.0, 0.6, n_flow), rng.uniform(0.3, 0.95, n_pool), rng.uniform(0.9, 1.0, n_att)])
    y = np.r_[np.zeros(n_flow + n_pool, np.int64), np.ones(n_att, np.int64)]
    pools = np.r_[np.zeros(n_flow, bool), np.ones(n_pool, bool), rng.random(n_att) < 0.5]
    n = len(y)
    ds = Dataset(x=np.zeros((n, 1, 1), np.float32), y=y, classes=["BenignTraffic", "DDoS-SYN_Flood"], columns=["c"],
                 groups=np.zeros(n, np.int64), order=np.arange(n, dtype=float), source="captures",
                 weights=np.ones(n), pools=pools)
    return pa, y, ds, np.arange(n)


def test_operating_point_holds_the_target_on_each_window_kind() -> None:
    from ids_daemon.inference.risk import row_thresholds
    from ids_daemon.config import Config
    from trainer.train import operating_point

    tc = Config().lstm.train.model_copy(update={"target_fpr": 0.01, "threshold_by_window_kind": True})
    pa, y, ds, idx = _pools_dataset(20_000, 1_000)
    op = operating_point(pa, y, ds, idx, tc)
    kinds = op["by_window_kind"]
    # the shared threshold, fit mostly on flows, lets a tenth of the benign pools through
    shared_pools = (pa[(y == 0) & ds.pools] >= op["threshold"]).mean()
    assert shared_pools > 0.05
    # the pools' own is stricter; the flows keep the shared one (theirs is looser: never taken)
    assert kinds["pool"]["threshold"] == kinds["pool"]["own"] > op["threshold"]
    assert kinds["flow"]["own"] < op["threshold"] == kinds["flow"]["threshold"]
    t = row_thresholds(op, ds.pools)
    for m in (ds.pools, ~ds.pools):  # each kind's benign at most the target
        assert (pa[(y == 0) & m] >= t[(y == 0) & m]).mean() <= 0.01
    assert kinds["benign_flagged"] <= op["benign_flagged"] <= 0.01
    assert 0.5 < kinds["attack_flagged"] <= op["attack_flagged"]  # the price, on the attacks in pools
    # a kind with too few benign sequences to fit a threshold keeps the shared one
    pa, y, ds, idx = _pools_dataset(20_000, 20)
    kinds = operating_point(pa, y, ds, idx, tc)["by_window_kind"]
    assert kinds["pool"]["own"] is None and kinds["pool"]["benign_sequences"] == 20
    assert kinds["pool"]["threshold"] == kinds["flow"]["threshold"]
    # off (or the kinds unknown): one threshold, as before
    op = operating_point(pa, y, ds, idx, tc.model_copy(update={"threshold_by_window_kind": False}))
    assert "by_window_kind" not in op and row_thresholds(op, ds.pools) == op["threshold"]


def test_a_fixed_models_verdicts_and_a_sites_fit_keep_the_kinds(tmp_path: Path) -> None:
    """--compare's fixed model judges each window at its kind's threshold, and the by-source
    calibration's site fit raises each kind's to the site's at least (as calibrate does)."""
    from ids_daemon.cli import sample_pcap
    from ids_daemon.features.window import KIND_POOL
    from ids_daemon.inference.risk import row_thresholds
    from trainer.bysource import WindowSet, _site_operating_point, fixed_model_verdicts
    from trainer.dataset import meter_capture

    wb = meter_capture(sample_pcap(), MeterConfig())
    pool = wb.kind == KIND_POOL
    assert pool.any() and (~pool).any()
    model = _model_copy(tmp_path, operating_point={"threshold": 0.0, "target_fpr": 0.01, "by_window_kind": {
        "flow": {"threshold": 0.0}, "pool": {"threshold": 1.0}}})
    v = fixed_model_verdicts(model)(WindowSet("sample", "s", wb, np.full(len(wb), "BenignTraffic", dtype=object)))
    # every flow at 0, the pools at 1 (one threshold, 0, would flag them all)
    assert v.flagged[~pool].all() and v.flagged[pool].sum() < pool.sum() / 2
    op = {"threshold": 0.9, "by_window_kind": {"flow": {"threshold": 0.9}, "pool": {"threshold": 0.97}}}
    fit = _site_operating_point(op, 0.95)
    assert row_thresholds(fit, np.array([False, True])).tolist() == [0.95, 0.97]
    assert _site_operating_point({"threshold": 0.9}, 0.95) == {"threshold": 0.95}


def test_binary_rates_count_packets() -> None:
    y = np.array([0, 0, 1, 1])
    r = binary_rates(y, np.array([0.2, 0.8, 0.9, 0.1]), np.array([10, 1, 5, 5]), ["BenignTraffic", "X"], 0.5)
    assert r["benign_flagged"] == pytest.approx(1 / 11) and r["attack_flagged"] == pytest.approx(0.5)


def test_decide_uses_the_threshold_and_names_the_likeliest_attack() -> None:
    classes = ["Benign", "DDoS", "Recon"]
    w = family_weights(classes)
    probs = np.array([[0.7, 0.2, 0.1],   # p_attack 0.3: attack at 0.25, benign at 0.5
                      [0.4, 0.25, 0.35],  # argmax is benign, but p_attack 0.6
                      [0.95, 0.01, 0.04]])
    pred, conf, risk, pa, att = decide(probs, w, 0.25)
    assert pa.tolist() == pytest.approx([0.3, 0.6, 0.05])
    assert att.tolist() == [True, True, False]
    assert [classes[i] for i in pred] == ["DDoS", "Recon", "Benign"]
    assert conf.tolist() == pytest.approx([0.2, 0.35, 0.95])
    assert risk[2] == 0.0 and risk[0] == pytest.approx(0.9 * 0.3)
    _, _, _, _, att = decide(probs, w, 0.5)
    assert att.tolist() == [False, True, False]
    # one threshold per row (the window kinds' own)
    pred, _, risk, _, att = decide(probs, w, np.array([0.5, 0.7, 0.01]))
    assert att.tolist() == [False, False, True] and [classes[i] for i in pred] == ["Benign", "Benign", "Recon"]
    assert risk[0] == 0.0 and risk[2] == pytest.approx(0.4 * 0.05)
    # no operating point (older models): argmax
    pred, _, _, pa, att = decide(probs, w, None)
    assert att.tolist() == [False, False, False] and pa[1] == pytest.approx(0.6)


def test_bundled_model_has_an_operating_point_and_leaves_arp_to_the_detector() -> None:
    meta = load_model().meta
    op = meta["operating_point"]
    assert 0.0 < op["threshold"] < 1.0 and op["target_fpr"] == pytest.approx(0.01)
    # one per window kind, neither looser than the shared one
    kinds = op["by_window_kind"]
    assert op["threshold"] <= kinds["flow"]["threshold"] < 1.0 and op["threshold"] <= kinds["pool"]["threshold"] < 1.0
    assert max(kinds["flow"]["threshold"], kinds["pool"]["threshold"]) > op["threshold"]
    assert meta["lstm_skips_arp"] is True


def _replay(pcap: Path, out: Path, *extra: str) -> list[dict]:
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out), *extra], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return [json.loads(x) for x in out.read_text().splitlines() if x]


def test_predictions_carry_p_attack_and_follow_the_threshold(tmp_path: Path) -> None:
    from ids_daemon.cli import sample_pcap

    schema = json_schema()
    kinds = load_model().meta["operating_point"]["by_window_kind"]
    preds = _replay(sample_pcap(), tmp_path / "a.jsonl")
    lstm = [m for m in preds if not m["model"]["name"].startswith("detector:")]
    assert lstm
    for m in preds[:500]:
        jsonschema.validate(m, schema)
    # each window judged at its kind's threshold
    assert {m["flow"]["kind"] for m in lstm} == {"flow", "pool"}
    assert all(m["is_attack"] == (m["p_attack"] >= kinds[m["flow"]["kind"]]["threshold"]) for m in lstm)
    assert any(not m["is_attack"] for m in lstm)
    # a model whose pools need certainty and whose flows need nothing: the worker reads the kind
    model = _model_copy(tmp_path / "kinds", operating_point={
        "threshold": 0.0, "target_fpr": 0.01,
        "by_window_kind": {"flow": {"threshold": 0.0}, "pool": {"threshold": 1.0}}})
    split = [m for m in _replay(sample_pcap(), tmp_path / "k.jsonl", "--model", str(model))
             if not m["model"]["name"].startswith("detector:")]
    assert len(split) == len(lstm)
    assert all(m["is_attack"] == (m["flow"]["kind"] == "flow" or m["p_attack"] >= 1.0) for m in split)
    # the operator's override moves the operating point: at the median p_attack about half
    # of the windows are flagged, at 1.0 none
    cfg = tmp_path / "c.yml"
    mid = float(np.median([m["p_attack"] for m in lstm]))
    cfg.write_text(f"inference:\n  threshold: {mid!r}\n")
    loose = [m for m in _replay(sample_pcap(), tmp_path / "m.jsonl", "--config", str(cfg))
             if not m["model"]["name"].startswith("detector:")]
    assert len(loose) == len(lstm) and all(m["is_attack"] == (m["p_attack"] >= mid) for m in loose)
    assert 0.3 * len(loose) <= sum(m["is_attack"] for m in loose) <= 0.7 * len(loose) + 1
    cfg.write_text("inference:\n  threshold: 1.0\n")
    strict = _replay(sample_pcap(), tmp_path / "b.jsonl", "--config", str(cfg))
    strict_lstm = [m for m in strict if not m["model"]["name"].startswith("detector:")]
    assert len(strict_lstm) == len(lstm)
    assert sum(m["is_attack"] for m in strict_lstm) < sum(m["is_attack"] for m in loose)
    assert all(m["is_attack"] == (m["p_attack"] >= 1.0) for m in strict_lstm)
    cfg.write_text("inference:\n  threshold: 1.5\n")
    p = subprocess.run([EXE, "replay", "-r", str(sample_pcap()), "-o", str(tmp_path / "x"), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "inference.threshold" in p.stderr and "Traceback" not in p.stderr


def test_the_start_line_says_what_decides_is_attack(tmp_path: Path) -> None:
    from ids_daemon.cli import sample_pcap

    kinds = load_model().meta["operating_point"]["by_window_kind"]
    cfg = tmp_path / "c.yml"
    cfg.write_text("inference:\n  threshold: 0.9\n")
    for extra, want in (((), f"is_attack at p_attack >= {kinds['flow']['threshold']:.4g} for flows, "
                                f"{kinds['pool']['threshold']:.4g} for pools"),
                        (("--config", str(cfg)), "is_attack at p_attack >= 0.9 (inference.threshold)")):
        p = subprocess.run([EXE, "replay", "-r", str(sample_pcap()), "-o", str(tmp_path / "p.jsonl"),
                            *extra], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert want in p.stderr.splitlines()[0]


def _model_copy(tmp_path: Path, **meta: object) -> Path:
    import shutil

    d = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), d)
    md = json.loads((d / "metadata.json").read_text())
    md.update(meta)
    (d / "metadata.json").write_text(json.dumps(md))
    return d


def test_frames_a_detector_claims_stay_out_of_the_models_windows(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, wrpcap

    rng = np.random.default_rng(5)
    t0 = 1_700_000_000.0
    pkts = []
    for i, (a, b, c, d) in enumerate(rng.integers(1, 224, (400, 4)).tolist()):  # spoofed SYN flood
        p = IP(src=f"{a}.{b}.{c}.{d}", dst="10.0.0.9") / TCP(sport=1024 + i, dport=80, flags="S")
        p.time = t0 + i * 0.002
        pkts.append(p)
    for i in range(30):  # a client of the same host, during the flood
        p = IP(src="10.0.0.5", dst="10.0.0.9") / TCP(sport=40000, dport=80, flags="A" if i else "S")
        p.time = t0 + 0.1 + i * 0.02
        pkts.append(p)
    pkts.sort(key=lambda p: p.time)
    pcap = tmp_path / "flood.pcap"
    wrpcap(str(pcap), pkts)
    counts = {}
    for claims in (True, False):
        model = _model_copy(tmp_path / str(claims), detector_claims=claims)
        p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(tmp_path / f"{claims}.jsonl"), "--model",
                            str(model)], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        preds = [json.loads(x) for x in (tmp_path / f"{claims}.jsonl").read_text().splitlines()]
        lstm = [m for m in preds if not m["model"]["name"].startswith("detector:")]
        flood = [m for m in preds if m["model"]["name"] == "detector:flood"]
        assert flood and flood[0]["predicted_attack"] == "DDoS-SYN_Flood" and flood[0]["flow"]["dst_ip"] == "10.0.0.9"
        counts[claims] = sum(m["window"]["packets"] for m in lstm)
        # the flood's 400 SYNs; the client's own SYN is not the crowd's (it acknowledges data)
        assert ("400 left to them, not metered" in p.stderr) == claims, p.stderr
    # a detector_claims model sees the client's 30 packets only; another sees all 430
    assert counts == {True: 30, False: 430}


# ---- per-packet labels of real captures -----------------------------------------------------
@needs_corpus
def test_real_captures_are_labelled_per_packet_and_windows_by_their_packets() -> None:
    from trainer.data.real import meter_labelled, read_tsv_manifest

    entries = {e.name: e for e in read_tsv_manifest(MANIFEST)}
    arp = meter_labelled(entries["SniperDZ-Pro_Cyber-Forensics-Workshop__arp_spoofing.pcap"], MeterConfig())
    # the 18 spoofed replies the evidence names, nothing else
    assert int(arp.row_attack.sum()) == 18
    dns = meter_labelled(entries["shrutikulkar_ADF-Project__dns_spoofing.pcap"], MeterConfig())
    # independent count with scapy of the corrected filter over the metered (IPv4/ARP) frames: the
    # manifest's "arp or host 192.168.20.9" plus the DNS answers the attacker's MAC forges in the
    # server's name (the victims' traffic it relays stays benign)
    from scapy.all import ARP, DNS, IP, TCP, UDP, Ether, rdpcap

    mac = "08:00:27:96:18:a9"
    pkts = [p for p in rdpcap(str(entries["shrutikulkar_ADF-Project__dns_spoofing.pcap"].path)) if ARP in p or IP in p]
    want = [ARP in p or (IP in p and "192.168.20.9" in (p[IP].src, p[IP].dst))
            or (p[Ether].src == mac and UDP in p and p[UDP].sport == 53) for p in pkts]
    assert dns.row_attack.tolist() == want
    spoofed = [i for i, p in enumerate(pkts) if DNS in p and p[DNS].qr and p[DNS].ancount
               and b"umass" in bytes(p[DNS]) and b"\xc0\xa8\x14\x0e" in bytes(p[DNS])]  # answered 192.168.20.14
    assert len(spoofed) >= 5 and dns.row_attack[spoofed].all()  # the forged answers are the attack
    for lc in (arp, dns):
        assert int(lc.windows.packets.sum()) == len(lc.row_attack) == len(lc.row_window)
        assert int(lc.window_attack.sum()) == int(lc.row_attack.sum())
        lab = lc.window_labels
        mostly = lc.window_attack * 2 >= lc.windows.packets
        assert ((lab != "BenignTraffic") == (mostly & (lc.window_attack > 0))).all()
    benign = meter_labelled(entries["ITI_ICS-Security-Tools__ModbusTCP.pcap"], MeterConfig())
    assert not benign.row_attack.any() and set(benign.window_labels) == {"BenignTraffic"}
    # the loopback floods: the spoofed datagrams to 127.0.0.1 and the stack's answers to their
    # sources are the attack; the machine's own 127.0.0.1-to-127.0.0.1 chatter is not (scapy count)
    for name, proto, port in (("syn_flood", TCP, 80), ("udp_flood", UDP, 53)):
        e = entries[f"thekrishnanand_Assignment1_NetworkSecurity_Ddos_Simulation__{name}.pcapng"]
        lc = meter_labelled(e, MeterConfig())
        pkts = [p for p in rdpcap(str(e.path)) if IP in p]
        want = [(p[IP].dst == "127.0.0.1" and p[IP].src != "127.0.0.1" and proto in p and p[proto].dport == port)
                or (p[IP].src == "127.0.0.1" and p[IP].dst != "127.0.0.1") for p in pkts]
        assert lc.row_attack.tolist() == want
        assert 1200 > len(want) - sum(want) > 400  # the chatter (1,060 and 506 packets), now benign


@needs_corpus
def test_claimed_packets_keep_their_labels_and_count_as_the_detectors() -> None:
    from ids_daemon.config import DetectorsConfig
    from ids_daemon.detectors import DETECTOR_CLASSES
    from trainer.bysource import Verdicts, WindowSet, detector_hooks, packet_figures
    from trainer.data.real import meter_labelled, read_tsv_manifest

    entries = {e.name: e for e in read_tsv_manifest(MANIFEST)}
    e = entries["SniperDZ-Pro_Cyber-Forensics-Workshop__tcp_syn_flood.pcap"]
    hooks = detector_hooks(DetectorsConfig())
    whole = meter_labelled(e, MeterConfig(), hooks())
    part = meter_labelled(e, MeterConfig(), hooks(), claim=True)
    claimed = part.row_window < 0
    # every metered packet keeps its row and label; the claimed ones are the detectors' and in no window
    assert part.row_attack.tolist() == whole.row_attack.tolist()
    assert (claimed == (part.row_detector >= 0)).all() and claimed.sum() > 8000
    assert int(part.windows.packets.sum()) == int((~claimed).sum())
    assert int(part.window_attack.sum()) == int(part.row_attack[~claimed].sum())
    # the flood's victim's other traffic is no longer outvoted by the flood in its windows
    benign_in_attack_windows = lambda lc: int(((lc.window_labels != "BenignTraffic")[lc.row_window]  # noqa: E731
                                               & ~lc.row_attack & (lc.row_window >= 0)).sum())
    assert benign_in_attack_windows(part) < benign_in_attack_windows(whole) / 4
    # figures: a claimed packet counts as flagged by its detector, whatever the windows say
    none = Verdicts(np.zeros(len(part.windows), bool), np.full(len(part.windows), "", dtype=object))
    r = packet_figures(WindowSet(e.name, e.repo, part.windows, part.window_labels, part), none, DETECTOR_CLASSES)
    assert r["attack_flagged"] == int((part.row_attack & claimed).sum())
    assert r["benign_flagged"] == int((~part.row_attack & claimed).sum()) <= 100  # the router's SYN-ACKs and resets
    # the unclaimed attack packets, by the kind of window that carries them, add up to the count
    uk = r["unclaimed_by_window_kind"]
    assert sum(n for n, _ in uk.values()) == r["attack_unclaimed"] > 0 and all(f == 0 for _, f in uk.values())
    assert set(uk) <= {"flow full", "flow partial", "pool full", "pool partial"}


@pytest.mark.slow
@needs_corpus
def test_by_source_holds_a_repository_out_and_counts_packets(tmp_path: Path) -> None:
    from trainer.bysource import MARGIN_EDGES
    from trainer.cli import default_real_manifest
    from trainer.data.real import read_tsv_manifest

    # without --real the corpus beside the repository is the one evaluated
    assert default_real_manifest().resolve() == MANIFEST.resolve()
    # the two held-out repositories and four small ones to train on (benign-only captures
    # for the threshold, floods, scans, brute force): the fold mechanics are the same as
    # on the whole corpus, at a sixth of its packets (the whole corpus took 4 minutes here)
    # (none of them in the lockbox, which development runs leave out: trainer/data/lockbox.py)
    keep = {"shrutikulkar/ADF-Project", "carvalhomariana/learnITgirl", "edim98/SSI_Measurements_2022",
            "aman14199/wireshark-traffic-analysis", "GrigorDimitrov/sop",
            "thekrishnanand/Assignment1_NetworkSecurity_Ddos_Simulation"}
    lines = MANIFEST.read_text().splitlines()
    col = lines[0].split("\t").index("file")
    kept = [ln.split("\t") for ln in lines[1:] if ln.split("\t")[1] in keep]
    for r in kept:
        r[col] = str(MANIFEST.parent / r[col])  # absolute: the copy lives in tmp_path
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("\n".join([lines[0], *("\t".join(r) for r in kept)]) + "\n")
    out = tmp_path / "bs.json"
    p = subprocess.run([TRAINER, "evaluate", "--by-source", "--real", str(manifest), "--source",
                        "shrutikulkar/ADF-Project", "--source", "carvalhomariana/learnITgirl", "--epochs", "2", "--synthetic-packets", "0", "--out",
                        str(out), "--compare", str(bundled_model_dir())], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert set(res["methods"]) >= {"lstm", "tree_0.5", "tree_at_target", f"model:{bundled_model_dir()}"}
    assert res["recipe"]["real_manifest"] == str(manifest)

    entries = read_tsv_manifest(manifest)
    assert {e.repo for e in entries} == keep
    for name in ("shrutikulkar/ADF-Project", "carvalhomariana/learnITgirl"):
        caps = [e for e in entries if e.repo == name]
        rows = [r for r in res["captures"]["lstm"] if r["source"] == name]
        assert sorted(r["capture"] for r in rows) == sorted(e.name for e in caps)
        src = res["methods"]["lstm"]["per_source"][name]
        assert src["benign_packets"] + src["attack_packets"] > 0
        for k in ("benign_flagged_share", "attack_flagged_share"):
            assert src[k] is None or 0.0 <= src[k] <= 1.0
    # every fold trained without its repository: the test part is that repository alone
    assert [f["source"] for f in res["folds"]] == ["carvalhomariana/learnITgirl", "shrutikulkar/ADF-Project"]
    assert all(f["test_sequences"] > 0 and f["train_sequences"] > 0 for f in res["folds"])
    assert "OVERALL" in p.stdout and "tree_at_target" in p.stdout
    # each held-out benign source fitted as a site: the daemon's recall on the real attacks
    # (detectors + the fold's LSTM) under the site's threshold, never above the recall before
    cal = [f["calibration"] for f in res["folds"] if f.get("calibration")]
    assert cal and "real attacks, daemon" in p.stdout
    for c in cal:
        assert c["threshold_after"] >= c["threshold_before"]
        assert 0.0 < c["real_attack_flagged_after"] <= c["real_attack_flagged_before"] <= 1.0
    # the model alone beside the combination: what it flags of the attack packets no detector claims
    ov = res["methods"]["lstm"]["overall"]
    assert 0 < ov["attack_unclaimed"] < ov["attack_packets"]
    assert 0.0 <= ov["model_unclaimed_attack_flagged_share"] <= 1.0
    assert ov["model_benign_flagged"] <= ov["benign_flagged"]
    assert "unclaimed" in p.stdout and "by window kind" in p.stdout
    # and its scores: every benign and every unclaimed attack packet in the histograms, once
    h = ov["model_margin_hist"]
    assert sum(h["benign"]) == ov["benign_packets"] and sum(h["unclaimed"]) == ov["attack_unclaimed"]
    # at the factor 1 (each fold's own threshold) the histograms count what the model alone flagged
    one = int(np.searchsorted(MARGIN_EDGES, 1.0))
    assert MARGIN_EDGES[one] == 1.0
    assert sum(h["benign"][:one + 1]) == ov["model_benign_flagged"]
    assert sum(h["unclaimed"][:one + 1]) == ov["attack_unclaimed_flagged"]
    # every fold has its operating point
    assert all(f["threshold"] is not None for f in res["folds"])


@pytest.mark.slow
@needs_corpus
def test_lockbox_is_left_out_then_evaluated_as_one_fold(tmp_path: Path) -> None:
    from trainer.data.lockbox import LOCKBOX, OPENED, ROUNDS, SEED, choose
    from trainer.data.real import read_tsv_manifest

    entries = read_tsv_manifest(MANIFEST)
    benign = {e.repo for e in entries if e.benign}
    attack_only = {e.repo for e in entries} - benign
    assert choose(benign, attack_only, SEED) == LOCKBOX  # the listed lockbox is the seed's draw
    for i, (seed, draw) in enumerate(ROUNDS):  # and every round's was its seed's, from what was left
        last = ROUNDS[i - 1][1] if i else ()
        assert choose(benign, attack_only, seed, opened=[r for _, d in ROUNDS[:i] for r in d], last=last) == draw
        assert len(draw) == 4 and not set(draw) & set(last)
    # once the never-held repositories ran out, a side takes those left and draws the rest
    assert {r for _, d in ROUNDS for r in d} == benign | attack_only
    assert set(OPENED) | set(LOCKBOX) == {r for _, d in ROUNDS for r in d}
    assert not set(LOCKBOX) & set(ROUNDS[-2][1])  # the round just opened is not drawn again
    assert not {e.repo for e in read_tsv_manifest(MANIFEST, lockbox="exclude")} & set(LOCKBOX)
    assert {e.repo for e in read_tsv_manifest(MANIFEST, lockbox="only")} == set(LOCKBOX)
    # the final evaluation: one model trained without the lockbox, measured on it (a small corpus here)
    keep = {"GrigorDimitrov/sop", "edim98/SSI_Measurements_2022", "chrissanders/packets"}
    lines = MANIFEST.read_text().splitlines()
    col = lines[0].split("\t").index("file")
    kept = [ln.split("\t") for ln in lines[1:] if ln.split("\t")[1] in keep]
    for r in kept:
        r[col] = str(MANIFEST.parent / r[col])
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("\n".join([lines[0], *("\t".join(r) for r in kept)]) + "\n")
    out = tmp_path / "lockbox.json"
    p = subprocess.run([TRAINER, "evaluate", "--by-source", "--lockbox", "only", "--real", str(manifest), "--epochs",
                        "2", "--synthetic-packets", "0", "--no-tree", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["lockbox"]["mode"] == "only"
    assert [f["source"] for f in res["folds"]] == ["lockbox"]
    assert {r["source"] for r in res["captures"]["lstm"]} == {"chrissanders/packets"}
    fold = res["folds"][0]
    assert fold["train_sequences"] > 0 and fold["test_sequences"] > 0


# ---- calibration ----------------------------------------------------------------------------
@needs_corpus
def test_calibration_fits_the_threshold_to_a_site(tmp_path: Path) -> None:
    site = REAL / "benign" / "ITI_ICS-Security-Tools__ModbusTCP.pcap"
    out = tmp_path / "m2"
    p = subprocess.run([TRAINER, "calibrate", "--model", str(bundled_model_dir()), "--benign", str(site),
                        "--threshold-only", "--target-fpr", "0.005", "--out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    before = load_model().meta["operating_point"]["threshold"]
    meta = load_model(out).meta
    op = meta["operating_point"]
    rec = op["calibration"]
    assert op["threshold"] >= before and rec["threshold_before"] == pytest.approx(before)
    assert rec["flagged_after"] <= 0.005 and rec["packets"] > 10_000
    # the model's per-kind thresholds stay, none below the site's
    kinds, was = op["by_window_kind"], load_model().meta["operating_point"]["by_window_kind"]
    assert all(kinds[k]["threshold"] == max(was[k]["threshold"], op["threshold"]) for k in ("flow", "pool"))
    assert meta["version"].endswith("+site") and op["chosen_on"].startswith("site")
    # the daemon runs the calibrated model with its new operating point
    preds = _replay(site, tmp_path / "p.jsonl", "--model", str(out))
    lstm = [m for m in preds if not m["model"]["name"].startswith("detector:")]
    flagged = sum(m["window"]["packets"] for m in lstm if m["is_attack"])
    assert flagged / sum(m["window"]["packets"] for m in lstm) <= 0.005 + 1e-9
    bad = subprocess.run([TRAINER, "calibrate", "--model", str(bundled_model_dir()), "--benign", "/nonexistent.pcap",
                          "--out", str(tmp_path / "m3")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no such capture" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@needs_corpus
def test_calibration_fine_tunes_only_where_the_site_needs_it(tmp_path: Path) -> None:
    """The default rule: fine-tuning when the model's own threshold flags more of the site's
    benign packets than the target (the site needs a higher threshold), else the model as it is.
    The second model is the bundled one with its operating point lowered to 0.001, which flags
    nearly all of the site."""
    import shutil

    site = REAL / "benign" / "ITI_ICS-Security-Tools__ModbusTCP.pcap"
    low = tmp_path / "low"
    shutil.copytree(bundled_model_dir(), low)
    meta = json.loads((low / "metadata.json").read_text())
    meta["operating_point"]["threshold"] = 0.001
    for k in ("flow", "pool"):
        meta["operating_point"]["by_window_kind"][k]["threshold"] = 0.001
    (low / "metadata.json").write_text(json.dumps(meta))
    for model, target, needed in ((bundled_model_dir(), 0.5, False), (low, 0.005, True)):
        out = tmp_path / f"auto-{needed}"
        p = subprocess.run([TRAINER, "calibrate", "--model", str(model), "--benign", str(site),
                            "--synthetic-packets", "20000", "--target-fpr", str(target), "--out", str(out)],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        after = load_model(out).meta
        rec = after["operating_point"]["calibration"]
        assert (rec["flagged_before"] > target) == needed, rec["flagged_before"]
        assert rec["fine_tune"].startswith("auto: the site needs" if needed else "auto: not needed"), rec["fine_tune"]
        assert ("fine_tuned" in rec) == needed
        assert (after["weights_sha256"] != load_model().meta["weights_sha256"]) == needed
        assert "fine-tuning auto" in p.stdout
        if needed:
            assert rec["held_out_flagged_after"] <= target + 1e-9
            # new weights: the per-kind thresholds chosen for the old ones go, the site's holds for all
            assert "by_window_kind" not in after["operating_point"] and rec["by_window_kind"].startswith("dropped")
        else:
            assert after["operating_point"]["threshold"] == pytest.approx(load_model().meta["operating_point"]["threshold"])
            op = after["operating_point"]
            assert op["by_window_kind"]["pool"]["threshold"] >= op["threshold"]


def test_calibration_default_rule_figures() -> None:
    from trainer.bysource import calibration_auto

    rec = {"threshold_before": 0.99, "threshold_after": 0.995, "second_half_flagged_after": 0.004,
           "second_half_flagged_fine_tuned": 0.001, "real_attack_flagged_after": 0.9, "real_attack_flagged_fine_tuned": 0.97}
    assert calibration_auto(rec) == {"auto_fine_tuned": True, "second_half_flagged_auto": 0.001,
                                     "real_attack_flagged_auto": 0.97}
    rec["threshold_after"] = 0.99  # the model's own threshold held the site: nothing to tune
    assert calibration_auto(rec) == {"auto_fine_tuned": False, "second_half_flagged_auto": 0.004,
                                     "real_attack_flagged_auto": 0.9}


@pytest.mark.slow
@needs_corpus
def test_fine_tuning_learns_the_site_and_keeps_the_attacks(tmp_path: Path) -> None:
    site = REAL / "benign" / "ITI_ICS-Security-Tools__modbusBig.pcap"
    if not site.is_file():
        site = REAL / "benign" / "ITI_ICS-Security-Tools__ModbusTCP.pcap"
    out = tmp_path / "ft"
    p = subprocess.run([TRAINER, "calibrate", "--model", str(bundled_model_dir()), "--benign", str(site),
                        "--fine-tune", "--synthetic-packets", "30000", "--target-fpr", "0.005", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    before, after = load_model().meta, load_model(out).meta
    assert after["weights_sha256"] != before["weights_sha256"]  # the network changed, and still loads
    rec = after["operating_point"]["calibration"]
    assert rec["fine_tuned"]["replayed_sequences"] > 1000
    # the threshold was chosen on the last 30 % of the site, which was not trained on
    assert rec["held_out_flagged_after"] <= 0.005
    # replayed attacks are still flagged at the new operating point
    assert rec["replayed_attacks_flagged_after"] >= 0.9 * rec["replayed_attacks_flagged_before"]
    assert "fine-tuned" in p.stdout


def test_temperature_scaling_calibrates_without_changing_the_argmax() -> None:
    """The fitted temperature lowers the validation NLL (its objective) of an overconfident network, is
    folded into its last layer (logits divided by T), and never changes the argmax."""
    import torch

    from ids_daemon.model.lstm import LSTMConfig, RealDataLSTMPredictor
    from trainer.train import _fit_temperature

    torch.manual_seed(0)
    model = RealDataLSTMPredictor(LSTMConfig(input_size=4, hidden_size=8, num_layers=1, num_classes=3, dropout=0.0))
    with torch.no_grad():
        model.classifier[-1].weight.mul_(40.0)  # far too confident
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3, 4)).astype(np.float32)

    class Rows:  # what _fit_temperature reads of the trainer's encoded validation part
        idx = np.arange(len(x))

        def batch(self, pos: np.ndarray) -> np.ndarray:
            return x[pos]

    with torch.no_grad():
        before = model(torch.from_numpy(x)).double()
    # labels: the model's argmax 70 % of the time, noise otherwise
    y = np.where(rng.random(len(x)) < 0.7, before.argmax(1).numpy(), rng.integers(0, 3, len(x)))
    cal = _fit_temperature(model, Rows(), y, torch.device("cpu"))
    assert cal is not None and cal["temperature"] > 1.0
    assert cal["validation_nll"]["after"] < cal["validation_nll"]["before"]
    with torch.no_grad():
        after = model(torch.from_numpy(x)).double()
    assert torch.equal(after.argmax(1), before.argmax(1))
    assert torch.allclose(after, before / cal["temperature"], rtol=1e-4, atol=1e-4)


def test_the_model_alone_bound_picks_the_factor_that_spends_the_benign_budget() -> None:
    """`ids-trainer evaluate --by-source` reports how far the model alone could go with at most
    1 % of benign flagged if every fold's threshold moved by one factor (in 1 - p_attack):
    from histograms of the windows' margins, by packets."""
    from trainer.bysource import MARGIN_EDGES, best_alone, margin, margin_histogram

    thr = 0.99  # margins: 1 - p over 0.01
    benign = margin(np.concatenate([np.full(990, 0.01), np.full(10, 0.995), np.full(5, 0.9995), [np.nan]]), thr)
    attack = margin(np.concatenate([np.full(60, 0.992), np.full(30, 0.99995), np.full(10, 0.2), [np.nan] * 2]), thr)
    hb, hu = margin_histogram(benign), margin_histogram(attack)
    assert len(hb) == len(MARGIN_EDGES) + 1 and sum(hb) == benign.size and hb[-1] == 1 and sum(hu) == attack.size
    # at the operating point (factor 1) 15 of 1,006 benign are flagged, over 1 %: the largest
    # factor within 1 % (10 packets) keeps the 5 at 0.9995 and loses the 60 attack packets at 0.992
    b = best_alone(hb, hu, 0.01)
    assert b is not None and 0.05 <= b["factor"] < 0.5
    assert b["benign_flagged_share"] == pytest.approx(5 / 1006)
    assert b["unclaimed_flagged_share"] == pytest.approx(30 / 102)
    # with a 2 % budget the operating point itself (and a little below it) is within it
    b2 = best_alone(hb, hu, 0.02)
    assert b2["factor"] >= 1.0 and b2["unclaimed_flagged_share"] == pytest.approx(90 / 102)
    assert best_alone(hb, [0] * len(hu), 0.01) is None
