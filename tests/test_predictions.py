"""The prediction vocabulary is defined once: the JSON Schema, the risk weights, the
taxonomy and the RL observation all agree with ids_daemon.predictions.vocabulary."""

from __future__ import annotations

from ids_daemon.consumers.rl import FAMILIES as OBS_FAMILIES
from ids_daemon.inference.risk import FAMILY_WEIGHT
from ids_daemon.model.classes import FAMILIES_8
from ids_daemon.predictions import FAMILIES, SEVERITIES, SEVERITY_RANK, json_schema


def test_schema_severities_are_the_vocabulary() -> None:
    assert json_schema()["properties"]["severity"]["enum"] == list(SEVERITIES)
    assert [SEVERITY_RANK[s] for s in SEVERITIES] == list(range(len(SEVERITIES)))


def test_families_agree_everywhere() -> None:
    assert set(FAMILY_WEIGHT) == set(FAMILIES) == set(FAMILIES_8)
    assert OBS_FAMILIES[:-1] == FAMILIES and OBS_FAMILIES[-1] == "other"


def test_messages_are_what_orjson_writes_for_their_dicts() -> None:
    """`encode_predictions` writes each message from text made once per batch, class and flow;
    every byte must be what ``orjson.dumps`` of the message's dict writes (key order, numbers,
    NaN as null, escapes), whatever the sensor name, the evidence sentences or the attribution
    hold."""
    from pathlib import Path

    import numpy as np
    import orjson

    from ids_daemon.builder import windows_of_file
    from ids_daemon.config import load_config
    from ids_daemon.features.window import REASON_NAMES
    from ids_daemon.predictions.encode import SCHEMA_ID, encode_predictions
    from ids_daemon.predictions.timestamps import iso8601
    from ids_daemon.sequence import SequenceBuffer

    sample = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"
    wb = windows_of_file(load_config(None, {"metrics.listen": None}), str(sample))
    seq = SequenceBuffer(4, [0, 1], 1 << 12).push(wb).take(slice(0, 300))
    n = len(seq)
    rng = np.random.default_rng(0)
    classes = ["BenignTraffic", "DDoS", 'Odd "quoted", class\\', "Recon", "Web-based"]
    families = ["Benign", "DDoS", "Other ünïcode", "Recon", "Web"]
    probs = rng.dirichlet(np.ones(len(classes)), size=n)
    probs[7, :] = np.nan  # a broken row: orjson writes null
    probs[8, 1] = 1e-300  # tiny and huge numbers in the shortest form that reads back
    pred = np.argmax(np.nan_to_num(probs), axis=1)
    conf = probs.max(axis=1)
    p_attack = 1.0 - probs[:, 0]
    risk = p_attack * 0.9
    decision = (pred, conf, risk, p_attack, p_attack >= 0.5)
    sev = rng.integers(0, 4, size=n)
    evidence = [f'sentence {i}: "a","b" \\ \u2028 ✓ ","' if i % 3 else f"plain {i}" for i in range(n)]
    attribution = [[{"column": "Tot sum", "share": 0.25 + i}] if i % 5 == 0 else None for i in range(n)]
    pcap_files = [f"alert-{i}.pcap" if i % 7 == 0 else None for i in range(n)]
    model = {"name": "ids-lstm", "version": "6", "sha256": "ab" * 8}
    now = 1_800_000_000.123456
    for iface, sensor, ev in ((None, 'gw "1"\\x', evidence), ("eth0", "gw-2", None)):
        out = encode_predictions(seq, probs, decision, sev, classes=classes, families=families, model=model,
                                 sensor=sensor, id_prefix='run"7', first_id=41, top_k=3, now=now, interface=iface,
                                 evidence=ev, attribution=[None if a is None else orjson.dumps(a).decode()
                                                           for a in attribution], pcap_files=pcap_files)
        assert len(out.values) == len(out.keys) == n
        w = seq.windows
        for i, (key, value) in enumerate(zip(out.keys, out.values)):
            got = orjson.loads(value)
            top = np.argsort(-probs[i])[:3]
            want = {
                "schema": SCHEMA_ID, "id": f'run"7-{41 + i}', "time": now, "timestamp": iso8601(now),
                "sensor": sensor, "interface": iface, "predicted_attack": classes[pred[i]],
                "family": families[pred[i]], "is_attack": bool(p_attack[i] >= 0.5), "p_attack": float(p_attack[i]),
                "confidence": float(conf[i]), "risk_score": float(risk[i]),
                "severity": ["low", "medium", "high", "critical"][sev[i]],
                "probabilities": [{"class": classes[j], "p": float(probs[i, j])} for j in top],
                "flow": got["flow"],
                "window": {"first_ts": float(w.first_ts[i]), "last_ts": float(w.last_ts[i]),
                           "packets": int(w.packets[i]), "close_reason": REASON_NAMES[w.reason[i]],
                           "history": int(seq.lengths[i])},
                "model": model,
            }
            if ev is not None:
                want["evidence"] = ev[i]
            if attribution[i] is not None:
                want["attribution"] = attribution[i]
            if pcap_files[i] is not None:
                want["pcap_file"] = pcap_files[i]
            assert value == orjson.dumps(want), i
            assert key == got["flow"]["key"].encode() and got["flow"]["key"] == w.key_strings()[i]
