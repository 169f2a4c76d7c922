"""Prediction sinks: JSON lines (the default) and Kafka. Each is one class with
``open`` / ``write_batch`` / ``flush`` / ``close``."""
