"""The prediction vocabulary is defined once: the JSON Schema, the risk weights, the
taxonomy and the RL observation all agree with ids_daemon.predictions.vocabulary."""

from __future__ import annotations

from ids_daemon.consumers.rl import FAMILIES as OBS_FAMILIES
from ids_daemon.inference.risk import FAMILY_WEIGHT
from ids_daemon.model.classes import FAMILIES_8
from ids_daemon.predictions import FAMILIES, SEVERITIES, SEVERITY_RANK, json_schema


def test_schema_severities_are_the_vocabulary() -> None:
    assert json_schema()["properties"]["severity"]["enum"] == list(SEVERITIES)
    assert [SEVERITY_RANK[s] for s in SEVERITIES] == list(range(len(SEVERITIES)))


def test_families_agree_everywhere() -> None:
    assert set(FAMILY_WEIGHT) == set(FAMILIES) == set(FAMILIES_8)
    assert OBS_FAMILIES[:-1] == FAMILIES and OBS_FAMILIES[-1] == "other"
