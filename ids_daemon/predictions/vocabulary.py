"""The words a prediction uses, defined once: severities (in rank order) and attack
families. The encoder, the typed decoder, the risk scorer, the detectors, the alerting
engine and the RL observation all read them from here, and the JSON Schema's enums are
checked against them by the tests."""

from __future__ import annotations

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}

# The CICIoT2023 families (ids_daemon.model.classes maps each of the 34 classes to one).
FAMILIES: tuple[str, ...] = ("Benign", "DDoS", "DoS", "Mirai", "Recon", "Spoofing", "Web", "BruteForce")
