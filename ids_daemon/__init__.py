"""Streaming network intrusion detection: packets → CICIoT2023 features → LSTM → Kafka."""

__version__ = "0.1.0"
