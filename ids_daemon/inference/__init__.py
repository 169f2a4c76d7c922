"""The inference worker and the risk score."""
