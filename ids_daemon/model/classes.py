"""The CICIoT2023 class taxonomy: 34 classes, their 8 families, and the 2-class view.

Both releases spell labels differently (``DDoS-RSTFINFlood`` in the original CSVs,
``DDOS-RSTFINFLOOD`` in the merged one); `canonical_class` maps any spelling to the
original release's name.
"""

from __future__ import annotations

import re

from ..predictions.vocabulary import FAMILIES as _VOCABULARY_FAMILIES

BENIGN = "BenignTraffic"

FAMILIES: dict[str, tuple[str, ...]] = {
    "DDoS": ("DDoS-ICMP_Flood", "DDoS-UDP_Flood", "DDoS-TCP_Flood", "DDoS-PSHACK_Flood", "DDoS-SYN_Flood",
             "DDoS-RSTFINFlood", "DDoS-SynonymousIP_Flood", "DDoS-ICMP_Fragmentation", "DDoS-UDP_Fragmentation",
             "DDoS-ACK_Fragmentation", "DDoS-HTTP_Flood", "DDoS-SlowLoris"),
    "DoS": ("DoS-UDP_Flood", "DoS-TCP_Flood", "DoS-SYN_Flood", "DoS-HTTP_Flood"),
    "Mirai": ("Mirai-greeth_flood", "Mirai-udpplain", "Mirai-greip_flood"),
    "Recon": ("Recon-HostDiscovery", "Recon-OSScan", "Recon-PortScan", "Recon-PingSweep", "VulnerabilityScan"),
    "Spoofing": ("MITM-ArpSpoofing", "DNS_Spoofing"),
    "Web": ("BrowserHijacking", "CommandInjection", "SqlInjection", "XSS", "Backdoor_Malware", "Uploading_Attack"),
    "BruteForce": ("DictionaryBruteForce",),
    "Benign": (BENIGN,),
}

CLASSES_34: tuple[str, ...] = tuple(c for members in FAMILIES.values() for c in members)
assert len(CLASSES_34) == 34
FAMILY_OF: dict[str, str] = {c: fam for fam, members in FAMILIES.items() for c in members}
FAMILIES_8: tuple[str, ...] = tuple(FAMILIES)
assert set(FAMILIES_8) == set(_VOCABULARY_FAMILIES), "the prediction vocabulary and the taxonomy disagree"
CLASSES_2: tuple[str, ...] = ("Benign", "Attack")


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_SQUASHED = {_squash(c): c for c in CLASSES_34}
# spellings of the merged release that do not squash to an original name
_BY_SQUASHED.update({
    "benign": BENIGN,
    "dictionarybruteforce": "DictionaryBruteForce",
    "backdoormalware": "Backdoor_Malware",
    "uploadingattack": "Uploading_Attack",
    "mitmarpspoofing": "MITM-ArpSpoofing",
    "dnsspoofing": "DNS_Spoofing",
    "reconvulnerabilityscan": "VulnerabilityScan",
})


def canonical_class(label: str) -> str | None:
    """The original release's spelling of a 34-class label, or None when it is not one."""
    return _BY_SQUASHED.get(_squash(str(label)))


def family_of(label: str) -> str | None:
    """The family (8-class label) of any spelling of a 34-class label."""
    c = canonical_class(label)
    return FAMILY_OF.get(c) if c else None


def label_in_scheme(label: str, scheme: str) -> str | None:
    """``label`` (any spelling of a 34-class name) in scheme "34", "8" or "2"; None when unknown."""
    c = canonical_class(label)
    if c is None:
        return None
    if scheme == "34":
        return c
    if scheme == "8":
        return FAMILY_OF[c]
    if scheme == "2":
        return "Benign" if c == BENIGN else "Attack"
    raise ValueError(f"unknown label scheme {scheme!r} (34, 8 or 2)")


def classes_of_scheme(scheme: str) -> tuple[str, ...]:
    """All class names of a scheme, in a fixed order."""
    return {"34": CLASSES_34, "8": FAMILIES_8, "2": CLASSES_2}[scheme]


def is_benign(name: str) -> bool:
    """True for the benign class of any scheme (and for labels used as they are, by name)."""
    return _squash(name) in ("benign", "benigntraffic")
