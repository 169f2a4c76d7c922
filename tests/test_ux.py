"""What a user sees first: the demo's account of its findings, summaries that count in
good English, and the trainer's command line (defaults shown, flags that would be
ignored refused, tiny training sets warned about, versions that change)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from ids_daemon.demo import attribute, report, sample_scenarios
from ids_daemon.text import agree, plural

from .pcapgen import ethernet, ipv4_udp, write_pcap

ROOT = Path(__file__).resolve().parents[1]
from .helpers import EXE, TRAINER  # noqa: E402
SAMPLE = ROOT / "ids_daemon" / "data" / "sample.pcap"


def _pcap_times(path: Path) -> list[float]:
    data = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, incl = (int.from_bytes(data[pos + i:pos + i + 4], "little") for i in (0, 4, 8))
        out.append(sec + usec / 1e6)
        pos += 16 + incl
    return out


# ---- the demo ------------------------------------------------------------------------------

def test_sample_scenarios_partition_the_bundled_capture() -> None:
    """sample.yml describes sample.pcap: every packet lies in exactly one scenario's span,
    and each scenario holds the packets it says."""
    sc = sample_scenarios()
    assert [s["label"] for s in sc] == ["BenignTraffic", "DDoS-SYN_Flood", "Recon-PortScan", "DDoS-ICMP_Flood"]
    times = _pcap_times(SAMPLE)
    for s in sc:
        assert s["start"] <= s["end"]
        assert sum(s["start"] - 1e-6 <= t <= s["end"] + 1e-6 for t in times) == s["packets"], s["label"]
    assert sum(s["packets"] for s in sc) == len(times)
    for a, b in zip(sc, sc[1:]):
        assert a["end"] < b["start"]


def _pred(t: float, attack: bool, family: str, detector: bool = False) -> dict:
    return {"window": {"last_ts": t}, "is_attack": attack, "family": family,
            "model": {"name": "detector:scan" if detector else "ids-lstm"}}


def test_findings_are_expected_or_false_alarms() -> None:
    sc = [{"label": "BenignTraffic", "family": "Benign", "start": 0.0, "end": 9.0, "packets": 50,
           "description": "benign"},
          {"label": "DDoS-SYN_Flood", "family": "DDoS", "start": 10.0, "end": 19.0, "packets": 40,
           "description": "a flood"},
          {"label": "Recon-PortScan", "family": "Recon", "start": 20.0, "end": 29.0, "packets": 1,
           "description": "a scan"}]
    preds = [_pred(1, False, "Benign"), _pred(2, True, "Recon"), _pred(9.5, True, "Recon"),  # 2 false alarms
             _pred(11, True, "DDoS"), _pred(12, True, "BruteForce"), _pred(13, False, "Benign"),
             _pred(21, False, "Benign"), _pred(22, False, "Benign", detector=True)]
    parts = attribute(preds, sc)
    assert [f.windows for f in parts] == [3, 3, 1] and parts[2].findings == 1
    lines = report(preds, sc)
    assert lines[0] == "benign (BenignTraffic, 50 packets): 3 windows; 2 flagged: false alarms (Recon 2)"
    assert lines[1] == ("a flood (DDoS-SYN_Flood, 40 packets): 3 windows; 2 flagged: expected, 1 as DDoS "
                        "(DDoS 1, BruteForce 1)")
    assert lines[2] == ("a scan (Recon-PortScan, 1 packet): 1 window and 1 detector finding; nothing flagged: "
                        "the attack was MISSED")
    assert lines[3] == ("flagged: 2 expected (in the attack scenarios; 1 in the scenario's family), "
                        "2 false alarms (in benign traffic); missed: Recon-PortScan")


def test_demo_says_what_its_findings_are(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    p = subprocess.run([EXE, "demo", "--no-kafka", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    preds = [json.loads(x) for x in out.read_text().splitlines()]
    sc = sample_scenarios()
    # counted here from the predictions file, independently of the demo's code
    benign_end = sc[1]["start"]
    false_alarms = sum(m["is_attack"] for m in preds if m["window"]["last_ts"] < benign_end)
    expected = sum(m["is_attack"] for m in preds if m["window"]["last_ts"] >= benign_end)
    block = text.split("what was flagged in each part")[1].split("the riskiest prediction")[0]
    lines = [ln.strip() for ln in block.splitlines()[1:] if ln.strip()]
    assert len(lines) == len(sc) + 1, block
    for line, s in zip(lines, sc):
        assert line.startswith(f"{s['description']} ({s['label']}, {s['packets']} packets): "), line
    assert lines[0].endswith("nothing flagged (no false alarm)") if not false_alarms else \
        f"{false_alarms} flagged: false alarm" in lines[0]
    m = re.match(r"flagged: (\d+) expected \(in the attack scenarios; (\d+) in the scenario's family\), "
                 r"(\d+) false alarms? \(in benign traffic\)", lines[-1])
    assert m, lines[-1]
    assert (int(m.group(1)), int(m.group(3))) == (expected, false_alarms)
    assert expected > 0
    # the riskiest prediction in full, not cut short
    shown = text.split("the riskiest prediction, as published:")[1].splitlines()[1].strip()
    riskiest = json.loads(shown)
    assert riskiest == max(preds, key=lambda m: m["risk_score"])
    assert len(shown) > 600


# ---- counting in summaries -----------------------------------------------------------------

def test_plural_and_agree() -> None:
    assert plural(1, "frame") == "1 frame" and plural(0, "frame") == "0 frames"
    assert plural(1, "batch", "batches") == "1 batch" and plural(3, "batch", "batches") == "3 batches"
    assert agree("1 frames, 21 frames, 2.1 windows, 1 batches, 11 flows, 1 classes") == \
        "1 frame, 21 frames, 2.1 windows, 1 batch, 11 flows, 1 class"


def test_one_frame_summaries_are_singular(tmp_path: Path) -> None:
    pcap = tmp_path / "one.pcap"
    write_pcap(pcap, [(1.0, ethernet(ipv4_udp()))])
    p = subprocess.run([EXE, "features", "-r", str(pcap), "-o", str(tmp_path / "f.csv")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("1 frame: 1 metered") and "1 window written (1 window, 1 partial)" in p.stderr
    p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(tmp_path / "p.jsonl"), "--metrics-listen", "off"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "1 frame, 1 metered (0 IPv6), 0 skipped, 0 malformed, 1 window, 1 prediction in 1 batch " in p.stderr, \
        p.stderr
    assert "model: 1 window classified" in p.stderr
    for word in ("frames", "windows", "predictions", "batches"):
        assert not re.search(rf"(?<![\d.]){1} {word}\b", p.stderr), (word, p.stderr)


def test_replay_replaces_its_output_file_unless_appending(tmp_path: Path) -> None:
    """Re-running a replay gives that run's predictions, as tcpdump -w replaces its file;
    --append keeps what the file held (found: two runs left 281 + 281 lines, silently)."""
    pcap = tmp_path / "three.pcap"
    write_pcap(pcap, [(1.0 + k, ethernet(ipv4_udp(sport=1000 + k))) for k in range(3)])
    out = tmp_path / "p.jsonl"
    out.write_text('{"left": "from before"}\n')

    def replay(*extra: str) -> list[dict]:
        p = subprocess.run([EXE, "replay", "-r", str(pcap), "-o", str(out), "--metrics-listen", "off", *extra],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    once = replay()
    assert once and "left" not in once[0] and all(r["schema"] == "ids.prediction.v1" for r in once)
    assert len(replay()) == len(once)  # replaced, not appended
    assert len(replay("--append")) == 2 * len(once)


# ---- command lines -------------------------------------------------------------------------

def _help(exe: str, *cmd: str) -> str:
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    p = subprocess.run([exe, *cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_plain_flags_have_no_value_placeholder() -> None:
    """A flag that takes no value shows none (it showed `<bool>`); options with a value do."""
    helps = {f"ids-daemon {c}": _help(EXE, c) for c in ("features", "replay", "run", "subscribe", "alerts", "report",
                                                       "demo", "compile")}
    helps.update({f"ids-trainer {c}": _help(TRAINER, c) for c in ("inspect", "train", "evaluate", "calibrate",
                                                                  "synth", "bundle")})
    for where, text in helps.items():
        assert "<bool>" not in text and "BOOLEAN" not in text, (where, text)
        assert re.search(r"^\s+--help\s+Show this message", text, re.M), (where, text)
    assert re.search(r"^\s+-q, --quiet\s+no summary line$", helps["ids-daemon features"], re.M)
    assert re.search(r"^\s+--per-packet\s+one row", helps["ids-daemon features"], re.M)
    assert re.search(r"^\s+--count <int>\s+stop after", helps["ids-daemon features"], re.M)


def test_train_help_shows_the_defaults() -> None:
    from ids_daemon.config import Config

    tc = Config().lstm.train
    text = re.sub(r"\s+", " ", _help(TRAINER, "train"))
    for flag, key, value in (("--labels", "labels", tc.labels), ("--split", "split", tc.split),
                             ("--seq-len", "seq_len", tc.seq_len), ("--seed", "seed", tc.seed),
                             ("--epochs", "epochs", tc.epochs), ("--device", "device", tc.device)):
        # the default in the flag's own help, before the next option
        assert re.search(rf" {flag} <\w+> [^\[]*\[default: {re.escape(str(value))}, lstm\.train\.{key} in --config\]",
                         text), (flag, text)
    assert "[default: false, lstm.features.include_leaking in --config]" in text
    assert "[default: the UTC time of training" in text


def test_labels_and_label_column_exclude_each_other(tmp_path: Path) -> None:
    csv = ROOT / "tests" / "data" / "ciciot2023_excerpt_46col.csv"
    p = subprocess.run([TRAINER, "train", "--data", str(csv), "--out", str(tmp_path / "m"), "--labels", "8",
                        "--label-column", "label"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.startswith("ids-trainer: error: --labels 8 and --label-column label exclude each other")
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_tiny_training_set_is_warned_about_and_the_model_gets_its_own_version(tmp_path: Path) -> None:
    """13 CSV rows train (it is allowed), with warnings that say so; the model's version is
    not the shipped model's "1"/"2" but the time of training, or --version."""
    csv = ROOT / "tests" / "data" / "ciciot2023_excerpt_46col.csv"
    assert len(csv.read_text().splitlines()) == 14  # header + 13 rows
    base = [TRAINER, "train", "--data", str(csv), "--epochs", "1", "--seq-len", "2", "--device", "cpu"]
    p = subprocess.run(base + ["--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("ids-trainer: warning: ")]
    assert any("only 13 sequences to train on (fewer than 1000)" in w for w in warnings), p.stderr
    assert any("11 of 11 classes have fewer than 10 sequences" in w for w in warnings), p.stderr
    version = json.loads((tmp_path / "a" / "metadata.json").read_text())["version"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", version), version
    assert f"(version {version})" in p.stdout
    assert "attack detection rate n/a (none held out)" in p.stdout or "attack detection rate 0." in p.stdout \
        or "attack detection rate 1." in p.stdout
    p = subprocess.run(base + ["--out", str(tmp_path / "b"), "--version", "3-site"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["version"] == "3-site"


def test_bundle_does_not_overwrite_the_shipped_model_by_default() -> None:
    import hashlib

    from ids_daemon.model.artifacts import bundled_model_dir

    def digest() -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(bundled_model_dir().iterdir())}

    before = digest()
    p = subprocess.run([TRAINER, "bundle", "--no-by-source"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip() == "ids-trainer: error: give --out DIR, or --replace-bundled to write over the shipped model"
    assert digest() == before
