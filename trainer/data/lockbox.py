"""The lockbox: repositories of the real corpus set aside before tuning, evaluated once.

Detectors, the synthetic generator and the training recipe were tuned capture by capture
against the same leave-one-repository-out folds that then measured them, so those figures
stopped being held out. The cure is a lockbox: a few repositories, chosen by a fixed seed
before any change, that development never looks at. Every tool that tunes or reports
development figures leaves them out (``lockbox="exclude"``, the default of the evaluation
commands); the final evaluation reads them alone (``lockbox="only"``), once.

The pick is reproducible: `choose` draws two repositories holding benign captures and two
holding only attack captures with ``random.Random(SEED)`` from the sorted repository names
of the manifest. `LOCKBOX` freezes the result for the corpus this was drawn on
(tests/test_lockbox.py checks that the draw still gives it).
"""

from __future__ import annotations

import random
from typing import Iterable, Literal

SEED = 17  # the issue that asked for it
# drawn with `choose` from ../shared/data/real/MANIFEST.tsv (126 captures, 19 repositories)
LOCKBOX: tuple[str, ...] = ("zeek/zeek", "ntop/nDPI", "gubertoli/ProbingDataset", "marcosValle/netlyzer")

LockboxMode = Literal["include", "exclude", "only"]
MODES: tuple[str, ...] = ("include", "exclude", "only")


def choose(benign_repos: Iterable[str], attack_only_repos: Iterable[str], seed: int = SEED) -> tuple[str, ...]:
    """Two repositories with benign captures and two with attack captures only, by ``seed``."""
    rng = random.Random(seed)
    return tuple(rng.sample(sorted(set(benign_repos)), 2) + rng.sample(sorted(set(attack_only_repos)), 2))


def keep(repo: str, mode: str) -> bool:
    """Whether a capture of ``repo`` takes part under ``mode`` (include, exclude, only)."""
    if mode not in MODES:
        raise ValueError(f"lockbox mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "include":
        return True
    return (repo in LOCKBOX) == (mode == "only")
