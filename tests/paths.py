"""Where the tests' data lives: small files in the repository, the real corpus beside it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # CSV samples (tests/data/README.md says where they come from)
PCAPS = DATA / "pcaps"
SHARED_DATA = ROOT.parent / "shared" / "data"  # optional: present in CI and development
REAL = SHARED_DATA / "real"  # the labelled real-capture corpus (MANIFEST.tsv)
