"""The report page: one self-contained HTML file (inline CSS and SVG, no script, nothing
fetched when it is viewed) from an `Aggregate`.

Every string that comes from the data (families, classes, hosts, sensors, evidence, the
file name) goes through `escape` once, where it is written into the page: a packet can put
text into a prediction (an HTTP detector's evidence), and none of it may become markup."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from ..predictions.read import SkippedLines
from .aggregate import Aggregate, HostTally
from .chart import colour, duration, stacked_svg

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 12px}
table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #eee;
vertical-align:top}th{background:#f6f6f6;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border:1px solid #f0b37e;padding:8px 12px;border-radius:4px}
.empty{font-size:16px;background:#f3f6fa;border:1px solid #c9d6e8;padding:16px;border-radius:4px}
.legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:14px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.chart{max-width:100%;height:auto}.chart .grid{stroke:#eee}.chart .axis{stroke:#888}
.chart .tick{font-size:11px;fill:#555}.chart .label{font-size:12px;fill:#333}
.sev-critical{color:#b71c1c;font-weight:600}.sev-high{color:#d84315;font-weight:600}.sev-medium{color:#a66900}
.note{color:#666;font-size:13px}.ev{max-width:420px;word-break:break-word}
"""


def _e(value: object) -> str:
    """Data as page text: escaped, quotes too (it may land in an attribute)."""
    return escape(str(value), quote=True)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word if n == 1 else word + 's'}"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(head: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """A table of cells that are already page text (escaped by the caller)."""
    th = "".join(f'<th{" class=n" if i in numeric else ""}>{h}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _families(fams: dict[str, int] | None) -> str:
    """'DDoS 1,200, Recon 40' with the colour of each, most packets first."""
    items = sorted((fams or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f'<span class=sw style="background:{colour(f)}"></span>{_e(f)} {_n(n)}' for f, n in items)


def _hosts_count(tally: HostTally) -> str:
    kept = _n(len(tally.rows))
    return f"{kept} (and {_n(tally.pruned)} dropped: see below)" if tally.pruned else kept


def _summary(agg: Aggregate, source: str) -> str:
    span = agg.packet_hi - agg.packet_lo
    rows = [
        ["predictions", _n(agg.predictions)],
        ["flagged (attack, not benign)", f"{_n(agg.flagged)} ({agg.flagged / agg.predictions:.1%})"],
        ["packets in flagged windows", f"{_n(agg.flagged_packets)} of {_n(agg.packets)}"],
        ["model predictions", _n(agg.predictions - agg.detector_findings)],
        ["detector findings", _n(agg.detector_findings)],
        ["packet time", f"{_e(_when(agg.packet_lo))} to {_e(_when(agg.packet_hi))} ({duration(span) if span else '0 s'})"],
        ["classified (sensor clock)", f"{_e(_when(agg.time_lo))} to {_e(_when(agg.time_hi))}"],
        ["attacked hosts", _hosts_count(agg.attacked)],
        ["attacking hosts", _hosts_count(agg.attacking)],
        ["sensors", ", ".join(f"{_e(s)} ({_n(c)})" for s, c in agg.sensors.most_common())],
        ["models", ", ".join(f"{_e(m)} ({_n(c)})" for m, c in agg.models.most_common())],
    ]
    if agg.other_names:
        rows.append(["other sensors/models", f"{_n(agg.other_names)} predictions (past {agg.max_names} names)"])
    return '<h2 id="summary">Summary</h2>' + _table(["", _e(source)], rows, set())


def _chart(agg: Aggregate) -> str:
    head = '<h2 id="over-time">Flagged packets over time, by family</h2>'
    width, bins = agg.bins.chart()
    if not bins:
        return head + '<p class="note">Nothing was flagged: there is no attack traffic to draw.</p>'
    families = [f for f, _ in agg.family_packets.most_common()]
    legend = "".join(f'<li><span class=sw style="background:{colour(f)}"></span>{_e(f)} {_n(agg.family_packets[f])}'
                     f' packets in {_count(agg.family_predictions[f], "prediction")}</li>' for f in families)
    return (head + f'<ul class="legend">{legend}</ul>' + stacked_svg(width, bins, families)
            + f'<p class="note">A window\'s packets are spread over the bins its packet-time span covers '
            f'({len(bins)} bins of {duration(width)}).</p>')


def _severities(agg: Aggregate) -> str:
    rows = [[f'<span class="sev-{s}">{s}</span>', _n(a), _n(f)] for s, a, f in agg.severities()]
    return '<h2 id="severities">Severities</h2>' + _table(["severity", "predictions", "flagged"], rows, {1, 2})


def _classes(agg: Aggregate) -> str:
    if not agg.classes:
        return ""
    rows = [[_e(c), _n(n)] for c, n in agg.classes.most_common(30)]
    more = len(agg.classes) - 30
    note = f'<p class="note">and {more} more classes</p>' if more > 0 else ""
    return '<h2 id="classes">Flagged classes</h2>' + _table(["class", "flagged predictions"], rows, {1}) + note


def _hosts(title: str, anchor: str, tally: HostTally, top: int, what: str) -> str:
    head = f'<h2 id="{anchor}">{title}</h2>'
    if not tally.rows:
        return head + f'<p class="note">No flagged prediction names {what}.</p>'
    rows = [[_e(h), _n(r.packets), _n(r.predictions), _families(r.families)] for h, r in tally.top(top)]
    note = ""
    if tally.pruned:
        note = (f'<p class="warn">{_n(tally.pruned)} hosts with few packets were dropped while reading (more than '
                f'{_n(tally.max_hosts)} hosts): a host that came back after that is counted from then on.</p>')
    return head + _table(["host", "flagged packets", "predictions", "families (packets)"], rows, {1, 2}) + note


def _detectors(agg: Aggregate) -> str:
    head = '<h2 id="detectors">Detector findings</h2>'
    if not agg.detector_findings:
        return head + '<p class="note">No detector finding (every prediction is the model\'s).</p>'
    rows = [[_e(d), _e(c), _n(n), _n(agg.detector_packets[(d, c)])] for (d, c), n in agg.detector_counts.most_common()]
    out = head + _table(["detector", "class", "findings", "packets"], rows, {2, 3})
    listed = [[_e(_when(f.first_ts)), _e(f.detector), _e(f.attack), f'<span class="sev-{_e(f.severity)}">'
               f'{_e(f.severity)}</span>', _e(f.src or "-"), _e(f.dst or "-"), _n(f.packets),
               f'<div class=ev>{_e(f.evidence)}</div>'] for f in agg.findings]
    shown = (f"the first {_n(len(agg.findings))} of {_n(agg.detector_findings)}"
             if len(agg.findings) < agg.detector_findings else f"all {_n(agg.detector_findings)}")
    return (out + f'<p class="note">Findings ({shown}), in the order they were published:</p>'
            + _table(["packet time", "detector", "class", "severity", "source", "target", "packets", "evidence"],
                     listed, {6}))


def render(agg: Aggregate, source: str, skipped: SkippedLines, top: int = 20) -> str:
    """The page for ``agg``, read from ``source`` (a file name, shown as it is)."""
    title = f"ids-daemon report: {source}"
    parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<title>{_e(title)}</title><style>{CSS}</style></head><body>'
             f'<h1>ids-daemon report</h1><p class="sub">{_e(source)} · generated '
             f'{_e(_when(datetime.now(timezone.utc).timestamp()))}</p>']
    if skipped.count:
        parts.append(f'<p class="warn" id="skipped">{_e(skipped.text(source))}</p>')
    if not agg.predictions:
        parts.append(f'<p class="empty" id="nothing">Nothing to report: {_e(source)} holds no predictions.</p>')
    else:
        parts += [_summary(agg, source), _chart(agg), _severities(agg), _classes(agg),
                  _hosts("Top attacked hosts", "attacked", agg.attacked, top, "a target host"),
                  _hosts("Top attacking hosts", "attacking", agg.attacking, top, "a source host"),
                  _detectors(agg)]
    parts.append("</body></html>\n")
    return "".join(parts)
