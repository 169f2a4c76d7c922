"""Errors the daemon reports to a user as one line (no traceback)."""


class IdsError(Exception):
    """Base class: an error whose message is complete and meant for the user."""


class CaptureError(IdsError):
    """A packet source cannot be read (bad file, unknown link type, socket failure)."""


class ConfigError(IdsError):
    """A configuration value is missing or invalid."""
