"""``ids-daemon report``: the aggregation on a hand-made predictions file (counts by family,
time bin, host, severity, detector), its bounds, HTML injection from packet-derived text,
bad and empty input, and the page of the replayed bundled sample as headless Chromium
renders it (its DOM and a screenshot)."""

from __future__ import annotations

import html.parser
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ids_daemon.predictions.decode import Prediction
from ids_daemon.predictions.read import SkippedLines
from ids_daemon.report import aggregate_file, render
from ids_daemon.report.aggregate import Aggregate, TimeBins
from ids_daemon.report.chart import FAMILY_COLOURS

from .helpers import EXE, replay_sample
T0 = 1_700_000_000.0
_SEQ = [0]


def rec(family: str = "DDoS", attack: str | None = None, *, flagged: bool = True, severity: str = "critical",
        src: str | None = "10.0.0.1", dst: str | None = "10.0.0.9", packets: int = 10, first: float = 0.0,
        last: float | None = None, detector: str | None = None, sensor: str = "s1", evidence: str | None = None,
        kind: str = "flow", model: str = "ids-lstm") -> dict:
    """One v1 prediction as the daemon writes it (times relative to T0)."""
    _SEQ[0] += 1
    d = {"schema": "ids.prediction.v1", "id": f"r-{_SEQ[0]}", "time": T0 + 100 + _SEQ[0], "sensor": sensor,
         "predicted_attack": attack or family, "family": family, "is_attack": flagged, "confidence": 0.9,
         "risk_score": 0.5, "severity": severity, "probabilities": [{"class": attack or family, "p": 0.9}],
         "flow": {"key": f"k{_SEQ[0]}", "kind": "detector" if detector else kind, "protocol": "tcp",
                  "src_ip": src, "src_port": None, "dst_ip": dst, "dst_port": None},
         "window": {"first_ts": T0 + first, "last_ts": T0 + (first if last is None else last), "packets": packets},
         "model": {"name": f"detector:{detector}" if detector else model, "version": "1"}}
    if evidence is not None:
        d["evidence"] = evidence
    return d


def write_lines(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


CRAFTED = [
    rec("DDoS", "DDoS-SYN_Flood", packets=10, first=0.0, last=0.5),  # model flow
    "this is not JSON",
    rec("DoS", "DoS-UDP_Flood", severity="high", src=None, packets=20, first=30.0, kind="pool"),
    rec("DDoS", "DDoS-ICMP_Flood", src=None, dst="10.0.0.8", packets=300, first=10.0, last=13.0, detector="flood",
        evidence="10.0.0.8 flooded"),
    "",  # blank: passed over, not counted
    rec("Benign", flagged=False, severity="low", packets=10, first=0.0, last=59.0),  # widens the span only
    {**rec("DoS"), "schema": "ids.prediction.v2"},  # a major version this reader does not know
    rec("Benign", flagged=True, severity="low", packets=7, first=5.0),  # is_attack but Benign: not flagged
    rec("Recon", "Recon-PortScan", severity="medium", dst="10.0.0.7", packets=50, first=20.0, last=20.4,
        detector="scan"),
    {k: v for k, v in rec("Web").items() if k != "flow"},  # no flow
]


def test_aggregation_of_a_crafted_file(tmp_path: Path) -> None:
    skipped = SkippedLines()
    agg = aggregate_file(str(write_lines(tmp_path / "p.jsonl", CRAFTED)), skipped)
    assert (skipped.count, skipped.first.split(":")[0]) == (3, "line 2")
    assert (agg.predictions, agg.flagged, agg.flagged_packets, agg.packets) == (6, 4, 380, 397)
    assert agg.detector_findings == 2
    assert dict(agg.family_packets) == {"DDoS": 310, "DoS": 20, "Recon": 50}
    assert dict(agg.family_predictions) == {"DDoS": 2, "DoS": 1, "Recon": 1}
    assert agg.severities() == [("low", 2, 0), ("medium", 1, 1), ("high", 1, 1), ("critical", 2, 2)]
    # the span is the whole file's (the benign window's 59 s): 60 bins of 1 s, from T0
    width, bins = agg.bins.chart(target=100)
    assert width == 1 and len(bins) == 60 and bins[0][0] == T0
    nonzero = {int(start - T0): fams for start, fams in bins if fams}
    # the flood's 300 packets over 3 s: 100 in each second it covers
    assert nonzero == {0: {"DDoS": 10}, 10: {"DDoS": 100}, 11: {"DDoS": 100}, 12: {"DDoS": 100},
                       20: {"Recon": 50}, 30: {"DoS": 20}}
    attacked = [(h, r.packets, r.predictions, dict(r.families)) for h, r in agg.attacked.top(10)]
    assert attacked == [("10.0.0.8", 300, 1, {"DDoS": 300}), ("10.0.0.7", 50, 1, {"Recon": 50}),
                        ("10.0.0.9", 30, 2, {"DDoS": 10, "DoS": 20})]
    attacking = [(h, r.packets, r.predictions, dict(r.families)) for h, r in agg.attacking.top(10)]
    assert attacking == [("10.0.0.1", 60, 2, {"DDoS": 10, "Recon": 50})]
    assert dict(agg.detector_counts) == {("flood", "DDoS-ICMP_Flood"): 1, ("scan", "Recon-PortScan"): 1}
    assert [(f.detector, f.packets, f.evidence) for f in agg.findings] == [("flood", 300, "10.0.0.8 flooded"),
                                                                          ("scan", 50, "")]
    assert dict(agg.models) == {"ids-lstm 1": 4, "detector:flood": 1, "detector:scan": 1}


def test_coarser_bins_while_reading_give_the_same_chart() -> None:
    """Bins merged while reading (a small max_bins) chart exactly as bins kept fine."""
    rng = random.Random(7)
    fine, coarse = TimeBins(max_bins=100_000), TimeBins(max_bins=40)
    for _ in range(500):
        a = T0 + rng.uniform(0, 3600)
        b = a + rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 300)])
        fam = rng.choice(["DDoS", "Recon", "Mirai"])
        n = rng.randint(1, 5000)
        fine.add(a, b, fam, n)
        coarse.add(a, b, fam, n)
        assert len(coarse.bins) <= 40
    wf, bf = fine.chart(target=30)
    wc, bc = coarse.chart(target=30)
    assert wf == wc == 600 and [s for s, _ in bf] == [s for s, _ in bc]
    for (_, f1), (_, f2) in zip(bf, bc):
        assert f1.keys() == f2.keys() and all(abs(f1[k] - f2[k]) < 1e-6 * max(1, f1[k]) for k in f1)


def test_memory_is_bounded_by_the_caps_not_the_input() -> None:
    """A spoofed-source flood (a new source per window) and a detector that fires on every
    window: hosts and listed findings stay under their caps, the heavy hitters stay exact,
    and the page says what was dropped."""
    agg = Aggregate(max_hosts=100, max_findings=10)
    for i in range(2000):
        agg.add(Prediction.from_dict(rec(src=f"10.{i // 256 % 256}.{i % 256}.1", dst="192.0.2.1", packets=1,
                                         first=i, detector="flood")))
    agg.add(Prediction.from_dict(rec(src="198.51.100.7", dst="192.0.2.1", packets=5000, first=5.0)))
    assert len(agg.attacking.rows) <= 100 and agg.attacking.pruned >= 1900
    assert agg.attacking.top(1)[0] == ("198.51.100.7", agg.attacking.rows["198.51.100.7"])
    assert agg.attacked.top(1)[0][1].packets == 7000  # one target: exact
    assert len(agg.findings) == 10 and agg.detector_findings == 2000
    page = render(agg, "x.jsonl", SkippedLines())
    assert "hosts with few packets were dropped while reading" in page
    assert "the first 10 of 2,000" in page


PAYLOAD = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"></style>&amp;\'"'


class Tags(html.parser.HTMLParser):
    """Every element and attribute of a page, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        self.attrs.update(a for a, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "thead", "tbody", "tr", "th",
             "td", "span", "div", "ul", "li", "svg", "line", "text", "rect"}


def injected_file(tmp_path: Path) -> Path:
    """Predictions whose every string field (and the file's name) is markup."""
    lines = [rec(PAYLOAD, PAYLOAD, src=PAYLOAD, dst=PAYLOAD, sensor=PAYLOAD, evidence=PAYLOAD, first=1.0, last=2.0,
                 model=PAYLOAD),
             rec("DDoS", detector=PAYLOAD, src=PAYLOAD, dst="10.0.0.2", evidence=PAYLOAD, first=3.0)]
    return write_lines(tmp_path / "in<b>jected'\".jsonl", lines)


def test_markup_in_the_data_stays_text(tmp_path: Path) -> None:
    src = injected_file(tmp_path)
    page = render(aggregate_file(str(src), SkippedLines()), str(src), SkippedLines())
    p = Tags()
    p.feed(page)
    assert p.tags <= PAGE_TAGS, p.tags - PAGE_TAGS  # no script, img, iframe...
    assert not {a for a in p.attrs if a.startswith("on") or a in ("src", "href")}, p.attrs
    text = "".join(p.text)
    assert text.count(PAYLOAD) >= 8  # shown, as text: family, class, hosts, sensor, model, evidence, detector
    assert str(src) in text


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "report", *args], capture_output=True, text=True, timeout=120)


def test_bad_lines_are_one_warning_and_on_the_page(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "p.jsonl", CRAFTED)
    r = run_report(str(src), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    warning, done = r.stderr.strip().splitlines()  # one line each
    assert warning.startswith(f"ids-daemon: warning: report: 3 lines of {src} skipped (not valid v1 predictions; "
                              "first: line 2: not JSON: "), warning
    assert done == f"ids-daemon: report: 6 predictions (4 flagged, 2 detector findings) -> {tmp_path / 'r.html'}"
    page = (tmp_path / "r.html").read_text()
    assert 'id="skipped">3 lines of' in page and 'id="summary"' in page


def test_empty_and_all_bad_files_say_there_is_nothing(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", ""), ("bad.jsonl", "garbage\n{}\n")):
        src = tmp_path / name
        src.write_text(content)
        r = run_report(str(src), "-o", "-")
        assert r.returncode == 0, r.stderr
        assert f"Nothing to report: {src} holds no predictions." in r.stdout
        assert 'id="summary"' not in r.stdout and "<svg" not in r.stdout
        assert ("2 lines of" in r.stdout) == (name == "bad.jsonl") == ("warning" in r.stderr)


def test_an_unreadable_input_is_one_line(tmp_path: Path) -> None:
    r = run_report(str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "r.html"))
    assert r.returncode == 2 and r.stderr.strip() == (f"ids-daemon: error: report {tmp_path / 'nope.jsonl'}: "
                                                      "cannot open: No such file or directory")
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------------------
# the page as a browser shows it


def chromium() -> str:
    """Headless Chromium; its absence fails the test where it could be installed (CI runs
    scripts/setup.sh --test as root, which installs it), and skips it only where it cannot."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail("chromium is not installed: scripts/setup.sh --test installs it (apt-get install chromium)",
                    pytrace=False)
    pytest.skip("chromium is not installed, and cannot be here (needs root and apt-get)")


def browse(page: Path, tmp_path: Path, *args: str) -> str:
    """Run headless Chromium on ``page``; returns its stdout (the DOM with --dump-dom)."""
    r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Tables(html.parser.HTMLParser):
    """The rows (cell texts) of each table, by the id of the h2 before it; the legend items."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.legend: list[str] = []
        self.rects: list[str] = []
        self._section = ""
        self._cell: list[str] | None = None
        self._li: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "h2":
            self._section = a.get("id", "")
        elif tag == "tr":
            self.tables.setdefault(self._section, []).append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "li":
            self._li = []
        elif tag == "rect":
            self.rects.append(a.get("data-family", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._section][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "li" and self._li is not None:
            self.legend.append("".join(self._li).strip())
            self._li = None

    def handle_data(self, data: str) -> None:
        for buf in (self._cell, self._li):
            if buf is not None:
                buf.append(data)


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory) -> dict:
    """The bundled sample replayed, its report written, and the page rendered by Chromium."""
    d = tmp_path_factory.mktemp("report")
    preds, predictions = replay_sample(d)
    out = d / "report.html"
    r = run_report(str(preds), "-o", str(out))
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    return {"dir": d, "page": out, "predictions": predictions,
            "dom": browse(out, d, "--dump-dom")}


def test_the_sample_report_shows_its_families_hosts_and_findings(sample_report) -> None:
    preds = sample_report["predictions"]
    flagged = [p for p in preds if p["is_attack"] and p["family"] != "Benign"]
    assert flagged, "the sample has attacks"
    dom = Tables()
    dom.feed(sample_report["dom"])
    summary = dict(row for row in dom.tables["summary"] if len(row) == 2)
    assert summary["predictions"] == f"{len(preds):,}"
    assert summary["flagged (attack, not benign)"].startswith(f"{len(flagged):,} (")
    # the legend: each flagged family with its packets and predictions, as the file has them
    for fam in {p["family"] for p in flagged}:
        of = [p for p in flagged if p["family"] == fam]
        n = sum(p["window"]["packets"] for p in of)
        word = "prediction" if len(of) == 1 else "predictions"
        assert f"{fam} {n:,} packets in {len(of)} {word}" in dom.legend, dom.legend
    assert set(dom.rects) == {p["family"] for p in flagged}  # the chart's bars are those families'
    # top attacked host: the flagged packets per target, ranked
    by_dst: dict[str, int] = {}
    for p in flagged:
        if p["flow"]["dst_ip"]:
            by_dst[p["flow"]["dst_ip"]] = by_dst.get(p["flow"]["dst_ip"], 0) + p["window"]["packets"]
    rows = dom.tables["attacked"][1:]
    assert [(r[0], r[1]) for r in rows] == [(h, f"{n:,}") for h, n in sorted(by_dst.items(), key=lambda kv: -kv[1])]
    srcs = {p["flow"]["src_ip"] for p in flagged if p["flow"]["src_ip"]}
    assert {r[0] for r in dom.tables["attacking"][1:]} == srcs
    sev = {r[0]: (r[1], r[2]) for r in dom.tables["severities"][1:]}
    for s in ("low", "medium", "high", "critical"):
        assert sev[s] == (f"{sum(p['severity'] == s for p in preds):,}",
                          f"{sum(p['severity'] == s for p in flagged):,}")
    # the detectors' findings, each listed with its evidence
    findings = [p for p in preds if p["model"]["name"].startswith("detector:")]
    assert findings
    listed = [r for r in dom.tables["detectors"] if len(r) == 8][1:]
    assert [(r[1], r[2], r[7]) for r in listed] == [(p["model"]["name"].split(":", 1)[1], p["predicted_attack"],
                                                     p["evidence"]) for p in findings]
    assert "<script" not in sample_report["dom"]


def test_the_sample_report_screenshot_is_the_page(sample_report) -> None:
    """Chromium's screenshot is a PNG of the window's size with the page drawn in it: text,
    and the family colours of the chart's bars."""
    from PIL import Image

    shot = sample_report["dir"] / "report.png"
    browse(sample_report["page"], sample_report["dir"], "--window-size=1100,1600", "--hide-scrollbars",
           f"--screenshot={shot}")
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 1600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # not blank: text, tables, chart
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.97 * 1100 * 1600
    drawn = {c for _, c in colours}
    flagged = {p["family"] for p in sample_report["predictions"] if p["is_attack"] and p["family"] != "Benign"}
    for fam in flagged:
        rgb = tuple(int(FAMILY_COLOURS[fam][i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in drawn, (fam, rgb)


def test_injected_markup_is_text_in_the_browser(tmp_path: Path) -> None:
    """What the browser builds from a page made of hostile predictions: no element the page
    does not make, the title unchanged (no script ran), the payload shown as text."""
    src = injected_file(tmp_path)
    out = tmp_path / "r.html"
    r = run_report(str(src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    dom = browse(out, tmp_path, "--dump-dom")
    p = Tags()
    p.feed(dom)
    assert p.tags <= PAGE_TAGS, p.tags - PAGE_TAGS
    assert "pwned" not in dom.split("</title>")[0].split("<title>")[1]
    assert "".join(p.text).count(PAYLOAD) >= 8
