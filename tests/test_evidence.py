"""Evidence on model predictions (docs/evidence.md): the sentence of the last window's
facts, and the gradient x input attribution of p_attack to input columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
import torch

from ids_daemon.config import load_config
from ids_daemon.errors import ConfigError
from ids_daemon.features.ciciot import COLUMNS, INDEX
from ids_daemon.features.window import KIND_FLOW, KIND_POOL, WindowBatch
from ids_daemon.inference.attribution import margin_attribution, top_columns
from ids_daemon.inference.evidence import clear_caches, window_sentences
from ids_daemon.predictions import json_schema

from .helpers import EXE

SAMPLE = Path(__file__).resolve().parents[1] / "ids_daemon" / "data" / "sample.pcap"


def _window(packets: int, proto: int, kind: int = KIND_FLOW, span: float = 1.0, **cols: float) -> WindowBatch:
    w = WindowBatch.empty(1)
    for name, v in cols.items():
        w.features[0, INDEX[name.replace("_", " ") if name in ("Tot_size",) else name]] = v
    w.packets[0], w.proto[0], w.kind[0] = packets, proto, kind
    w.first_ts[0], w.last_ts[0] = 1_700_000_000.0, 1_700_000_000.0 + span
    return w


# --- the sentence ---------------------------------------------------------------

def test_syn_flood_window_says_syn_its_share_the_rate_and_no_ack() -> None:
    w = _window(10, 6, TCP=1.0, syn_flag_number=1.0, Rate=4210.0, Tot_size=54.0, **{"Protocol Type": 6.0})
    (s,) = window_sentences(w)
    assert s == "TCP, 10 packets at 4,210/s, 54 bytes on average (540 in all), SYN in 100 % of them, no ACK"


def test_benign_flow_window_says_its_protocol_service_and_sizes() -> None:
    w = _window(10, 17, UDP=1.0, DNS=1.0, Rate=3.5, Tot_size=82.4)
    (s,) = window_sentences(w)
    assert s.startswith("UDP (DNS), 10 packets at 3.5/s")
    assert "82.4 bytes on average (824 in all)" in s
    assert "SYN" not in s and "ACK" not in s  # no TCP packet: no flag talk


def test_tcp_session_window_lists_flags_by_share_and_a_mixed_window_its_protocols() -> None:
    w = WindowBatch.concat([
        _window(10, 6, TCP=1.0, ack_flag_number=1.0, psh_flag_number=0.4, fin_flag_number=0.1, Rate=120.0,
                Tot_size=900.0, HTTPS=1.0),
        _window(10, 17, KIND_POOL, TCP=0.3, UDP=0.7, syn_flag_number=0.3, Tot_size=60.0),
    ])
    a, b = window_sentences(w)
    assert a == ("TCP (HTTPS), 10 packets at 120/s, 900 bytes on average (9,000 in all), ACK in 100 % of them, "
                 "PSH in 40 %, FIN in 10 %")
    # a pool with Rate 0: the window's own span gives the rate (9 gaps in 1 s)
    assert b.startswith("UDP 70 % + TCP 30 % towards one host (short flows pooled), 10 packets at 9/s")
    assert b.endswith("SYN in 30 % of them, no ACK")


def test_arp_and_icmp_windows_name_their_protocol_without_flags() -> None:
    w = WindowBatch.concat([_window(4, 0x100, KIND_POOL, span=3.0, ARP=1.0, Tot_size=60.0),
                            _window(100, 1, KIND_POOL, span=0.0, ICMP=1.0, Tot_size=98.0)])
    arp, icmp = window_sentences(w)
    assert arp == "ARP towards one host (short flows pooled), 4 packets at 1/s, 60 bytes on average (240 in all)"
    assert icmp == "ICMP towards one host (short flows pooled), 100 packets, 98 bytes on average (9,800 in all)"


def test_numbers_read_the_same_from_the_tables_the_caches_and_beyond_them() -> None:
    """The sentence's parts come from tables made at import (three-digit numbers of the
    usual decades), from caches (what windows brought), or are formatted on the spot
    (outside the tables): the text is the same whichever, cold or warm, and it changes
    with each value shown (a cache keyed apart: no part read for another)."""
    w = WindowBatch.concat([
        _window(7, 6, TCP=1.0, ack_flag_number=0.5, Rate=0.00123, Tot_size=54.3),  # 380.1 bytes: no table has it
        _window(10, 17, UDP=1.0, Rate=4.2e9, Tot_size=1e-3),  # beyond the tables
        _window(1, 17, KIND_POOL, UDP=1.0, span=0.0, Tot_size=60.0),  # no rate at all
        _window(3, 6, TCP=0.5, UDP=0.5, span=2.0, Tot_size=1514.0),  # own rate 1/s; 3 digits; no flag
    ])
    want = ["TCP, 7 packets at 0.0012/s, 54.3 bytes on average (380 in all), ACK in 50 % of them",
            "UDP, 10 packets at 4,200,000,000/s, 0.001 bytes on average (0.01 in all)",
            "UDP towards one host (short flows pooled), 1 packet, 60 bytes on average (60 in all)",
            "UDP 50 % + TCP 50 %, 3 packets at 1/s, 1,510 bytes on average (4,530 in all), "
            "no SYN, ACK, RST, FIN or PSH"]
    clear_caches()
    assert window_sentences(w) == want
    assert window_sentences(w) == want  # warm
    w.packets[0] = 8  # the same size, another count: its own total
    assert window_sentences(w)[0] == ("TCP, 8 packets at 0.0012/s, 54.3 bytes on average (434 in all), "
                                      "ACK in 50 % of them")


# --- the attribution ------------------------------------------------------------

def test_margin_attribution_is_gradient_times_input_summed_per_column() -> None:
    """On a linear model gradient x input is exact: each column's contribution is its
    log-standardised feature and its bins times their weights in the margin."""
    torch.manual_seed(0)
    cols, bins, t = 3, 2, 4
    e = cols * (1 + bins)

    class Last(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(e, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x[:, -1, :])

    m = Last()
    x = torch.randn(5, t, e)
    shares, logits = margin_attribution(m, x, 0, cols, bins)
    w = m.lin.weight.detach()
    lg = torch.log_softmax(logits, 1)
    p = torch.softmax(logits[:, 1:], 1)  # d logsumexp(l1, l2) / d l_k
    dm = p[:, :1] * w[1] + p[:, 1:] * w[2] - w[0]  # (n, e): gradient of the margin
    gx = dm * x[:, -1, :]
    want = gx[:, :cols] + gx[:, cols:].view(5, cols, bins).sum(2)
    want = want / want.abs().sum(1, keepdim=True)
    assert np.allclose(shares, want.numpy(), atol=1e-5)
    assert np.allclose(np.abs(shares).sum(1), 1.0)
    assert torch.allclose(lg, torch.log_softmax(m(x), 1))


@pytest.fixture(scope="module")
def sample_sequences():
    from ids_daemon.builder import make_worker, windows_of_file
    from ids_daemon.sequence import SequenceBuffer

    # the torch engine: these tests compare the worker with torch's reference pieces byte for
    # byte (the CPU's numpy engine against torch: tests/test_numpy_lstm.py)
    cfg = load_config(None, {"inference.device": "cpu", "inference.engine": "torch", "metrics.listen": None})
    w = make_worker(cfg)
    wb = windows_of_file(cfg, str(SAMPLE))
    seq = SequenceBuffer(w.seq_len, w.columns, 1 << 12).push(wb)
    return w, seq


def test_worker_attribution_names_model_columns_and_shares_sum_to_one(sample_sequences) -> None:
    w, seq = sample_sequences
    shares, probs = w.attributions(seq.x)
    assert shares.shape == (len(seq), len(w.column_names))
    assert set(w.column_names) <= set(COLUMNS)
    assert np.allclose(np.abs(shares).sum(axis=1), 1.0, atol=1e-6)
    # the forward pass with gradients gives the predictions the plain one gives
    assert np.allclose(probs, w.probabilities(seq), atol=1e-6)
    tops = top_columns(shares, w.column_names, 3)
    for row, top in zip(shares, tops):
        assert len(top) == 3 and all(t["column"] in COLUMNS for t in top)
        mags = [abs(t["share"]) for t in top]
        assert mags == sorted(mags, reverse=True)
        assert mags[0] == pytest.approx(np.abs(row).max(), abs=1e-4)  # the largest, not any three
        assert sum(mags) <= 1.0 + 1e-3


def test_lstm_attribution_differentiates_the_last_window_through_the_history_state(sample_sequences) -> None:
    """The one-step backward pass (history state handed on without gradients) gives the
    gradient the whole model gives for the last window's inputs."""
    w, seq = sample_sequences
    model = w.loaded.model
    with torch.no_grad():
        e = w.encode(torch.from_numpy(np.ascontiguousarray(seq.x[:64], dtype=np.float32)))

    class LastOnly(torch.nn.Module):  # the whole model, its history fixed: no .lstm to split on
        def forward(self, last: torch.Tensor) -> torch.Tensor:
            return model(torch.cat([e[:, :-1], last], dim=1))

    split, _ = margin_attribution(model, e, w.benign_index, len(w.column_names), w.bins)
    whole, _ = margin_attribution(LastOnly(), e[:, -1:], w.benign_index, len(w.column_names), w.bins)
    assert np.abs(split).sum() > 0
    assert np.allclose(split, whole, atol=1e-4)


def test_worker_modes_decide_which_predictions_carry_attribution(sample_sequences) -> None:
    w, seq = sample_sequences
    saved = w.attribution, w.threshold, w.kind_thresholds
    try:
        # a site operating point that flags some of the sample's sequences (one for every kind)
        w.threshold, w.kind_thresholds = 0.9, None
        out = {}
        for mode in ("on", "flagged", "off"):
            w.attribution = mode
            out[mode] = [json.loads(v) for v in w.predict(seq).values]
    finally:
        w.attribution, w.threshold, w.kind_thresholds = saved
    flagged = [m["is_attack"] for m in out["on"]]
    assert 0 < sum(flagged) < len(flagged)
    assert all("attribution" in m for m in out["on"])
    assert ["attribution" in m for m in out["flagged"]] == flagged
    assert not any("attribution" in m for m in out["off"])
    for a, b in zip(out["on"], out["flagged"]):  # the same numbers whichever pass computed them
        # (up to float32 summation order: "on" takes every sequence through the attribution's
        # pass, "flagged" through the fast path first; they differed by 1.4e-8 on one machine)
        assert a["p_attack"] == pytest.approx(b["p_attack"], abs=1e-6)
        if "attribution" in b:
            assert [c["column"] for c in a["attribution"]] == [c["column"] for c in b["attribution"]]
    assert all(m["evidence"] for mode in out.values() for m in mode)


def test_attribution_text_is_what_orjson_writes_for_top_columns() -> None:
    """`top_columns_json` writes the JSON of `top_columns` byte for byte: shares rounding to
    0 (and -0.0) left out, ties in column order, k beyond the columns, a quoted name."""
    from ids_daemon.inference.attribution import top_columns_json

    rng = np.random.default_rng(3)
    shares = rng.standard_normal((400, 5)) * 10.0 ** rng.uniform(-7, 0, (400, 5))
    shares[::7, 2:] = 0.0
    shares[::11] = 0.0  # a row with no share at all: []
    shares[5] = [0.25, -0.25, 0.25, 1e-5, -4e-5]  # ties, and shares that round to 0 and -0
    shares[6, :] = [1 / 3, -2 / 3, 0.1, 0.00005, -0.00015]
    names = ["Rate", 'odd "name"\\', "Tot sum", "TCP", "ünï"]
    for k in (1, 3, 5, 9):
        want = [orjson.dumps(t).decode() for t in top_columns(shares, names, k)]
        assert top_columns_json(shares, names, k) == want
    assert top_columns_json(shares[:0], names, 3) == []
    assert top_columns_json(shares[11:12], names, 3) == ["[]"]


def test_whole_predict_writes_what_the_reference_pieces_write(sample_sequences) -> None:
    """`InferenceWorker.predict` (fast encodings, attribution and messages written as text)
    gives, byte for byte, the messages of the reference pieces: the attribution of
    `TorchEncoder`'s encoding, `top_columns`' dicts, `encode_predictions` from those dicts,
    in every attribution mode, with and without every sequence flagged."""
    from ids_daemon.inference import worker as worker_module
    from ids_daemon.inference.risk import decide, severity_index
    from ids_daemon.predictions.encode import encode_predictions

    w, seq = sample_sequences
    saved = w.attribution, w.threshold, w.next_id, worker_module.time.time, w.dedupe, w.kind_thresholds
    now = 1_800_000_000.5
    try:
        worker_module.time.time = lambda: now
        # every row through the model, as the reference does (repeated sequences: the next test)
        w.dedupe = False
        for mode, threshold in (("flagged", saved[1]), ("flagged", 0.0), ("on", saved[1]), ("off", saved[1])):
            w.attribution, w.threshold, w.next_id = mode, threshold, 17
            # the model's own operating point (one threshold per window kind), or one number for all
            w.kind_thresholds = saved[5] if threshold == saved[1] else None
            got = w.predict(seq)
            x = torch.from_numpy(np.ascontiguousarray(seq.x, dtype=np.float32))
            with torch.no_grad():
                e = w.encode(x)
            shares, logits = margin_attribution(w.loaded.model, e, w.benign_index, len(w.column_names), w.bins)
            probs = (torch.softmax(logits.double(), dim=1).numpy() if mode == "on" else w.probabilities(seq))
            decision = decide(probs, w.weights, w.row_thresholds(seq))
            flagged = decision[4] if mode == "flagged" else np.full(len(seq), mode == "on")
            attribution = None
            if mode != "off":
                flagged_rows = np.flatnonzero(flagged)
                sub = None
                if len(flagged_rows):
                    with torch.no_grad():
                        e = w.encode(x[torch.from_numpy(flagged_rows)])
                    sub, _ = margin_attribution(w.loaded.model, e, w.benign_index, len(w.column_names), w.bins)
                tops = dict(zip(flagged_rows.tolist(), top_columns(sub, w.column_names, 3) if sub is not None else []))
                attribution = [tops.get(i) for i in range(len(seq))] if mode == "flagged" else top_columns(
                    shares, w.column_names, 3)
                assert (mode != "flagged" or threshold != 0.0) or all(a is not None for a in attribution)
            want = encode_predictions(seq, probs, decision, severity_index(decision[2]), classes=w.classes,
                                      families=w.families, model=w.model_info, sensor=w.sensor,
                                      id_prefix=w.id_prefix, first_id=17, top_k=w.top_k, now=now,
                                      interface=w.interface, evidence=window_sentences(seq.windows),
                                      attribution=None if attribution is None else
                                      [None if a is None else orjson.dumps(a).decode() for a in attribution])
            assert got.keys == want.keys
            assert got.values == want.values, mode
    finally:
        w.attribution, w.threshold, w.next_id, worker_module.time.time, w.dedupe, w.kind_thresholds = saved


def test_repeated_sequences_run_the_model_once_and_share_its_numbers(sample_sequences) -> None:
    """A batch whose sequences repeat (a flood's windows, key after key) runs the model and
    the attribution on each distinct sequence once; every row gets, bit for bit, the numbers
    and attribution its distinct sequence gets in a batch of the distinct ones."""
    from ids_daemon.inference.worker import distinct_rows

    w, seq = sample_sequences
    rng = np.random.default_rng(5)
    base = seq.take(slice(0, 40))
    rows = rng.integers(0, len(base), 300)
    rows[:40] = np.arange(40)  # every one at least once, first in order
    batch = base.take(rows)
    first, inverse = distinct_rows(batch.x)
    assert np.array_equal(batch.x[first][inverse].view(np.uint32), batch.x.view(np.uint32))
    assert len(first) == len(np.unique(batch.x.reshape(len(batch), -1), axis=0))
    saved = w.attribution, w.threshold, w.dedupe, w.attributed, w.kind_thresholds
    ran: list[int] = []  # the rows each forward pass (plain or with gradients) took
    real_probs, real_attr = w._probabilities, w.attributions
    w._probabilities = lambda x: (ran.append(len(x)), real_probs(x))[1]
    w.attributions = lambda x: (ran.append(len(x)), real_attr(x))[1]
    try:
        w.threshold, w.kind_thresholds = 0.0, None  # every row flagged: every one attributed
        out = {}
        for dedupe, b in ((True, batch), (False, batch.take(first))):
            w.dedupe = dedupe
            before = w.attributed
            for mode in ("flagged", "on"):
                w.attribution = mode
                out[dedupe, mode] = [json.loads(v) for v in w.predict(b).values]
            assert w.attributed - before == 2 * len(b)  # counted per row, repeated ones too
    finally:
        w.attribution, w.threshold, w.dedupe, w.attributed, w.kind_thresholds = saved
        del w._probabilities, w.attributions
    assert ran == [len(first)] * 6  # flagged: forward, attribution; on: attribution; either batch
    fields = ("predicted_attack", "is_attack", "p_attack", "confidence", "risk_score", "probabilities", "attribution")
    for mode in ("flagged", "on"):
        got, want = out[True, mode], out[False, mode]
        for i, j in enumerate(inverse.tolist()):
            assert {f: got[i][f] for f in fields} == {f: want[j][f] for f in fields}, (mode, i)


def test_distinct_rows_groups_equal_bits_only() -> None:
    from ids_daemon.inference import worker as worker_module
    from ids_daemon.inference.worker import distinct_rows

    x = np.zeros((6, 4, 3), dtype=np.float32)
    x[1, 0, 0] = -0.0  # another bit pattern: another sequence
    x[2, 3, 2] = np.nan
    x[3, 3, 2] = np.nan  # the same NaN bits: the same sequence
    x[4] = x[0]
    x[5, 1, 1] = 1e-45
    first, inverse = distinct_rows(x)
    g = inverse.tolist()  # groups: 0 and 4, 2 and 3; 1 and 5 each alone
    assert len(first) == 4 and g[0] == g[4] and g[2] == g[3] and len({g[0], g[1], g[2], g[5]}) == 4
    assert np.array_equal(x[first][inverse].view(np.uint32), x.view(np.uint32))
    assert distinct_rows(x[:1]) is None and distinct_rows(x[[0, 1, 2]]) is None  # nothing to share
    big = np.random.default_rng(0).random((100, 4, 3)).astype(np.float32)
    assert distinct_rows(big) is None  # every row distinct: nothing to share
    saved = worker_module._MIX.copy()
    try:  # a hash every row shares (a collision on every pair): no grouping at all, never a wrong one
        worker_module._MIX[:] = 0
        assert distinct_rows(np.concatenate([big, big[:50]])) is None
    finally:
        worker_module._MIX = saved


# --- config and the real replay -------------------------------------------------

def test_attribution_option_is_validated_and_bare_yaml_on_off_work(tmp_path: Path) -> None:
    assert load_config(None).inference.attribution == "flagged"
    for text, want in (("off", "off"), ("on", "on"), ("flagged", "flagged")):
        p = tmp_path / f"{text}.yml"
        p.write_text(f"inference:\n  attribution: {text}\n")
        assert load_config(p).inference.attribution == want
    with pytest.raises(ConfigError, match="attribution"):
        load_config(None, {"inference.attribution": "sometimes"})
    with pytest.raises(ConfigError, match="attribution_min_p"):
        load_config(None, {"inference.attribution_min_p": 1.5})


def _replay(tmp_path: Path, attribution: str) -> list[dict]:
    cfg = tmp_path / f"{attribution}.yml"
    cfg.write_text(f"inference:\n  threshold: 0.9\n  attribution: {attribution}\n  device: cpu\n"
                   "metrics:\n  listen: null\n")
    out = tmp_path / f"{attribution}.jsonl"
    p = subprocess.run([EXE, "replay", "-c", str(cfg), "-r", str(SAMPLE), "-o", str(out)],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in out.read_text().splitlines() if line]


def test_replay_puts_evidence_on_every_prediction_and_attribution_on_flagged_ones(tmp_path: Path) -> None:
    schema = json_schema()
    preds = _replay(tmp_path, "flagged")
    model = [m for m in preds if m["flow"]["kind"] != "detector"]
    flagged = [m for m in model if m["is_attack"]]
    assert len(model) > 100 and flagged and len(flagged) < len(model)
    for m in preds:
        jsonschema.validate(m, schema)
        assert m["evidence"]
    for m in model:
        assert ("attribution" in m) == m["is_attack"]
        assert m["evidence"].split(",")[0].split(" ")[0] in {"TCP", "UDP", "ICMP", "ARP", "IGMP", "IP"}
        assert f"{m['window']['packets']:,} packet" in m["evidence"]
    for m in flagged:
        a = m["attribution"]
        assert 1 <= len(a) <= 3 and all(c["column"] in COLUMNS for c in a)
        assert 0 < sum(abs(c["share"]) for c in a) <= 1.0 + 1e-3
    # a record with a share out of range fails the schema (the field is checked, not free-form)
    bad = dict(flagged[0], attribution=[{"column": "Rate", "share": 1.5}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    # off: no attribution anywhere, the same predictions and evidence otherwise
    off = _replay(tmp_path, "off")
    assert not any("attribution" in m for m in off)
    assert [(m["evidence"], m["is_attack"]) for m in off] == [(m["evidence"], m["is_attack"]) for m in preds]
