"""The suite's own rules (tests/conftest.py): declared markers only, and what a test that
needs ../shared/data does in a clean clone, in a run that asked for the corpus, and when
the corpus is there but incomplete. Each case is a real pytest run on a copy of the
suite's setup, laid out as a checkout beside (or without) ``shared/data``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''
import pytest


@pytest.mark.shared_data("real")
def test_marked():
    pass


def test_fixture(shared_data):
    assert shared_data("real").is_dir()
'''


def checkout(tmp_path: Path, extra_test: str = "") -> Path:
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", repo)
    for name in ("__init__.py", "conftest.py", "paths.py", "helpers.py", "kafka_broker.py"):
        shutil.copy(ROOT / "tests" / name, repo / "tests" / name)
    (repo / "tests" / "test_probe.py").write_text(PROBE + extra_test)
    return repo


def pytest_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # ids_daemon from this checkout; tests from the copy
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=120)


def test_shared_data_skips_in_a_clean_clone_and_fails_when_asked_for(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    p = pytest_in(repo)
    assert p.returncode == 0 and "2 skipped" in p.stdout, p.stdout
    assert "is absent (a clean clone" in p.stdout  # the reason is shown (-ra)
    p = pytest_in(repo, "--require-shared-data")
    # the marked test fails in its setup (an error), the fixture user in its body
    assert p.returncode == 1 and "1 failed, 1 error" in p.stdout and "asked for it" in p.stdout, p.stdout


def test_an_incomplete_corpus_fails_and_a_complete_one_runs(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    p = pytest_in(repo)
    assert p.returncode == 1 and "1 failed, 1 error" in p.stdout, p.stdout
    assert p.stdout.count("is incomplete: real missing") >= 2, p.stdout
    (tmp_path / "shared" / "data" / "real").mkdir()
    p = pytest_in(repo, "--require-shared-data")
    assert p.returncode == 0 and "2 passed" in p.stdout, p.stdout


def test_an_undeclared_marker_is_an_error(tmp_path: Path) -> None:
    repo = checkout(tmp_path, "\n\n@pytest.mark.sloww\ndef test_typo():\n    pass\n")
    p = pytest_in(repo)
    assert p.returncode != 0 and "'sloww' not found in `markers`" in p.stdout + p.stderr, p.stdout


def test_kafka_and_root_tests_are_marked() -> None:
    """Every test that uses the broker carries ``kafka``; the live-capture ones ``root``."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "kafka", "-p",
                        "no:cacheprovider", "tests/test_kafka_sink.py", "tests/test_live.py"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    kafka = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert kafka and all(ln.startswith("tests/test_kafka_sink.py") for ln in kafka), p.stdout
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "root", "-p",
                        "no:cacheprovider", "tests/test_live.py", "tests/test_kafka_sink.py"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    root = [ln for ln in p.stdout.splitlines() if "::" in ln]
    assert any("veth" in ln for ln in root) and any("loopback" in ln for ln in root), p.stdout
    assert not any("compile_filter" in ln or "test_kafka_sink" in ln for ln in root), p.stdout
