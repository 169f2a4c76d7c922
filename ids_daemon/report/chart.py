"""The report's chart: flagged packets over packet time, stacked by family, as inline SVG
(drawn here, no script: the page shows it wherever it is opened, offline)."""

from __future__ import annotations

import math
import zlib
from datetime import datetime, timezone
from html import escape

from .aggregate import BIN_WIDTHS

# Fixed colours for the CICIoT2023 families (the same family is the same colour in every
# report); any other family name gets one of EXTRA by a stable hash of its name.
FAMILY_COLOURS: dict[str, str] = {
    "DDoS": "#d62728", "DoS": "#ff7f0e", "Mirai": "#9467bd", "Recon": "#1f77b4", "Spoofing": "#17becf",
    "Web": "#2ca02c", "BruteForce": "#8c564b", "Benign": "#9e9e9e",
}
EXTRA = ("#e377c2", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 12, 44


def colour(family: str) -> str:
    """The family's colour."""
    return FAMILY_COLOURS.get(family) or EXTRA[zlib.crc32(family.encode()) % len(EXTRA)]


def utc(t: float, step: float = 1.0, dated: bool = False) -> str:
    """Packet time as UTC, to the precision ``step`` needs (with the day when ``dated``)."""
    d = datetime.fromtimestamp(t, timezone.utc)
    day = d.strftime("%m-%d ") if dated else ""
    if step < 1:
        return day + d.strftime("%H:%M:%S.") + f"{d.microsecond // 1000:03d}"
    return day + d.strftime("%H:%M:%S" if step < 60 else "%H:%M")


def duration(seconds: float) -> str:
    """A bin width or span for a person: '10 ms', '2 s', '10 min', '6 h', '1 d'."""
    for unit, s in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= s:
            n = seconds / s
            return f"{n:.0f} {unit}" if n == round(n) else f"{n:.1f} {unit}"
    return f"{seconds * 1000:.0f} ms"


def _nice(top: float, ticks: int = 5) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving at most ``ticks`` ticks up to ``top``."""
    raw = max(top, 1.0) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def stacked_svg(width_s: float, bins: list[tuple[float, dict[str, float]]], families: list[str]) -> str:
    """The SVG of ``bins`` (start, packets by family), each ``width_s`` wide, stacked in
    the order of ``families`` (bottom first). Each segment has a tooltip with its numbers."""
    n = len(bins)
    t0, t1 = bins[0][0], bins[-1][0] + width_s
    top = max(sum(f.values()) for _, f in bins) or 1.0
    ystep = _nice(top)
    ymax = math.ceil(top / ystep) * ystep
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bw = pw / n
    gap = 1.0 if bw > 4 else 0.0

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * pw

    def y(v: float) -> float:
        return TOP + ph - v / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="flagged packets over time by family">']
    k = 0
    while k * ystep <= ymax + 1e-9:  # horizontal grid and packet counts
        v = k * ystep
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        k += 1
    xstep = next((s for s in BIN_WIDTHS if (t1 - t0) / s <= 8), None) or width_s * math.ceil(n / 8)
    t = math.ceil(t0 / xstep) * xstep
    dated = t1 - t0 > 86400  # past a day the time of day alone is ambiguous
    while t <= t1 + 1e-9:  # time ticks on bin-aligned instants
        out.append(f'<line class="axis" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 5}"/>'
                   f'<text class="tick" x="{x(t):.1f}" y="{TOP + ph + 18}" text-anchor="middle">'
                   f'{escape(utc(t, xstep, dated))}</text>')
        t += xstep
    for start, fams in bins:
        base = 0.0
        for fam in families:
            v = fams.get(fam, 0.0)
            if v <= 0:
                continue
            y0, y1 = y(base), y(base + v)
            tip = f"{utc(start, width_s, dated)}–{utc(start + width_s, width_s, dated)} UTC: {fam} {v:,.0f} packets"
            out.append(f'<rect x="{x(start) + gap / 2:.2f}" y="{y1:.2f}" width="{max(bw - gap, 0.5):.2f}" '
                       f'height="{max(y0 - y1, 0.5):.2f}" fill="{colour(fam)}" data-family="{escape(fam)}">'
                       f'<title>{escape(tip)}</title></rect>')
            base += v
    out.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}"/>'
               f'<text class="label" x="{LEFT + pw / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">packet time (UTC, '
               f'{escape(datetime.fromtimestamp(t0, timezone.utc).strftime("%Y-%m-%d"))}), '
               f'bins of {duration(width_s)}</text>'
               f'<text class="label" transform="translate(14 {TOP + ph / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">flagged packets per bin</text></svg>')
    return "".join(out)
