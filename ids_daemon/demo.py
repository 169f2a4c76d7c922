"""What the demo's findings mean: each one set against the scenarios the bundled capture holds.

The bundled capture (data/sample.pcap) is a few synthetic scenarios one after the
other on one timeline, listed with their time spans in data/sample.yml (written by
scripts/make_sample_pcap.py). A prediction belongs to the scenario its window ended
in: flagged in an attack scenario it is an expected finding (in that scenario's
family, or not), flagged in benign traffic it is a false alarm.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .model.classes import is_benign
from .text import plural as _n


def sample_scenarios() -> list[dict[str, Any]]:
    """The scenarios of the bundled capture, in time order (from data/sample.yml)."""
    import yaml

    path = Path(str(resources.files("ids_daemon") / "data" / "sample.yml"))
    return yaml.safe_load(path.read_text())["scenarios"]


@dataclass
class ScenarioFindings:
    """What was predicted for the windows that ended in one scenario's time span."""

    scenario: dict[str, Any]
    windows: int = 0  # the model's predictions
    flagged: collections.Counter = field(default_factory=collections.Counter)  # family -> flagged predictions
    findings: int = 0  # of which the detectors'

    @property
    def benign(self) -> bool:
        return is_benign(self.scenario["label"])

    @property
    def n_flagged(self) -> int:
        return sum(self.flagged.values())

    def line(self) -> str:
        """One line: the scenario and what its findings are."""
        s = self.scenario
        head = f"{s['description']} ({s['label']}, {_n(s['packets'], 'packet')}): {_n(self.windows, 'window')}"
        if self.findings:
            head += f" and {_n(self.findings, 'detector finding')}"
        fams = ", ".join(f"{k} {v}" for k, v in self.flagged.most_common())
        if self.benign:
            if not self.flagged:
                return f"{head}; nothing flagged (no false alarm)"
            return f"{head}; {self.n_flagged} flagged: false alarms ({fams})"
        if not self.flagged:
            return f"{head}; nothing flagged: the attack was MISSED"
        right = self.flagged.get(s["family"], 0)
        verdict = "expected" if right == self.n_flagged else (
            f"expected, {right} as {s['family']}" if right else f"expected attack, but not as {s['family']}")
        return f"{head}; {self.n_flagged} flagged: {verdict} ({fams})"


def attribute(preds: list[dict[str, Any]], scenarios: list[dict[str, Any]]) -> list[ScenarioFindings]:
    """Each prediction to the scenario its window ended in (the last one that started before)."""
    out = [ScenarioFindings(s) for s in scenarios]
    starts = [s["start"] for s in scenarios]
    for p in preds:
        i = max(0, bisect.bisect_right(starts, p["window"]["last_ts"]) - 1)
        f = out[i]
        detector = p["model"]["name"].startswith("detector:")
        if detector:
            f.findings += 1
        else:
            f.windows += 1
        if p["is_attack"]:
            f.flagged[p["family"]] += 1
    return out


def report(preds: list[dict[str, Any]], scenarios: list[dict[str, Any]]) -> list[str]:
    """The demo's account of its findings: one line per scenario, then the totals."""
    parts = attribute(preds, scenarios)
    lines = [f.line() for f in parts]
    expected = sum(f.n_flagged for f in parts if not f.benign)
    right = sum(f.flagged.get(f.scenario["family"], 0) for f in parts if not f.benign)
    false = sum(f.n_flagged for f in parts if f.benign)
    missed = [f.scenario["label"] for f in parts if not f.benign and not f.flagged]
    lines.append(f"flagged: {expected} expected (in the attack scenarios; {right} in the scenario's family), "
                 f"{_n(false, 'false alarm')} (in benign traffic)"
                 + (f"; missed: {', '.join(missed)}" if missed else ""))
    return lines

