"""Predictions, schema ``ids.prediction.v1``: the encoder the daemon publishes with, the
typed decoder subscribers read with, the JSON Schema, and the one vocabulary of
severities and families both sides use."""

from .decode import ClassProbability, FlowInfo, MalformedPrediction, Prediction, UnknownSchema, WindowInfo
from .encode import SCHEMA_ID, encode_predictions, json_schema
from .vocabulary import FAMILIES, SEVERITIES, SEVERITY_RANK

__all__ = ["FAMILIES", "SCHEMA_ID", "SEVERITIES", "SEVERITY_RANK", "ClassProbability", "FlowInfo",
           "MalformedPrediction", "Prediction", "UnknownSchema", "WindowInfo", "encode_predictions", "json_schema"]
